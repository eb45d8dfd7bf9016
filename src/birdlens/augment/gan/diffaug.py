"""DiffAugment (Zhao, Liu, Lin, Zhu, Han; NeurIPS 2020): differentiable augmentation for data-efficient GANs.

Why: with a few dozen images per class the discriminator memorises the training set within a few thousand
steps and stops giving the generator a useful signal. Augmenting *only the real* images would teach the
generator to produce augmented-looking images; DiffAugment instead applies the same family of random,
differentiable transforms to **both** real and fake images every time they enter the discriminator (in the
D step and in the G step), so the gradient flows through the transform back into the generator.

Written from the paper's description (three policies):

* ``color``: per-image random brightness (add U(-0.5, 0.5)), saturation (scale the deviation from the
  per-pixel channel mean by U(0, 2)) and contrast (scale the deviation from the image mean by U(0.5, 1.5));
* ``translation``: shift each image by up to 1/8 of its side in x and y, filling with zeros;
* ``cutout``: zero a random square of half the image side (clipped at the borders).

``p`` < 1 applies each policy to each image with probability ``p`` (the adaptive variant, see
:class:`AdaptiveP`); ``p`` = 1 is the paper's always-on augmentation.

All randomness comes from an explicit :class:`torch.Generator`, so a resumed run draws the same transforms.
Images are in the GAN's range [-1, 1]; zero padding is therefore mid-grey, as in the authors' code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from birdlens.augment.gan.transfer import to_device

POLICIES: tuple[str, ...] = ("color", "translation", "cutout")


def _gen_device(gen: torch.Generator | None, device: torch.device) -> torch.device:
    # draw on the generator's device (a CPU generator also drives a CUDA run), then move
    return gen.device if gen is not None else device


def _rand(n: int, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return to_device(torch.rand(n, 1, 1, 1, generator=gen, device=_gen_device(gen, device)), device)


def _randint(low: int, high: int, n: int, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return to_device(
        torch.randint(low, high, (n, 1, 1), generator=gen, device=_gen_device(gen, device)), device
    )


def rand_color(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, then saturation, then contrast; one random factor of each per image."""
    n = x.shape[0]
    x = x + (_rand(n, gen, x.device) - 0.5)
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * (_rand(n, gen, x.device) * 2.0) + mean_c
    mean_all = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean_all) * (_rand(n, gen, x.device) + 0.5) + mean_all


def rand_translation(
    x: torch.Tensor, ratio: float = 0.125, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Integer shift of each image by up to ``ratio`` of its size, zero fill (a gather: differentiable in x)."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-sh, sh + 1, n, gen, x.device)
    tx = _randint(-sw, sw + 1, n, gen, x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    # output pixel (i, j) reads input pixel (i - ty, j - tx) of the zero-padded image
    src_y = (gy.unsqueeze(0) - ty + sh).clamp(0, h + 2 * sh - 1)
    src_x = (gx.unsqueeze(0) - tx + sw).clamp(0, w + 2 * sw - 1)
    padded = torch.nn.functional.pad(x, (sw, sw, sh, sh))
    flat = padded.reshape(n, x.shape[1], -1)
    idx = (src_y * (w + 2 * sw) + src_x).reshape(n, 1, -1).expand(-1, x.shape[1], -1)
    return flat.gather(2, idx).reshape_as(x)


def rand_cutout(x: torch.Tensor, ratio: float = 0.5, gen: torch.Generator | None = None) -> torch.Tensor:
    """Zero one random square of ``ratio`` times the image side per image (multiplying by a 0/1 mask)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _randint(0, h + (1 - ch % 2), n, gen, x.device)
    cx = _randint(0, w + (1 - cw % 2), n, gen, x.device)
    gy = torch.arange(h, device=x.device).view(1, h, 1)
    gx = torch.arange(w, device=x.device).view(1, 1, w)
    y0, x0 = cy - ch // 2, cx - cw // 2
    inside = (gy >= y0) & (gy < y0 + ch) & (gx >= x0) & (gx < x0 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def diff_augment(
    x: torch.Tensor,
    policy: Sequence[str] | str = POLICIES,
    gen: torch.Generator | None = None,
    p: float = 1.0,
) -> torch.Tensor:
    """Apply the listed policies in order (``"color,translation,cutout"`` or a sequence); ``""`` = identity.

    With ``p`` < 1 each policy reaches each image with probability ``p`` (``torch.where``: still differentiable).
    """
    names = [q for q in (policy.split(",") if isinstance(policy, str) else policy) if q]
    unknown = [q for q in names if q not in POLICIES]
    if unknown:  # checked before p: an adaptive run starts at p = 0 and must not fail only once p rises
        raise ValueError(f"unknown DiffAugment policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    if p <= 0.0:
        return x
    for name in names:
        if name == "color":
            y = rand_color(x, gen)
        elif name == "translation":
            y = rand_translation(x, gen=gen)
        else:
            y = rand_cutout(x, gen=gen)
        if p < 1.0:
            keep = _rand(x.shape[0], gen, x.device) >= p
            y = torch.where(keep, x, y)
        x = y
    return x


class AdaptiveP:
    """ADA's controller (Karras et al., NeurIPS 2020) for the augmentation probability ``p``.

    Why: always-on DiffAugment (all three policies) blinds a small discriminator early in a short run: after
    1,500 CPU steps its hinge loss still sat at ~2.0 (real and fake scored alike) while the samples were plainly
    wrong, and the generator got little signal. ADA augments only as much as the discriminator overfits: the
    heuristic ``r = E[sign(D(real))]`` over the last ``interval`` steps above ``target`` (0.6) means it is
    becoming sure of the training images, so ``p`` rises; below, it falls. ``p`` moves at most from 0 to 1 over
    ``speed_images`` real images (ADA: 500k; shorter CPU runs want faster). Measured: it did not rescue the
    1,000-step CPU cgan; that D never looked overfitted (p stayed 0) and still scored real and fake alike.
    """

    def __init__(
        self, target: float = 0.6, speed_images: int = 100_000, interval: int = 4, p: float = 0.0
    ) -> None:
        self.target, self.speed_images, self.interval, self.p = target, speed_images, interval, p
        self.sign_sum, self.count, self.steps = 0.0, 0, 0

    def observe(self, d_real: torch.Tensor) -> None:
        """Accumulate one step's real logits; adjust ``p`` every ``interval`` steps."""
        self.sign_sum += float(torch.sign(d_real.detach()).sum())
        self.count += d_real.numel()
        self.steps += 1
        if self.steps % self.interval == 0:
            r = self.sign_sum / max(self.count, 1)
            step = self.count / self.speed_images
            self.p = min(1.0, max(0.0, self.p + (step if r > self.target else -step)))
            self.sign_sum, self.count = 0.0, 0

    def state_dict(self) -> dict[str, float | int]:
        return {"p": self.p, "sign_sum": self.sign_sum, "count": self.count, "steps": self.steps}

    def load_state_dict(self, d: dict[str, float | int]) -> None:
        self.p, self.sign_sum = float(d["p"]), float(d["sign_sum"])
        self.count, self.steps = int(d["count"]), int(d["steps"])
