"""One module per method; importing this package registers them all with :func:`birdlens.explain.make_explainer`."""

from birdlens.explain.methods import ablationcam, cam, eigencam, ig, lime, random, scorecam, shap  # noqa: F401
