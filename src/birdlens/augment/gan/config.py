"""Every knob of a GAN run, with defaults per architecture (the study's ``dcgan`` vs the default ``cgan``)."""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARCHS: tuple[str, ...] = ("cgan", "dcgan")


@dataclass
class GANConfig:
    """A GAN run. ``None`` fields take the architecture's default (see :func:`arch_defaults`).

    ``iterations`` counts generator updates; each has ``n_dis`` discriminator updates.
    ``diffaugment`` is a comma list of DiffAugment policies (``""`` = off); ``ema_decay`` 0 = no EMA;
    ``ema_start``: generator steps before the average starts (until then the live weights are sampled);
    ``ema_rampup``: the average's half-life is at most this fraction of its updates (StyleGAN2-ADA and the
    cgan: 0.05; 0 = the BigGAN warm-up), see :class:`~birdlens.augment.gan.ema.EMA`; ``snapshot_every``: keep
    the generators every N steps (0 = never) to measure a long run along the way; ``ada_target`` > 0 (ADA: 0.6) makes the
    DiffAugment probability adaptive, starting at 0 (:class:`~birdlens.augment.gan.diffaug.AdaptiveP`),
    0 keeps it always on. ``lecam_weight`` > 0 adds the LeCam regulariser to the discriminator loss
    (:class:`~birdlens.augment.gan.losses.LeCam`; the paper's BigGAN + DiffAugment runs and the cgan: 0.3; the
    dcgan: 0) with anchors averaged at ``lecam_decay``; ``ms_weight`` > 0 adds the mode-seeking term to the
    generator loss (:func:`~birdlens.augment.gan.losses.mode_seeking`; MSGAN: 1) and draws the fake labels in pairs.
    ``noise_inputs``: per-pixel noise inputs in the cgan's generator (StyleGAN; see ``cgan.py``).
    ``joint_d``: one discriminator call over real and fake together (GPU speed; not for a D with batch norm).
    ``sample_every`` / ``checkpoint_every`` 0: a grid / checkpoint at the last step only.
    """

    arch: str = "cgan"
    image_size: int = 64
    iterations: int = 2000
    batch_size: int = 32
    seed: int = 0
    classes: list[str] | None = None
    split: str = "train"
    z_dim: int | None = None
    g_width: int | None = None
    d_width: int | None = None
    lr_g: float | None = None
    lr_d: float | None = None
    beta1: float | None = None
    beta2: float = 0.999
    n_dis: int | None = None
    loss: str | None = None
    diffaugment: str | None = None
    ema_decay: float | None = None
    ema_start: int = 0
    ema_rampup: float | None = None
    ada_target: float = 0.0
    ada_speed_images: int = 100_000
    lecam_weight: float | None = None
    lecam_decay: float = 0.99
    ms_weight: float = 0.0
    joint_d: bool = False
    noise_inputs: bool = False
    flip: bool = True
    sample_every: int = 500
    checkpoint_every: int = 500
    snapshot_every: int = 0
    log_every: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> GANConfig:
        """A copy with every ``None`` replaced by the architecture's default."""
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose from {', '.join(ARCHS)}")
        for name in ("batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("iterations", "sample_every", "checkpoint_every", "snapshot_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.noise_inputs and self.arch != "cgan":
            raise ValueError(f"noise_inputs is a cgan option; the {self.arch} has none")
        defaults = arch_defaults(self.arch)
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GANConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> GANConfig:
        """The config of a kept run (see :func:`saved_settings`)."""
        return cls.from_dict(saved_settings(d))


# Settings added after runs were kept, with the value those runs trained with (today's cgan default differs).
SAVED_BEFORE: dict[str, Any] = {"ema_rampup": 0.0, "lecam_weight": 0.0}


def saved_settings(d: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config dict as that run trained. Why not today's defaults: a run saved before a setting
    existed trained without it, so a key it lacks takes the value it had then (:data:`SAVED_BEFORE`)."""
    return {**SAVED_BEFORE, **d}


# What must match between a checkpoint and a resumed run (iterations, intervals may change).
ARCH_KEYS: tuple[str, ...] = ("arch", "image_size", "z_dim", "g_width", "d_width", "classes", "noise_inputs")
# How long a run goes and how often it writes: the settings that may differ between a kept run and the same GAN
# asked for again (resume without a note, ablation reuse); every other one changes what is trained.
SCHEDULE_KEYS: tuple[str, ...] = (
    "iterations",
    "sample_every",
    "checkpoint_every",
    "snapshot_every",
    "log_every",
)


def arch_defaults(arch: str) -> dict[str, Any]:
    if arch == "dcgan":
        # Radford et al. / the study: Adam(2e-4, beta1=0.5), BCE, 64 channels, nothing data-efficient.
        return {
            "z_dim": 100,
            "g_width": 64,
            "d_width": 64,
            "lr_g": 2e-4,
            "lr_d": 2e-4,
            "beta1": 0.5,
            "n_dis": 1,
            "loss": "bce",
            "diffaugment": "",
            "ema_decay": 0.0,
            "ema_rampup": 0.0,
            "lecam_weight": 0.0,
        }
    if arch == "cgan":
        # BigGAN's balance: Adam(beta1=0), D lr 4x G's, two D steps per G step, hinge; widths small enough for
        # a CPU (GPU: 64). Why: with one D step at equal rates the discriminator went flat on the CPU runs.
        # LeCam 0.3 (Tseng et al. 2021) and the EMA's 5% ramp-up (StyleGAN2-ADA). Why: the discriminator overfits
        # a few hundred images. The runs behind both choices: docs/benchmarks.md, "GAN".
        return {
            "z_dim": 128,
            "g_width": 32,
            "d_width": 32,
            "lr_g": 1e-4,
            "lr_d": 4e-4,
            "beta1": 0.0,
            "n_dis": 2,
            "loss": "hinge",
            "diffaugment": "color,translation,cutout",
            "ema_decay": 0.999,
            "ema_rampup": 0.05,
            "lecam_weight": 0.3,
        }
    raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")


class RecipeError(ValueError):
    """A YAML recipe (``--config``) that cannot be used: unreadable, not a mapping, or with unknown keys."""


def read_recipe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The keys of a YAML recipe, checked against :class:`GANConfig` (plus ``device``), so a typo is an error."""
    import yaml

    try:
        recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError(f"cannot read the recipe {path}: {e}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"the recipe {path} must be a mapping of GAN settings (arch: cgan, ...)")
    known = [f.name for f in dataclasses.fields(GANConfig)] + ["device"]
    unknown = sorted(set(recipe) - set(known))
    if unknown:
        hints = [f"{k!r} -> {m[0]!r}" for k in unknown if (m := difflib.get_close_matches(k, known, n=1))]
        fix = f"did you mean {', '.join(hints)}? " if hints else ""
        raise RecipeError(f"unknown keys in {path}: {unknown}; {fix}a recipe takes: {', '.join(known)}")
    return recipe


def merge_recipe(path: str | os.PathLike[str], given: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """YAML recipe values, overridden by every flag in ``explicit``; flags the recipe does not set keep the
    command line's value (its default when omitted)."""
    recipe = read_recipe(path)
    merged = dict(recipe)
    for k, v in given.items():
        if k not in recipe or k in explicit:
            merged[k] = v
    return merged


def resume_settings(
    saved: dict[str, Any], given: dict[str, Any], explicit: set[str]
) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """Settings for ``--resume``: the checkpoint's (all of them, also those without a flag), except the ones set
    explicitly, which win; and those explicit ones that change a training setting (``key: (checkpoint's, now)``),
    so the user is told.

    Why: a flag left out must not fall back to its default on resume (a run trained with ``--ema-rampup
    0.05`` would quietly go on without it); a flag given means the user wants it.
    """
    merged = {**saved, **{k: v for k, v in given.items() if k in explicit or k not in saved}}
    changed = {
        k: (saved[k], merged[k])
        for k in explicit
        if k in saved and k not in SCHEDULE_KEYS and merged[k] is not None and saved[k] != merged[k]
    }
    return merged, changed
