"""The shortcut audit: which classes does the model recognise by something other than the bird?

Three steps per class (:func:`birdlens.explain.audit.core.audit_run`):

1. **background reliance**: the share of explanation energy outside the object (mask or box where the data
   has one, else the model-free central estimate of :func:`birdlens.explain.audit.core.central_object`);
2. **SpRAy** (Lapuschkin et al., 2019, :mod:`birdlens.explain.audit.spray`): the class's maps are clustered
   spectrally; a compact, consistent cluster whose evidence lies mostly off the object is a suspect;
3. **the counterfactual** (:mod:`birdlens.explain.audit.counterfactual`), which decides: the suspect region is
   pasted from the class's own images onto other classes' test images; the class is flagged when the rate at
   which predictions flip to it has a 95% Wilson interval whose lower bound is above a threshold.

The audit is never given a planted cue or its mask (``shortcut.json`` is for scoring only).
"""
