"""SmoothGrad (Smilkov et al. 2017): a gradient method's attributions averaged over noisy copies of the image.

``base`` names the registered gradient method that is averaged: ``"saliency"`` (the default, the paper's
setting: mean ``|gradient|``) or any method whose class says it is computed from gradients
(``uses_gradients``: the gradient CAMs, IG, LRP); its options go in ``base_params``, and a CAM base gets the
run's CAM layer. The noise is Gaussian with standard deviation ``noise_level * (max(x) - min(x))`` of each
image (the paper's noise level, 10-20% of the input range), drawn on the CPU from a generator seeded by
``(seed, sample)``: the same draws on any device, for every image and whatever the batching. The per-channel
mean is what ``captum.attr.NoiseTunnel(base).attribute(x, nt_type="smoothgrad", stdevs=sigma)`` gives with the
same draws (kept in ``scores["attributions"]``, signed for IG); the map reduces it over channels as the base
does and shows its magnitude, as the paper does (a class fact: SmoothGrad maps are unsigned). A CAM base's
averaged quantity is its raw low-resolution CAM (kept in ``scores["cam_lowres"]``: what
``captum.attr.NoiseTunnel(LayerGradCam)`` averages), normalised and upsampled once, as the base shows one CAM.
The noisy copies of several images share the base's calls (``ROWS_PER_CALL`` rows each), equal to image by
image to float32 rounding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from birdlens.explain.base import (
    SEED,
    Explainer,
    Param,
    make_explainer,
    method_class,
    panel_methods,
    register,
    validate_params,
)
from birdlens.explain.methods.perturb import row_generator


def smoothable_bases() -> tuple[str, ...]:
    """The methods SmoothGrad can average: those whose class says ``uses_gradients``, in panel order."""
    return tuple(m for m in panel_methods() if method_class(m).uses_gradients)


#: noisy images per call of the base method (it batches them further itself)
ROWS_PER_CALL = 64


@register("smoothgrad", "smooth_grad")
class SmoothGrad(Explainer):
    """The ``base`` method's attributions averaged over ``num_samples`` noisy copies of each image."""

    title = "SmoothGrad"
    panel_order = 68
    stochastic = True
    heavy = True
    batched = True
    needs_layer = True  # passed on to a CAM base (an input-gradient base has no layer)
    budget_param = "num_samples"
    base_param = "base"
    overlay_sigma = 1.5
    tunable = (
        Param("num_samples", int, 50, lo=1, hi=1000, doc="noisy copies (base calls) per image"),
        Param("noise_level", float, 0.15, lo=0.0, hi=1.0, doc="noise sd as a fraction of the image's range"),
        Param("base", str, "saliency", choices=smoothable_bases, doc="the gradient method that is averaged"),
        Param("base_params", dict, None, optional=True, doc="options of the base method"),
        SEED,
    )

    def __init__(
        self,
        model: nn.Module,
        *,
        num_samples: int = 50,
        noise_level: float = 0.15,
        base: str = "saliency",
        base_params: dict[str, Any] | None = None,
        seed: int = 0,
        layer: str | nn.Module | None = None,
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        self.num_samples = self.checked("num_samples", num_samples)
        self.noise_level = self.checked("noise_level", noise_level)
        self.base_name = self.checked("base", base)
        self.seed = self.checked("seed", seed)
        self.base_params = validate_params(self.base_name, dict(base_params or {}))
        at = {"layer": layer} if layer is not None and method_class(self.base_name).needs_layer else {}
        self.base = make_explainer(self.base_name, model, **common, **at, **self.base_params)
        self.params.update(
            num_samples=self.num_samples,
            noise_level=self.noise_level,
            base=self.base_name,
            base_params={k: v for k, v in self.base.params.items() if k not in self.params},
            seed=self.seed,
        )

    def noise(self, row: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal draws of noisy copy ``row`` (CPU, float32), the same for every image."""
        return torch.randn(shape, generator=row_generator(self.seed, row))

    def _explain(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
        logits, target = self.predict(x, target)
        b, n = x.shape[0], self.num_samples
        sigma = self.noise_level * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
        sums: list[torch.Tensor | None] = [None] * b
        pairs = [(i, r) for i in range(b) for r in range(n)]  # image-major: an image's copies in order
        cache: dict[int, torch.Tensor] = {}
        layer: dict[str, Any] = {}
        for lo in range(0, len(pairs), ROWS_PER_CALL):
            part = pairs[lo : lo + ROWS_PER_CALL]
            for r in {r for _, r in part} - set(cache):
                cache[r] = self.noise(r, tuple(x.shape[1:])).to(x.device)
            noisy = torch.stack([x[i] + sigma[i] * cache[r] for i, r in part])
            cst = None if self.contrast is None else torch.stack([self.contrast[i] for i, _ in part])
            got = self.base.explain(noisy, torch.stack([target[i] for i, _ in part]), contrast=cst)
            attr = got.scores[self.base.smoothed_score].to(x.device)
            layer = {"layer": got.params["layer"]} if "layer" in got.params else {}  # a CAM base's layer
            for k, (i, _) in enumerate(part):
                sums[i] = attr[k] if sums[i] is None else sums[i] + attr[k]
            if len(cache) > ROWS_PER_CALL:  # keep the draws of one call (an image's copies come in order)
                cache = {r: cache[r] for _, r in part}
        mean = torch.stack([s / n for s in sums if s is not None])
        scores = self.target_scores(logits, target)
        scores[self.base.smoothed_score] = mean.cpu()
        maps = self.base.map_of(mean, (x.shape[2], x.shape[3]))
        # unsigned as the paper shows it: |IG|'s sum over channels; saliency's and a normalised CAM's are >= 0
        return (maps.abs() if self.base.signed else maps), target, scores, layer
