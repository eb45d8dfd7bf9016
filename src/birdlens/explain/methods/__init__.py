"""One module per method; importing this package registers them all with :func:`birdlens.explain.make_explainer`."""

from birdlens.explain.methods import (  # noqa: F401
    cam,
    ig,
    lime,
    lrp,
    occlusion,
    random,
    rise,
    saliency,
    shap,
    smoothgrad,
)
