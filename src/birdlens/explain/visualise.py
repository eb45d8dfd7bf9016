"""Class activation maximisation: the image that a trained model finds most like a class.

Why: a map explains one photo; the image that maximises a class logit shows what the model has learnt to look
for in general (a bill shape, a colour patch, a texture) and is a quick check for shortcuts. Plain gradient
ascent on pixels gives high-frequency noise that maximises the logit without showing anything, so this follows
Lucid/Lucent's recipe (Olah et al. 2017, "Feature Visualization"):

* the image is parameterised by its Fourier spectrum scaled by ``1 / f ** decay_power`` (steps then move low
  frequencies first, as natural images have most energy there) and by *decorrelated* colour (Lucid's ImageNet
  colour-correlation square root, normalised by its largest column norm), squashed into [0, 1] by a sigmoid;
* every step sees a randomly transformed copy (Lucent's ``standard_transforms``: pad 12 px with grey, jitter
  8 px, scale 0.9-1.1, rotate -10..10 degrees, jitter 4 px), so only features robust to small shifts survive;
* a frequency penalty (``freq_penalty`` times the mean squared difference of neighbouring pixels, which is the
  image's spectral energy weighted by ``4 sin^2(pi f)``) damps what is left of the pixel noise.

Seeded: the starting spectrum and every transform come from one ``torch.Generator`` on the CPU, so a seed
gives the same image on every run (and the same start on every device). The settings are declared once as
:class:`birdlens.explain.base.Param` s (types, ranges, meaning), so a bad value is one error naming it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from birdlens.explain.base import Param
from birdlens.explain.hooks import frozen_parameters
from birdlens.explain.outputs import select_output
from birdlens.explain.targets import class_slug, resolve_target
from birdlens.utils.atomic import atomic_path, write_json

__all__ = [
    "SETTINGS",
    "Visualisation",
    "beside_photos",
    "check_settings",
    "visualise_class",
    "write_visualisation",
]

#: every setting with its type, range and meaning: the one place the CLI and the checks read them from
SETTINGS: tuple[Param, ...] = (
    Param("steps", int, 256, lo=1, hi=10000, doc="optimisation steps (one forward and backward each)"),
    Param("lr", float, 0.05, lo=1e-5, hi=10.0, doc="Adam learning rate on the spectrum"),
    Param("decay_power", float, 1.0, lo=0.0, hi=3.0, doc="spectrum scaled by 1 / f ** decay_power"),
    Param("freq_penalty", float, 1.0, lo=0.0, hi=1e4, doc="weight of the high-frequency energy penalty"),
    Param("jitter", int, 8, lo=0, hi=64, doc="largest random shift (px) of the first jitter"),
    Param("size", int, 224, lo=16, hi=1024, doc="side of the optimised image (px)"),
    Param("seed", int, 0, lo=0, hi=2**32 - 1, doc="seed of the start and the transforms"),
)
_SPEC = {p.name: p for p in SETTINGS}

#: Lucid's square root of ImageNet's colour correlation matrix (lucid.optvis.param.color)
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()
_SCALES = [1 + (i - 5) / 50 for i in range(11)]
_ANGLES = [*range(-10, 11), 0, 0, 0, 0, 0]
_PAD = 12


def check_settings(**settings: Any) -> dict[str, Any]:
    """All settings (defaults filled in), each checked against its declared range: one
    :class:`~birdlens.explain.base.InvalidParameterError` naming the first bad one and what is allowed."""
    unknown = sorted(set(settings) - set(_SPEC))
    if unknown:
        raise ValueError(f"visualise: unknown setting {unknown[0]!r}; allowed: {', '.join(_SPEC)}")
    return {p.name: p.check("visualise", settings.get(p.name, p.default)) for p in SETTINGS}


@dataclass(frozen=True)
class Visualisation:
    """The optimised image (uint8 ``[H, W, 3]``), its target logit and that of the start, the logit every
    16 steps (on the transformed copies the optimiser saw), the settings and the wall time."""

    image: np.ndarray
    target: int
    start_logit: float
    final_logit: float
    curve: list[float]
    settings: dict[str, Any]
    seconds: float


class _FourierImage(nn.Module):
    """A ``[1, 3, size, size]`` image in [0, 1] from a 1/f-scaled spectrum in decorrelated colour."""

    def __init__(self, size: int, decay_power: float, gen: torch.Generator) -> None:
        super().__init__()
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freqs = torch.sqrt(fx**2 + fy**2)
        self.register_buffer("scale", 1.0 / freqs.clamp_min(1.0 / size) ** decay_power)
        self.size = size
        init = torch.randn(1, 3, *freqs.shape, 2, generator=gen) * 0.01  # Lucid's sd
        self.spectrum = nn.Parameter(init)

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        img = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho") / 4.0
        rgb = torch.einsum("bchw,dc->bdhw", img, _COLOR.to(img))
        return torch.sigmoid(rgb)


def _transform(img: torch.Tensor, jitter: int, gen: torch.Generator) -> torch.Tensor:
    """Lucent's standard transforms with seeded choices: pad, jitter, scale, rotate, jitter."""

    def pick(options: list[Any]) -> Any:
        return options[int(torch.randint(len(options), (1,), generator=gen))]

    def shift(x: torch.Tensor, d: int) -> torch.Tensor:
        if d <= 0:
            return x
        dy, dx = pick(list(range(d))), pick(list(range(d)))
        return x[..., dy : x.shape[-2] - d + dy + 1, dx : x.shape[-1] - d + dx + 1]

    x = F.pad(img, (_PAD,) * 4, value=0.5)
    x = shift(x, jitter)
    s, angle = pick(_SCALES), math.radians(pick(_ANGLES))
    theta = torch.tensor(
        [[math.cos(angle) / s, -math.sin(angle) / s, 0.0], [math.sin(angle) / s, math.cos(angle) / s, 0.0]],
        dtype=x.dtype,
        device=x.device,
    )
    grid = F.affine_grid(theta[None], list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return shift(x, jitter // 2)


def _high_frequency_energy(img: torch.Tensor) -> torch.Tensor:
    return (img[..., 1:, :] - img[..., :-1, :]).pow(2).mean() + (img[..., :, 1:] - img[..., :, :-1]).pow(
        2
    ).mean()


def _logit(
    model: nn.Module, img: torch.Tensor, target: int, mean: torch.Tensor, std: torch.Tensor, size: int
) -> torch.Tensor:
    x = (img - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return select_output(model(x), None)[0, target]


def visualise_class(model: nn.Module, target: int, mean: Any, std: Any, **settings: Any) -> Visualisation:
    """Optimise an image to maximise ``model``'s logit for class ``target`` (settings: :data:`SETTINGS`).

    ``mean``/``std``: the model's input normalisation (the image is optimised in [0, 1] pixel space)."""
    cfg = check_settings(**settings)
    start = time.perf_counter()
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    m = torch.as_tensor(list(mean), dtype=torch.float32, device=dev)
    s = torch.as_tensor(list(std), dtype=torch.float32, device=dev)
    size = int(cfg["size"])
    param = _FourierImage(size, float(cfg["decay_power"]), gen).to(dev)
    opt = torch.optim.Adam(param.parameters(), lr=float(cfg["lr"]))
    curve: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with frozen_parameters(model), torch.enable_grad():
            with torch.no_grad():
                start_logit = float(_logit(model, param(), target, m, s, size))
            for step in range(int(cfg["steps"])):
                opt.zero_grad(set_to_none=True)
                img = param()
                logit = _logit(model, _transform(img, int(cfg["jitter"]), gen), target, m, s, size)
                loss = -logit + float(cfg["freq_penalty"]) * _high_frequency_energy(img)
                loss.backward()
                opt.step()
                if step % 16 == 0 or step == int(cfg["steps"]) - 1:
                    curve.append(float(logit.detach()))
            with torch.no_grad():
                pixels = (param()[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu()
                saved = pixels.permute(2, 0, 1)[None].to(dev, torch.float32) / 255
                final_logit = float(_logit(model, saved, target, m, s, size))  # of the PNG's own pixels
    finally:
        model.train(was_training)
    return Visualisation(
        image=pixels.numpy(),
        target=target,
        start_logit=start_logit,
        final_logit=final_logit,
        curve=curve,
        settings=cfg,
        seconds=time.perf_counter() - start,
    )


def write_visualisation(trained: Any, cls: int | str, out_dir: str | Path, **settings: Any) -> dict[str, Any]:
    """Visualise class ``cls`` (a name or an index) of a trained run into ``out_dir``: ``CLASS.png`` and
    ``CLASS.json`` (class, settings, seed, logits), both written atomically; returns the JSON record.

    The class and every setting are checked before any work (one error line each); ``size`` defaults to
    the run's image size."""
    classes = list(trained.classes)
    target = resolve_target(cls, classes)
    settings.setdefault("size", int(getattr(trained, "image_size", 224) or 224))
    check_settings(**settings)
    dc = trained.data_config
    vis = visualise_class(trained.model, target, dc.mean, dc.std, **settings)
    out = Path(out_dir)
    slug = class_slug(classes, target)
    from PIL import Image

    with atomic_path(out / f"{slug}.png", suffix=".png") as tmp:
        Image.fromarray(vis.image).save(tmp, format="PNG")
    record = {
        "class": classes[target],
        "class_index": target,
        "model": getattr(trained, "model_name", None),
        "image": f"{slug}.png",
        "settings": vis.settings,
        "start_logit": vis.start_logit,
        "final_logit": vis.final_logit,
        "logit_every_16_steps": vis.curve,
        "seconds": vis.seconds,
        "method": "class activation maximisation (Lucid-style: Fourier 1/f, decorrelated colour, "
        "transforms, frequency penalty)",
    }
    write_json(out / f"{slug}.json", record)
    return record


def beside_photos(image: np.ndarray, photos: list[Any], gap: int = 6) -> np.ndarray:
    """``image`` and ``photos`` (paths or uint8 arrays) side by side at ``image``'s height, on white: the
    figure that shows what the model looks for next to what the class really looks like."""
    from PIL import Image

    h = image.shape[0]
    tiles = [image]
    for p in photos:
        pic = Image.fromarray(p) if isinstance(p, np.ndarray) else Image.open(p)
        pic = pic.convert("RGB")
        tiles.append(np.asarray(pic.resize((max(1, round(pic.width * h / pic.height)), h), Image.BILINEAR)))
    width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
    out = np.full((h, width, 3), 255, dtype=np.uint8)
    x = 0
    for t in tiles:
        out[:, x : x + t.shape[1]] = t
        x += t.shape[1] + gap
    return out
