"""The fine-tuning ``LightningModule``: head first with the backbone frozen, then unfreeze with a lower LR.

Schedule (per optimiser step, one ``LambdaLR`` with a factor per parameter group):

* head: linear warm-up over ``warmup_epochs``, then cosine to 0 at the last step;
* backbone (lr * backbone_lr_ratio): 0 during the ``head_epochs`` (its parameters are also frozen, and its
  BatchNorm statistics kept, so those epochs cost about a forward pass), then its own warm-up and cosine.

With ``freeze_bn`` every BatchNorm layer stays in eval mode (its affine parameters still train).

Only the last ``unfreeze_stages`` backbone stages ever train when that is set. The global RNG state is stored
in the checkpoint, so dropout after a resume draws what it would have drawn.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from birdlens.models import set_train_mode
from birdlens.train.config import TrainConfig
from birdlens.train.parts import head_param_names, trainable_backbone_names


def warmup_cosine(step: int, start: int, warmup: int, total: int) -> float:
    """LR factor: 0 before ``start``, linear warm-up over ``warmup`` steps, cosine to 0 at ``total``."""
    if step < start:
        return 0.0
    s = step - start
    if warmup > 0 and s < warmup:
        return (s + 1) / warmup
    span = max(1, total - start - warmup)
    progress = min(1.0, (s - warmup) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class Classifier(L.LightningModule):
    """Wraps any birdlens/timm classifier for fine-tuning (see module doc)."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        n_train: int,
        batch_mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.n_train = n_train
        self.steps_per_epoch = 0  # known once the trainer knows its world size (configure_optimizers)
        self.batch_mix = batch_mix
        head = head_param_names(model)
        trainable = trainable_backbone_names(model, cfg.unfreeze_stages)
        params = dict(model.named_parameters())
        self.head_params = {n: params[n] for n in params if n in head}
        self.backbone_params = {n: params[n] for n in params if n in trainable}
        self.fixed_params = [params[n] for n in params if n not in head and n not in trainable]
        for p in self.fixed_params:
            p.requires_grad_(False)
        self._frozen: bool | None = None
        self._rng_to_restore: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------------ freezing
    @property
    def backbone_frozen(self) -> bool:
        return self.current_epoch < (self.cfg.head_epochs or 0)

    def _apply_freeze(self) -> None:
        frozen = self.backbone_frozen
        if frozen != self._frozen:
            for p in self.backbone_params.values():
                p.requires_grad_(not frozen)
            self._frozen = frozen
        set_train_mode(self.model)  # frozen BatchNorm layers keep their pretrained statistics
        if (
            self.cfg.freeze_bn
        ):  # all of them (``freeze_bn``): small batches would overwrite ImageNet's statistics
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._apply_freeze()

    # ------------------------------------------------------------------------------------------ steps
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        if self.cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        hard = y
        if self.batch_mix is not None:
            x, y = self.batch_mix(x, y)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        target = hard if hard.dim() == 1 else hard.argmax(1)
        acc = (logits.argmax(1) == target).float().mean()
        bs = x.shape[0]
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log("train_acc", acc, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y)
        acc = (logits.argmax(1) == y).float().mean()
        bs = x.shape[0]
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log("val_acc", acc, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True, prog_bar=True)

    # ------------------------------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> Any:
        cfg = self.cfg
        assert cfg.lr is not None and cfg.weight_decay is not None and cfg.epochs is not None
        groups = []
        for part, params, lr in (
            ("head", self.head_params, cfg.lr),
            ("backbone", self.backbone_params, cfg.lr * (cfg.backbone_lr_ratio or 1.0)),
        ):
            # biases and norm scales get no weight decay (the timm convention)
            decay = [p for n, p in params.items() if p.ndim > 1 and not n.endswith(".bias")]
            no_decay = [p for n, p in params.items() if not (p.ndim > 1 and not n.endswith(".bias"))]
            for suffix, ps, wd in (("", decay, cfg.weight_decay), ("_no_decay", no_decay, 0.0)):
                if ps:
                    groups.append({"params": ps, "lr": lr, "weight_decay": wd, "name": part + suffix})
        if cfg.optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(groups, lr=cfg.lr)
        elif cfg.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
        else:
            opt = torch.optim.AdamW(groups, lr=cfg.lr)
        # per rank: the sampler's shard, in batches (the last one partial), capped by limit_train_batches.
        # Not trainer.estimated_stepping_batches: it sets the data up before a resume restores the loader.
        spe = math.ceil(math.ceil(self.n_train / max(1, self.trainer.world_size)) / cfg.batch_size)
        if cfg.limit_train_batches:
            spe = min(spe, cfg.limit_train_batches)
        spe = self.steps_per_epoch = max(1, spe)
        total = cfg.epochs * spe
        warm = round(cfg.warmup_epochs * spe)
        head_start = 0
        bb_start = min(cfg.head_epochs or 0, cfg.epochs) * spe
        fns = [
            (lambda s: warmup_cosine(s, bb_start, warm, total))
            if g["name"].startswith("backbone")
            else (lambda s: warmup_cosine(s, head_start, warm, total))
            for g in groups
        ]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fns)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------------------------------ exact resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["birdlens_rng"] = rng

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("birdlens_rng")

    def on_train_start(self) -> None:
        rng, self._rng_to_restore = self._rng_to_restore, None
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        state = random.getstate()
        random.setstate((state[0], tuple(rng["python"]), None))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
