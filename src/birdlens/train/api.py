"""``train(config) -> run_dir``: the one entry point the CLI and the study runner call."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from birdlens.train import rundir
from birdlens.train.checkpoint import data_config_to_dict, save_weights, update_meta
from birdlens.train.config import TrainConfig, resolve
from birdlens.train.context import RunContext
from birdlens.train.data import MANIFEST, prepare_data
from birdlens.train.parts import param_counts
from birdlens.train.progress import is_quiet, note
from birdlens.utils.atomic import write_json, write_text
from birdlens.utils.env import environment_info
from birdlens.utils.seed import seed_everything


def is_ddp_child() -> bool:
    """True in the extra processes Lightning's DDP launcher starts (they must not touch the run directory)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 or int(os.environ.get("NODE_RANK", "0") or 0) > 0


def load_run_config(run_dir: str | os.PathLike[str]) -> TrainConfig:
    return TrainConfig.from_yaml(Path(run_dir) / rundir.CONFIG)


def train(
    config: TrainConfig,
    *,
    force: bool = False,
    resume: bool = False,
    evaluate: bool = True,
    callbacks: list[Any] | None = None,
) -> Path:
    """Train one model as ``config`` says and return its run directory.

    ``force`` replaces an existing run, ``resume`` continues it from ``last.ckpt`` with its saved config
    (only ``quiet`` may change). ``evaluate`` writes ``metrics/{valid,test}.json`` and figures at the end.
    ``callbacks`` are extra Lightning callbacks (fine-tune mode).
    """
    import torch

    child = is_ddp_child()
    out = Path(config.out)
    if resume:
        saved = out / rundir.CONFIG
        if saved.is_file():
            config = TrainConfig.from_yaml(saved, quiet=config.quiet)
    if not child:
        rundir.prepare_run_dir(out, force=force, resume=resume)
    quiet = is_quiet(config.quiet)
    seed_everything(config.seed, config.deterministic)
    if int(os.environ.get("OMP_NUM_THREADS", "0") or 0) > 0:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    t0 = time.perf_counter()
    data = prepare_data(
        config.data,
        seed=config.seed,
        ratios=config.split_ratios,
        top=config.top,
        per_class=config.per_class,
        image_cache=config.image_cache,
        quiet=quiet or child,
    )
    from birdlens.models import create_model, get_model_info

    model = create_model(
        config.model, num_classes=len(data.classes), pretrained=config.pretrained, weights=config.weights
    )
    info = get_model_info(model)
    cfg = resolve(config, default_image_size=info.data_config.input_size)
    data_config = info.data_config.with_size(cfg.image_size)
    seed_everything(cfg.seed, cfg.deterministic)  # model building consumed RNG differently per source
    ctx = RunContext(
        cfg=cfg,
        out=out,
        data=data,
        model=model,
        info=info,
        data_config=data_config,
        is_main=not child,
        resume=resume,
    )
    if not child:
        write_text(out / rundir.CONFIG, cfg.to_yaml())
        write_json(out / rundir.ENV, environment_info(seed=cfg.seed))
        data.manifest.to_csv(out / MANIFEST)
        if not resume or not (out / rundir.META).is_file():
            write_json(out / rundir.META, _static_meta(ctx))
    note(
        f"[bold]{cfg.model}[/] {cfg.mode} on {len(data.manifest)} images, {len(data.classes)} classes "
        f"-> {out}",
        quiet,
    )

    if cfg.mode == "probe":
        from birdlens.train.probe import run_probe

        if cfg.devices > 1:
            note("probe mode fits a linear head in one process; --devices is ignored", quiet)
        fields = run_probe(ctx)
    else:
        from birdlens.train.finetune import run_finetune

        fields = run_finetune(ctx, callbacks=callbacks)
    if not ctx.is_main:
        return out
    model.eval()
    if cfg.mode == "finetune":
        save_weights(model, out / rundir.LAST, metadata={"mode": cfg.mode})
        if not (out / rundir.BEST).is_file():  # no validation ran: the last weights are the best we have
            save_weights(model, out / rundir.BEST, metadata={"mode": cfg.mode})
    fields["total_seconds"] = time.perf_counter() - t0
    fields["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    update_meta(out, **fields, params=param_counts(model))
    if evaluate:
        from birdlens.evaluate import evaluate_run

        trained = _in_memory_best(out, model)
        for split in ("valid", "test"):  # figures for test only: valid is what training already looked at
            if data.split(split).records:
                evaluate_run(out, split=split, quiet=quiet, figures=split == "test", trained=trained)
    return out


def _in_memory_best(out: Path, model: Any) -> Any:
    """The run's best weights in the model already in memory (rebuilding VGG19 costs seconds)."""
    from safetensors.torch import load_file

    from birdlens.train.checkpoint import TrainedModel, data_config_from_dict, read_meta

    meta = read_meta(out)
    model.load_state_dict(load_file(str(out / rundir.BEST), device="cpu"))
    model.eval().to("cpu")
    return TrainedModel(
        model=model,
        classes=list(meta["classes"]),
        data_config=data_config_from_dict(meta["data_config"]),
        model_name=meta["model"],
        cam_layer=meta.get("cam_layer"),
        meta=meta,
    )


def _static_meta(ctx: RunContext) -> dict[str, Any]:
    cfg, info = ctx.cfg, ctx.info
    return {
        "model": cfg.model,
        "timm_name": getattr(info, "timm_name", None),
        "family": getattr(info, "family", None),
        "weights": getattr(info, "weights", None),
        "classes": ctx.data.classes,
        "num_classes": len(ctx.data.classes),
        "data_config": data_config_to_dict(ctx.data_config),
        "image_size": cfg.image_size,
        "cam_layer": getattr(info, "cam_layer", None),
        "mode": cfg.mode,
        "augment": cfg.augment,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "head_epochs": cfg.head_epochs if cfg.mode == "finetune" else None,
        "data": cfg.data,
        "images": {s: len(ctx.data.split(s)) for s in ("train", "valid", "test")},
        "skipped_images": ctx.data.skipped,
        "selection": ctx.data.selection,
        "params": param_counts(ctx.model),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
