"""``TrainConfig``: every knob of a training run in one validated object.

The CLI, a YAML file (``--config``) and the study runner all build this object; the run directory gets the
fully resolved copy (``config.yaml``), so a run can be repeated from its own folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Mode = Literal["probe", "finetune"]


class TrainConfig(BaseModel):
    """One training run. ``None`` means "resolve from the model or the mode" (see :func:`resolve`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what
    data: str = Field(
        description="dataset folder / manifest CSV (anything birdlens.data.layouts.load_manifest reads)"
    )
    out: str = Field(description="run directory")
    model: str = "efficientnet_lite0"
    mode: Mode = "probe"
    augment: str = "none"
    weights: str | None = Field(
        None, description="local weights file (safetensors or .pth); default: bundled/hub"
    )
    pretrained: bool = True
    image_size: int | None = Field(None, ge=32, le=1024)
    top: int | None = Field(None, ge=1, description="keep the N species with most images")
    per_class: int | None = Field(None, ge=1, description="keep at most K training images per species")
    split_ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    deterministic: bool = True

    # how long / how
    epochs: int | None = Field(
        None, ge=1, description="finetune: total epochs (head + unfrozen); probe: ignored"
    )
    head_epochs: int | None = Field(
        None,
        ge=0,
        description="finetune: epochs with the backbone frozen before "
        "unfreezing; None: 0 with a probe-initialised head, else 1",
    )
    head_init: Literal["random", "probe"] | None = Field(
        None,
        description="finetune: start the head from a probe fitted on cached features (LP-FT, Kumar et al. "
        "2022); None: probe for a pretrained backbone, random from scratch",
    )
    freeze_bn: bool | None = Field(
        None,
        description="finetune: keep every BatchNorm layer in eval mode (running "
        "statistics fixed, affine still trained); None: on for pretrained backbones",
    )
    unfreeze_stages: int | None = Field(
        None, ge=0, description="finetune: unfreeze the last N stages; None = all"
    )
    batch_size: int = Field(16, ge=1)
    lr: float | None = Field(
        None,
        gt=0,
        description="head learning rate (backbone gets lr * backbone_lr_ratio); "
        "None: 1e-4 with a probe-initialised head, else 1e-3",
    )
    backbone_lr_ratio: float | None = Field(
        None,
        gt=0,
        le=1,
        description="backbone LR / head LR; None: 0.2 "
        "with a probe-initialised head, 0.1 for other pretrained backbones, "
        "1 from scratch",
    )
    weight_decay: float | None = Field(None, ge=0)
    optimizer: Literal["auto", "adamw", "adam", "sgd"] = "auto"
    warmup_epochs: float = Field(0.5, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup: float = Field(0.0, ge=0, description="mixup alpha (0 = off)")
    cutmix: float = Field(0.0, ge=0, description="cutmix alpha (0 = off)")
    patience: int | None = Field(5, ge=1, description="early stopping on valid loss; None = off")
    limit_train_batches: int | None = Field(None, ge=1)
    limit_val_batches: int | None = Field(None, ge=0, description="0 = no validation")
    checkpoint_every_n_steps: int = Field(20, ge=1, description="mid-epoch 'last' checkpoint period")

    # probe
    probe_solver: Literal["lbfgs", "sklearn"] = "lbfgs"
    probe_views: int | None = Field(
        None,
        ge=0,
        description="augmented views per train image (None: 0 for "
        "augment=none, else 4); the clean view is always used",
    )
    probe_c_grid: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    feature_cache: str | None = Field(
        None, description="feature cache folder (default $BIRDLENS_CACHE/features)"
    )
    image_cache: str | None = Field(None, description="decoded-image cache folder (default: none)")

    # where
    accelerator: str = "auto"
    devices: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: str = Field("auto", description="Lightning precision; auto = 16-mixed on CUDA, 32-true on CPU")
    channels_last: bool = True
    num_workers: int = Field(0, ge=0)
    quiet: bool = False

    @field_validator("augment")
    @classmethod
    def _augment(cls, v: str) -> str:
        return v.strip().lower().replace("_", "-")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if abs(sum(self.split_ratios) - 1.0) > 1e-6:
            raise ValueError(f"split_ratios must sum to 1, got {self.split_ratios}")
        return self

    # ------------------------------------------------------------------------------------------ I/O
    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
        """Read a YAML mapping (a ``config.yaml`` of an earlier run works); ``overrides`` win."""
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of TrainConfig fields, got {type(raw).__name__}")
        raw = raw.get("train", raw)  # a study file may nest it
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**raw)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def default_cache_root() -> Path:
    """``$BIRDLENS_CACHE`` or ``~/.cache/birdlens``: shared by runs, safe to delete."""
    env = os.environ.get("BIRDLENS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "birdlens"


def resolve(cfg: TrainConfig, default_image_size: int) -> TrainConfig:
    """Fill every ``None``/``auto`` with the value the run will really use (written to ``config.yaml``).

    Fine-tuning a pretrained backbone defaults to LP-FT with gentle settings, chosen on the 20-species bird
    set (``benchmarks/train_accuracy.py --only finetune``): the head starts from the linear probe
    (``head_init=probe``, no head-only epoch), BatchNorm statistics stay frozen (``freeze_bn``: small batches
    from a small train set give noisy statistics that replace ImageNet's and cost the probe's accuracy in the
    first epoch), head LR 1e-4 (the probe head is already at its optimum; 1e-3 moves it away) and backbone LR
    2e-5. The earlier, stronger defaults fell well below the probe's accuracy within 3 epochs
    (measured: docs/benchmarks.md#training).
    """
    simple = cfg.model == "simple_cnn"
    updates: dict[str, Any] = {}
    from_scratch = not cfg.pretrained or (simple and cfg.weights is None)
    head_init = cfg.head_init or ("random" if from_scratch or cfg.mode != "finetune" else "probe")
    lp_ft = cfg.mode == "finetune" and head_init == "probe"
    updates["head_init"] = head_init
    if cfg.freeze_bn is None:
        updates["freeze_bn"] = cfg.mode == "finetune" and not from_scratch
    if cfg.image_size is None:
        updates["image_size"] = int(default_image_size)
    if cfg.epochs is None:
        updates["epochs"] = 1 if cfg.mode == "probe" else 10
    if cfg.optimizer == "auto":
        updates["optimizer"] = "adam" if simple else "adamw"
    if cfg.lr is None:
        updates["lr"] = 1e-4 if lp_ft else 1e-3
    if cfg.weight_decay is None:
        updates["weight_decay"] = 0.0 if simple else 0.05
    if cfg.probe_views is None:
        updates["probe_views"] = 0 if cfg.augment == "none" else 4
    if cfg.feature_cache is None:
        updates["feature_cache"] = str(default_cache_root() / "features")
    if cfg.head_epochs is None:
        updates["head_epochs"] = 0 if lp_ft or from_scratch else 1
    elif cfg.mode == "finetune" and cfg.head_epochs and from_scratch:
        updates["head_epochs"] = 0  # a from-scratch network has no backbone worth freezing
    if cfg.backbone_lr_ratio is None:
        updates["backbone_lr_ratio"] = 1.0 if from_scratch else 0.2 if lp_ft else 0.1
    return cfg.model_copy(update=updates)
