"""One module per method; importing this package registers them all with :func:`birdlens.explain.make_explainer`."""

from birdlens.explain.methods import (  # noqa: F401
    ablationcam,
    cam,
    eigencam,
    ig,
    lime,
    lrp,
    occlusion,
    random,
    rise,
    saliency,
    scorecam,
    shap,
    smoothgrad,
)
