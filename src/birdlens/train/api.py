"""``train(config) -> run_dir``: the one entry point the CLI and the study runner call."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from birdlens.runs import layout
from birdlens.runs.trained import data_config_to_dict, save_weights, update_meta
from birdlens.train.config import TrainConfig, resolve
from birdlens.train.context import RunContext
from birdlens.train.data import prepare_data
from birdlens.train.parts import param_counts
from birdlens.utils.atomic import write_json, write_text
from birdlens.utils.console import is_quiet, note
from birdlens.utils.env import environment_info
from birdlens.utils.seed import seed_everything


def is_ddp_child() -> bool:
    """True in the extra processes Lightning's DDP launcher starts (they must not touch the run directory)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 or int(os.environ.get("NODE_RANK", "0") or 0) > 0


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
    (only ``quiet`` may change); a run stopped before its first ``last.ckpt`` is trained again from the
    beginning with that config, so it ends where an uninterrupted run would. ``evaluate`` writes
    ``metrics/{valid,test}.json`` and figures at the end. ``callbacks`` are extra Lightning callbacks
    (fine-tune mode).
    """
    import torch

    child = is_ddp_child()
    out = Path(config.out)
    config, resume = _resume_state(config, out, force=force, resume=resume, child=child)
    quiet = is_quiet(config.quiet)
    seed_everything(config.seed, config.deterministic)
    if int(os.environ.get("OMP_NUM_THREADS", "0") or 0) > 0:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    t0 = time.perf_counter()
    ctx = _build_context(config, out, child=child, resume=resume, quiet=quiet)
    if not child:
        _write_run_files(ctx)
    cfg = ctx.cfg
    note(
        f"[bold]{cfg.model}[/] {cfg.mode} on {len(ctx.data.manifest)} images, {len(ctx.data.classes)} "
        f"classes -> {out}",
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
    _save_final(ctx, fields, seconds=time.perf_counter() - t0)
    if evaluate:
        from birdlens.evaluate import evaluate_run

        trained = _in_memory_best(out, ctx.model)
        for split in ("valid", "test"):  # figures for test only: valid is what training already looked at
            if ctx.data.split(split).records:
                evaluate_run(out, split=split, quiet=quiet, figures=split == "test", trained=trained)
    return out


def _resume_state(
    config: TrainConfig, out: Path, *, force: bool, resume: bool, child: bool
) -> tuple[TrainConfig, bool]:
    """The config to train with and whether there is a checkpoint to continue from.

    A resume takes the run's saved config. Without ``last.ckpt`` (stopped before the first one, or a damaged
    one deleted) nothing can be continued: the run starts again from the beginning, as a fresh run of that
    config would, instead of continuing half-set-up (without the probe-initialised head).
    """
    if resume:
        saved = out / layout.CONFIG
        if saved.is_file():
            config = TrainConfig.from_yaml(
                saved, quiet=config.quiet, out=str(out)
            )  # the folder may have moved
    if not child:
        layout.prepare_run_dir(out, force=force, resume=resume)
    if resume and not (out / layout.LAST_CKPT).is_file():
        if not child:
            note(
                f"no {layout.LAST_CKPT} in {out} (stopped before its first checkpoint): training it again "
                "from the beginning with its saved config",
                is_quiet(config.quiet),
            )
            layout.clear_run_dir(out, keep=(layout.CONFIG,))
        resume = False
    return config, resume


def _build_context(config: TrainConfig, out: Path, *, child: bool, resume: bool, quiet: bool) -> RunContext:
    """Data, model and the resolved config (image size and recipe defaults depend on the model)."""
    from birdlens.models import create_model, get_model_info

    data = prepare_data(
        config.data,
        seed=config.seed,
        ratios=config.split_ratios,
        top=config.top,
        per_class=config.per_class,
        image_cache=config.image_cache,
        quiet=quiet or child,
    )
    model = create_model(
        config.model, num_classes=len(data.classes), pretrained=config.pretrained, weights=config.weights
    )
    info = get_model_info(model)
    cfg = resolve(config, default_image_size=info.data_config.input_size)
    seed_everything(cfg.seed, cfg.deterministic)  # model building consumed RNG differently per source
    return RunContext(
        cfg=cfg,
        out=out,
        data=data,
        model=model,
        info=info,
        data_config=info.data_config.with_size(cfg.image_size),
        is_main=not child,
        resume=resume,
    )


def _write_run_files(ctx: RunContext) -> None:
    """config.yaml, env.json, manifest.csv and (unless a resumed run has it) the static part of meta.json."""
    out, cfg = ctx.out, ctx.cfg
    write_text(out / layout.CONFIG, cfg.to_yaml())
    write_json(out / layout.ENV, environment_info(seed=cfg.seed))
    ctx.data.manifest.to_csv(out / layout.MANIFEST)
    if not ctx.resume or not (out / layout.META).is_file():
        write_json(out / layout.META, _static_meta(ctx))


def _save_final(ctx: RunContext, fields: dict[str, Any], seconds: float) -> None:
    """The last (and, without validation, best) weights of a fine-tune, and the timings in meta.json."""
    out, model, mode = ctx.out, ctx.model, ctx.cfg.mode
    model.eval()
    if mode == "finetune":
        save_weights(model, out / layout.LAST, metadata={"mode": mode})
        if not (out / layout.BEST).is_file():  # no validation ran: the last weights are the best we have
            save_weights(model, out / layout.BEST, metadata={"mode": mode})
    fields["total_seconds"] = seconds
    fields["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    update_meta(out, **fields, params=param_counts(model))


def _in_memory_best(out: Path, model: Any) -> Any:
    """The run's best weights in the model already in memory (rebuilding VGG19 costs seconds)."""
    from birdlens.runs.trained import load_weights, read_meta, trained_from_meta

    meta = read_meta(out)
    model.load_state_dict(load_weights(out / layout.BEST))
    return trained_from_meta(model.eval().to("cpu"), meta)


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
