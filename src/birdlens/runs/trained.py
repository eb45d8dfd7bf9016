"""Trained weights on disk (safetensors + ``meta.json``) and :func:`load_trained`, what every later stage uses.

It lives with the run layout, below training, so that evaluate, explain, the app and the study read a run
without importing the trainer.

Weights are plain tensors (safetensors); everything needed to rebuild and use the model (name, classes,
data config, image size, CAM layer) is JSON in ``meta.json``. Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from birdlens.runs import layout
from birdlens.runs.layout import CheckpointError
from birdlens.utils.atomic import atomic_path, write_json


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous (channels_last undone), no two entries sharing memory: what safetensors accepts.

    Copies only where needed (a 0.5 GB VGG19 should not be cloned for nothing)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def save_weights(
    model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> Path:
    """Write the model's state dict as safetensors, atomically."""
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state_dict_for_saving(model), str(tmp), metadata=metadata or {})
    return Path(path)


def read_meta(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(run_dir) / layout.META
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a finished birdlens training run "
            "(run `birdlens train ... --out RUN_DIR` first)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} cannot be read ({type(e).__name__}: {e}); restore it or retrain with "
            f"{retrain_command(run_dir)}"
        ) from None
    if not isinstance(meta, dict) or "classes" not in meta or "model" not in meta:
        raise CheckpointError(
            f"{path} is not a birdlens meta.json (no model or classes); restore it or retrain with "
            f"{retrain_command(run_dir)}"
        )
    return meta


def retrain_command(run_dir: str | os.PathLike[str]) -> str:
    """The command that trains a run again in place from its own saved config."""
    run_dir = Path(run_dir)
    return f"`birdlens train --config {run_dir / layout.CONFIG} --out {run_dir} --force`"


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a damaged file is one :class:`CheckpointError` naming it."""
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types (and OSError) for a damaged file
        raise CheckpointError(
            f"{path} is damaged ({type(e).__name__}: {str(e)[:80]}); restore it, or retrain with "
            f"{retrain_command(path.parent)}"
        ) from None


def update_meta(run_dir: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``meta.json`` (created if missing), atomically."""
    path = Path(run_dir) / layout.META
    meta: dict[str, Any] = {}
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    meta.update(fields)
    write_json(path, meta)
    return meta


def data_config_to_dict(dc: Any) -> dict[str, Any]:
    """JSON form of the registry's ``DataConfig`` (or a plain dict)."""
    if hasattr(dc, "to_dict"):
        return dict(dc.to_dict())
    if dataclasses.is_dataclass(dc) and not isinstance(dc, type):
        return dataclasses.asdict(dc)
    if isinstance(dc, dict):
        return dict(dc)
    raise TypeError(f"cannot serialise data config of type {type(dc).__name__}")


def data_config_from_dict(d: dict[str, Any]) -> Any:
    """Rebuild the registry's ``DataConfig`` from ``meta.json``."""
    from birdlens.models import DataConfig

    return DataConfig.from_dict(d)


#: how a run's logits become probabilities: ``softmax`` (one class per image, the default) or ``sigmoid``
#: (multi-label: each label scored on its own); a run declares it as ``"head"`` in ``meta.json``
HEADS = ("softmax", "sigmoid")


def head_of(meta: dict[str, Any]) -> str:
    """The run's head (``meta.json`` ``head``; ``softmax`` when absent, as in every run trained so far)."""
    head = meta.get("head") or "softmax"
    if head not in HEADS:
        raise CheckpointError(f"meta.json head {head!r} is not one of {HEADS}; fix the field or remove it")
    return str(head)


def refuse_multi_label(trained: Any, what: str) -> None:
    """``what`` assumes one class per image (a softmax): on a sigmoid (multi-label) run its numbers would be
    silently wrong, so it is refused with the reason instead."""
    if getattr(trained, "multi_label", False):
        raise ValueError(
            f"{what} scores one class per image (softmax); this run has a sigmoid (multi-label) head "
            "(meta.json head: sigmoid), which it does not support yet: use `birdlens explain` on it"
        )


def head_probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Probabilities ``[B, C]`` from logits: a sigmoid per label for a multi-label head (labels are independent,
    a softmax would make them compete), else the softmax over classes."""
    return logits.sigmoid() if multi_label else logits.softmax(-1)


@dataclass
class TrainedModel:
    """A trained classifier ready for inference: the model in eval mode plus what is needed to feed it."""

    model: nn.Module
    classes: list[str]
    data_config: Any
    model_name: str
    cam_layer: str | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def multi_label(self) -> bool:
        """A sigmoid (multi-label) head: explainers score a label by its own logit, never a softmax."""
        return head_of(self.meta) == "sigmoid"

    @property
    def image_size(self) -> int:
        return int(self.meta.get("image_size") or self.data_config.input_size)

    def transform(self) -> Any:
        """The evaluation transform (uint8 ``[3, H, W]`` image -> normalised float tensor)."""
        from birdlens.models import eval_transform

        return eval_transform(self.data_config, image_size=self.image_size)

    @torch.inference_mode()
    def predict_proba(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B, C]`` for a normalised batch."""
        device = next(self.model.parameters()).device
        return head_probabilities(self.model(batch.to(device)).float(), self.multi_label).cpu()


def load_trained(
    run_dir: str | os.PathLike[str],
    which: Literal["best", "last"] = "best",
    device: str | torch.device = "cpu",
) -> TrainedModel:
    """Rebuild the model of a training run from ``meta.json`` and ``<which>.safetensors`` (never unpickles).

    ``which="last"`` falls back to ``best`` when the run saved no separate last weights (a probe).
    """
    from birdlens.models import create_model

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    path = run_dir / (layout.BEST if which == "best" else layout.LAST)
    if which == "last" and not path.is_file():
        path = run_dir / layout.BEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the run in {run_dir} has no saved weights yet "
            "(was it interrupted? continue it with `birdlens train --resume --out RUN_DIR`)"
        )
    classes = list(meta["classes"])
    model = create_model(meta["model"], num_classes=len(classes), pretrained=False)
    state = load_weights(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit model {meta['model']!r}: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    return trained_from_meta(model.eval().to(device), meta)


def trained_from_meta(model: nn.Module, meta: dict[str, Any]) -> TrainedModel:
    """``model`` (its weights loaded) with what the run's ``meta.json`` says about feeding it: the one place a
    run's meta becomes a :class:`TrainedModel`, for a model rebuilt from disk or one still in memory."""
    return TrainedModel(
        model=model,
        classes=list(meta["classes"]),
        data_config=data_config_from_dict(meta["data_config"]),
        model_name=meta["model"],
        cam_layer=meta.get("cam_layer"),
        meta=meta,
    )
