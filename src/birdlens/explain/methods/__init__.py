"""One module per method; importing this package registers them all with :func:`birdlens.explain.make_explainer`."""

from birdlens.explain.methods import cam, ig, lime, random, shap  # noqa: F401
