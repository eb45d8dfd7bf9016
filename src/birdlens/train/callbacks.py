"""Lightning plumbing for a run directory: atomic checkpoints, best weights as safetensors, ``log.csv``."""

from __future__ import annotations

import math
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from birdlens.runs import layout
from birdlens.runs.layout import CheckpointError
from birdlens.runs.logcsv import write_log_csv
from birdlens.runs.trained import save_weights
from birdlens.utils.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed (a kill never leaves half a ``last.ckpt``),
    and read back with ``torch.load(weights_only=True)`` (never unpickles code)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        with atomic_path(path, suffix=".ckpt") as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        try:
            ckpt = torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # empty, truncated, not a checkpoint, or pickled code weights_only refuses
            raise damaged_checkpoint(path, _what_is_wrong(Path(path), e)) from None
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
            raise damaged_checkpoint(path, "not a Lightning checkpoint (no state_dict)")
        return ckpt


def _what_is_wrong(path: Path, error: Exception) -> str:
    if path.stat().st_size == 0:
        return "the file is empty"
    if isinstance(error, pickle.UnpicklingError):
        return "it holds pickled objects that are not tensors; refused, nothing in it was run"
    return f"it is truncated or not a checkpoint: {type(error).__name__}"


def damaged_checkpoint(path: Any, what: str) -> CheckpointError:
    """One line for a ``last.ckpt`` that cannot be resumed from: which file, what is wrong, what to do."""
    return CheckpointError(
        f"{path} cannot be resumed from ({what}); delete it and run the same command again to train the run "
        "from the beginning, or start over with --force"
    )


class BestSafetensors(ModelCheckpoint):
    """``ModelCheckpoint`` (monitoring, best tracking, resume state) that writes the best weights as
    ``best.safetensors`` instead of a pickle-based Lightning checkpoint, then calls ``on_best``."""

    FILE_EXTENSION = ".safetensors"

    def __init__(
        self,
        dirpath: str | os.PathLike[str],
        monitor: str,
        mode: str,
        on_best: Callable[[L.Trainer, L.LightningModule], None] | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="best",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        self.on_best = on_best

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if trainer.is_global_zero:
            save_weights(trainer.lightning_module.model, filepath)  # type: ignore[arg-type]
            if self.on_best is not None:
                self.on_best(trainer, trainer.lightning_module)
        trainer.strategy.barrier("best_safetensors")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if Path(filepath).name != layout.BEST:  # never delete the file we just overwrote
            super()._remove_checkpoint(trainer, filepath)


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every N optimiser steps only; the end of an epoch is :func:`last_checkpoints`' other writer
    (after ``log.csv`` got the epoch's row), so a large model is not written twice per epoch."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        return


def last_checkpoints(dirpath: str | os.PathLike[str], every_n_steps: int) -> list[ModelCheckpoint]:
    """Two writers of the same ``last.ckpt``: every N optimiser steps (mid-epoch safety) and every epoch end."""
    common: dict[str, Any] = {
        "dirpath": dirpath,
        "filename": "last",
        "save_top_k": 0,
        "save_last": True,
        "enable_version_counter": False,
    }
    by_step = StepCheckpoint(every_n_train_steps=every_n_steps, **common)
    by_epoch = ModelCheckpoint(every_n_epochs=1, save_on_train_epoch_end=True, **common)
    for cb in (by_step, by_epoch):
        cb.CHECKPOINT_NAME_LAST = "last"
    return [by_step, by_epoch]


def _num(metrics: dict[str, Any], key: str) -> float:
    v = metrics.get(key)
    if v is None:
        return math.nan
    return float(v.item() if hasattr(v, "item") else v)


class EpochLog(Callback):
    """Writes ``log.csv`` (one row per epoch) atomically on rank 0; rows live in the checkpoint for resume."""

    def __init__(self, path: str | os.PathLike[str], head_epochs: int) -> None:
        self.path = Path(path)
        self.head_epochs = head_epochs
        self.rows: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self._t0: float | None = None
        self._images = 0
        self._val_seconds = 0.0
        self._v0 = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
        self.train_seconds = float(state.get("train_seconds", 0.0))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()  # also covers a resume that starts mid-epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._images = 0
        self._val_seconds = 0.0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._v0 = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_seconds += time.perf_counter() - self._v0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += int(batch[0].shape[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - (self._t0 or time.perf_counter())
        train_s = seconds - self._val_seconds  # images/s of training alone
        self.train_seconds += seconds
        m = trainer.callback_metrics
        lrs = {
            g.get("name", str(i)): g["lr"]
            for opt in trainer.optimizers
            for i, g in enumerate(opt.param_groups)
        }
        epoch = trainer.current_epoch
        self.rows = [r for r in self.rows if r["epoch"] < epoch]  # a resumed epoch replaces its old row
        self.rows.append(
            {
                "epoch": epoch,
                "stage": "head" if epoch < self.head_epochs else "finetune",
                "train_loss": _num(m, "train_loss"),
                "train_acc": _num(m, "train_acc"),
                "valid_loss": _num(m, "val_loss"),
                "valid_acc": _num(m, "val_acc"),
                "lr_head": lrs.get("head", math.nan),
                "lr_backbone": lrs.get("backbone", math.nan),
                "seconds": round(seconds, 3),
                "images_per_s": round(self._images / train_s, 2)
                if train_s > 0 and self._images
                else math.nan,
            }
        )
        if trainer.is_global_zero:
            write_log_csv(self.path, self.rows)
