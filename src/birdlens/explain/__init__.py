"""Explanations: one ``Explainer`` shape for Grad-CAM(++)/LayerCAM/HiResCAM, Integrated Gradients, LIME, SHAP
and a random baseline; ``viz`` draws overlays and panels; ``run.explain_images`` is what the CLI and the study
runner call. ``metrics/`` (explanation quality) lives alongside.

    explainer = make_explainer("gradcam", model, model_name="tf_efficientnet_lite0")
    exp = explainer.explain(images)          # images: [B, 3, H, W], normalised for the model
    exp.maps                                 # float32 [B, H, W], higher = more evidence for exp.target
"""

from birdlens.utils.lazy import lazy_exports

# Lazy exports: `birdlens --help` and `import birdlens.explain.metrics.cli` must not pay for importing torch.
_LAZY = {
    "Explainer": "birdlens.explain.base",
    "Explanation": "birdlens.explain.base",
    "InvalidParameterError": "birdlens.explain.base",
    "Param": "birdlens.explain.base",
    "explainer_for": "birdlens.explain.base",
    "method_class": "birdlens.explain.base",
    "UnsupportedMethodError": "birdlens.explain.base",
    "explain_images": "birdlens.explain.run",
    "list_methods": "birdlens.explain.base",
    "make_explainer": "birdlens.explain.base",
    "select_output": "birdlens.explain.outputs",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
