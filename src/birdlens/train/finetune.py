"""Fine-tune mode on Lightning: callbacks, checkpoints, exact resume, AMP, channels_last and DDP.

Everything distributed is Lightning's (``--devices N --strategy ddp``); birdlens only shards its own sampler by
the trainer's rank and world size (``use_distributed_sampler=False``) so that the resumable sampler survives.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, RichProgressBar

from birdlens.data.dataset import ImageDataset
from birdlens.runs import layout
from birdlens.runs.trained import update_meta
from birdlens.train.callbacks import AtomicCheckpointIO, BestSafetensors, EpochLog, last_checkpoints
from birdlens.train.context import RunContext
from birdlens.train.loader import KeyedDataset, KeyedSampler, ResumableLoader, plain_loader
from birdlens.train.module import Classifier


def resolve_precision(cfg_precision: str, accelerator: str) -> str:
    """``auto``: fp16 mixed precision on CUDA; fp32 on CPU (bf16 autocast does not speed up CPU training
    here; measured: docs/benchmarks.md#training)."""
    if cfg_precision != "auto":
        return cfg_precision
    on_cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    return "16-mixed" if on_cuda else "32-true"


def batch_mixer(cfg: Any, num_classes: int) -> Any:
    """MixUp / CutMix on a batch (targets become soft), or None when both are off."""
    from birdlens.augment.presets import mixup_cutmix

    return mixup_cutmix(num_classes=num_classes, mixup=cfg.mixup, cutmix=cfg.cutmix)


class RunDataModule(L.LightningDataModule):
    """Loaders built once the trainer knows its rank and world size."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__()
        cfg = ctx.cfg
        c2i = ctx.data.class_to_idx
        self.cfg = cfg
        self.train_set = KeyedDataset(
            ImageDataset(ctx.data.split("train"), transform=None, class_to_idx=c2i, cache=cfg.image_cache),
            ctx.train_transform(),
            seed=cfg.seed,
        )
        self.valid_set = ImageDataset(
            ctx.data.split("valid"), transform=ctx.eval_transform(), class_to_idx=c2i, cache=cfg.image_cache
        )

    def train_dataloader(self) -> ResumableLoader:
        t = self.trainer
        world, rank = (t.world_size, t.global_rank) if t is not None else (1, 0)
        sampler = KeyedSampler(
            self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.cfg.seed
        )
        return ResumableLoader(
            self.train_set,
            sampler,
            batch_size=self.cfg.batch_size,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def val_dataloader(self) -> Any:
        if len(self.valid_set) == 0:
            return []
        return plain_loader(self.valid_set, self.cfg.batch_size, self.cfg.seed, self.cfg.num_workers)


def run_finetune(ctx: RunContext, callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train with Lightning; writes best/last weights, ``last.ckpt`` and ``log.csv``; returns meta fields."""
    cfg = ctx.cfg
    assert cfg.epochs is not None
    out = ctx.out
    _quiet_lightning(ctx.quiet)
    if cfg.head_init == "probe" and not ctx.resume:
        from birdlens.train.probe import fit_probe_head

        ctx.extra["probe_init"] = fit_probe_head(ctx)
    dm = RunDataModule(ctx)
    has_valid = len(dm.valid_set) > 0 and cfg.limit_val_batches != 0
    module = Classifier(
        ctx.model, cfg, n_train=len(dm.train_set), batch_mix=batch_mixer(cfg, len(ctx.data.classes))
    )
    if cfg.channels_last:
        module.model.to(memory_format=torch.channels_last)
    monitor = "val_loss" if has_valid else "train_loss"
    epoch_log = EpochLog(out / layout.LOG, head_epochs=cfg.head_epochs or 0)
    cbs = [epoch_log, *_run_callbacks(ctx, monitor), *(callbacks or [])]
    trainer = _trainer(ctx, cbs, has_valid)
    ckpt = out / layout.LAST_CKPT
    t0 = time.perf_counter()
    trainer.fit(
        module,
        datamodule=dm,
        ckpt_path=str(ckpt) if ctx.resume and ckpt.is_file() else None,
        weights_only=True,
    )
    ctx.extra["trainer"] = trainer
    ctx.is_main = trainer.is_global_zero
    stopped = next((cb for cb in cbs if isinstance(cb, EarlyStopping)), None)
    return {
        **({"probe_init": ctx.extra["probe_init"]} if "probe_init" in ctx.extra else {}),
        "epochs_run": trainer.current_epoch,
        "stopped_early": bool(stopped is not None and stopped.stopped_epoch > 0),
        "train_seconds": epoch_log.train_seconds,
        "fit_wall_seconds": time.perf_counter() - t0,
        "steps_per_epoch": module.steps_per_epoch,
        "global_step": trainer.global_step,
        "world_size": trainer.world_size,
        "precision": str(trainer.precision),
    }


def _quiet_lightning(quiet: bool) -> None:
    """Lightning's notes that say nothing to a birdlens user (and all its logging when quiet)."""
    if quiet:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Found .* module.* in eval mode.*")
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")


def _run_callbacks(ctx: RunContext, monitor: str) -> list[Callback]:
    """Best weights (with their epoch in meta.json), the periodic ``last.ckpt``, early stopping, progress."""
    cfg, out = ctx.cfg, ctx.out

    def on_best(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        update_meta(
            out,
            best_epoch=trainer.current_epoch,
            valid={"loss": _f(m.get("val_loss")), "accuracy": _f(m.get("val_acc"))},
        )

    cbs: list[Callback] = [
        BestSafetensors(out, monitor=monitor, mode="min", on_best=on_best),
        *last_checkpoints(out, cfg.checkpoint_every_n_steps),
    ]
    if cfg.patience:
        cbs.append(EarlyStopping(monitor=monitor, mode="min", patience=cfg.patience))
    if not ctx.quiet:
        cbs.append(RichProgressBar())
    return cbs


def _trainer(ctx: RunContext, cbs: list[Callback], has_valid: bool) -> L.Trainer:
    cfg, quiet = ctx.cfg, ctx.quiet
    return L.Trainer(
        max_epochs=cfg.epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=resolve_precision(cfg.precision, cfg.accelerator),  # type: ignore[arg-type]
        deterministic="warn" if cfg.deterministic else False,  # type: ignore[arg-type]
        callbacks=cbs,
        logger=False,
        enable_progress_bar=not quiet,
        enable_model_summary=not quiet,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO()],
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=cfg.limit_val_batches if has_valid else 0,
        default_root_dir=str(ctx.out),
        log_every_n_steps=10,
    )


def _f(v: Any) -> float | None:
    return None if v is None else float(v.item() if hasattr(v, "item") else v)
