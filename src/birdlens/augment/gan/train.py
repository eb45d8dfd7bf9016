"""Train a GAN: seeded, resumable to the bit, with sample grids and atomic checkpoints in a run folder.

Run folder::

    RUN/config.json                 resolved config, classes, data source, environment
    RUN/checkpoint.safetensors      G, D, EMA-G, both Adam states, RNG state, history (see checkpoint.py)
    RUN/checkpoint.json             the same metadata, readable
    RUN/samples/iter_XXXXXX.png     fixed-noise grid (one row per class) every ``sample_every`` iterations
    RUN/snapshots/iter_XXXXXX.*     generators only (live + EMA) every ``snapshot_every`` iterations (0 = none),
                                    to measure FD along a long run (``benchmarks/gan_curve.py``)

Exact resume: every random draw of the loop (real batch indices, flips, noise, fake labels, DiffAugment)
comes from one :class:`torch.Generator` whose state is checkpointed, and the sample grids use a separate
fixed noise, so ``k`` steps + resume + ``k`` steps equals ``2k`` uninterrupted steps (tested on CPU).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.utils import save_image

from birdlens.augment.gan.cgan import noise_source
from birdlens.augment.gan.checkpoint import (
    flatten_optimizer,
    load_checkpoint,
    module_state,
    module_tensors,
    save_checkpoint,
    unflatten_optimizer,
)
from birdlens.augment.gan.config import ARCH_KEYS, GANConfig
from birdlens.augment.gan.data import ImageSet, to_unit
from birdlens.augment.gan.diffaug import AdaptiveP, diff_augment
from birdlens.augment.gan.ema import EMA
from birdlens.augment.gan.losses import LOSSES, LeCam, mode_seeking
from birdlens.augment.gan.models import build_discriminator, build_generator
from birdlens.augment.gan.transfer import to_device
from birdlens.utils import console
from birdlens.utils.atomic import atomic_path, write_json

CHECKPOINT = "checkpoint.safetensors"
GRID_COLUMNS = 8
GRID_MAX_ROWS = 20
SAMPLE_NOISE_SEED = 2019  # the noise inputs' seed when sampling (generators with noise inputs only)


class RunExistsError(FileExistsError):
    """The run folder already holds a checkpoint and neither ``resume`` nor ``force`` was given."""


@dataclass
class GANState:
    """Everything a training step touches; ``sampler`` is the EMA copy (or G itself without EMA)."""

    cfg: GANConfig
    classes: list[str]
    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: EMA | None
    rng: torch.Generator
    iteration: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    # losses summed since the last history row, and over how many steps: checkpointed, so a resume between two
    # rows writes the same row as the uninterrupted run
    pending: dict[str, float] = field(default_factory=dict)
    n_pending: int = 0
    ada: AdaptiveP | None = None
    lecam: LeCam | None = None
    layout: torch.memory_format = torch.contiguous_format  # of G, D, the EMA copy and the real batches

    @property
    def sampler(self) -> nn.Module:
        return self.ema.shadow if self.ema is not None else self.G

    def set_layout(self, fmt: torch.memory_format) -> None:
        """Move every network (and from now on each real batch) to ``fmt``; the values stay as they are."""
        for m in (self.G, self.D, *((self.ema.shadow,) if self.ema is not None else ())):
            m.to(memory_format=fmt)
        self.layout = fmt


def init_state(cfg: GANConfig, classes: list[str], device: str | torch.device = "cpu") -> GANState:
    """Fresh models and optimisers on ``device``, seeded from ``cfg.seed`` (initialised on the CPU)."""
    cfg = cfg.resolved()
    if cfg.ms_weight > 0 and cfg.batch_size % 2:
        raise ValueError(
            f"ms_weight needs an even batch size (pairs of noises per label), got {cfg.batch_size}"
        )
    n = len(classes)
    with torch.random.fork_rng(devices=[]):  # seeded weights without resetting the caller's global generator
        torch.manual_seed(cfg.seed)
        G, D = build_generator(cfg, n).to(device), build_discriminator(cfg, n).to(device)
    assert cfg.lr_g is not None and cfg.lr_d is not None and cfg.beta1 is not None
    assert cfg.lecam_weight is not None and cfg.ema_rampup is not None
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    ema = EMA(G, cfg.ema_decay, cfg.ema_rampup) if cfg.ema_decay else None
    rng = torch.Generator().manual_seed(cfg.seed + 12345)  # CPU generator: same draws on any device
    ada = AdaptiveP(cfg.ada_target, cfg.ada_speed_images) if cfg.ada_target > 0 and cfg.diffaugment else None
    if cfg.joint_d and any(isinstance(m, _BATCH_NORMS) for m in D.modules()):
        raise ValueError(
            f"joint_d: {cfg.arch}'s discriminator has batch norm, which would mix real and fake "
            "statistics in one batch; keep separate passes for it"
        )
    lecam = LeCam(cfg.lecam_decay) if cfg.lecam_weight > 0 else None
    state = GANState(cfg, list(classes), G, D, opt_g, opt_d, ema, rng, ada=ada, lecam=lecam)
    state.set_layout(memory_format(device))
    return state


# ------------------------------------------------------------------------------------------- the step

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def memory_format(device: str | torch.device) -> torch.memory_format:
    """Channels-last on the CPU, where oneDNN's convolutions skip a reorder per call; unchanged elsewhere.

    Why: most of a CPU step is convolutions (speed-up measured with ``benchmarks/gan_step_speed.py --layouts``:
    docs/benchmarks.md, "GAN"). On CUDA it is left as it was: the GPU step is bound by kernel launches.
    Only the memory layout changes, so a run differs from an NCHW one by float rounding alone.
    """
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def _real_batch(state: GANState, data: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    b, g = state.cfg.batch_size, state.rng
    idx = to_device(torch.randint(0, len(data), (b,), generator=g), data.images.device)
    x = to_unit(data.images[idx])
    if state.cfg.flip:
        flip = to_device(torch.rand(b, generator=g) < 0.5, x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous(memory_format=state.layout), data.labels[idx]


def train_step(state: GANState, data: ImageSet) -> dict[str, float]:
    """``n_dis`` discriminator updates, then one generator update (and the EMA update).

    With ``joint_d`` the discriminator scores real and fake in one call: the same losses with half the D calls,
    meant for a GPU, where launching kernels bounds the cgan step; it cuts the kernels per step, but the time
    hardly (docs/benchmarks.md, "GAN"). Spectral
    norm's power iteration runs once per D update instead of twice, and DiffAugment draws in another order, so it
    is opt-in: it changes the numbers every measured run was trained with.
    """
    cfg, g = state.cfg, state.rng
    assert cfg.z_dim is not None and cfg.loss is not None and cfg.n_dis is not None
    loss_d_fn, loss_g_fn = LOSSES[cfg.loss]
    policy = cfg.diffaugment or ""
    n_cls, b = len(state.classes), cfg.batch_size
    dev = data.images.device

    def aug(x: torch.Tensor) -> torch.Tensor:
        return (
            diff_augment(x, policy, gen=g, p=state.ada.p if state.ada is not None else 1.0) if policy else x
        )

    fake = yf = z = reg_d = None
    for k in range(cfg.n_dis):
        x, y = _real_batch(state, data)
        z = to_device(torch.randn(b, cfg.z_dim, generator=g), dev)
        if cfg.ms_weight > 0:  # two noises per label: the mode-seeking term compares the halves
            yf = to_device(torch.randint(0, n_cls, (b // 2,), generator=g).repeat(2), dev)
        else:
            yf = to_device(torch.randint(0, n_cls, (b,), generator=g), dev)
        last = k == cfg.n_dis - 1
        with torch.set_grad_enabled(last), noise_source(g):  # the last fake batch is reused for the G step
            fake = state.G(z, yf)
        if (
            cfg.joint_d
        ):  # half the D calls (as BigGAN); init_state refuses it where batch norm would mix the halves
            logits = state.D(aug(torch.cat([x, fake.detach()])), torch.cat([y, yf]))
            d_real, d_fake = logits[:b], logits[b:]
        else:
            d_real = state.D(aug(x), y)
            d_fake = state.D(aug(fake.detach()), yf)
        loss_d = loss_d_fn(d_real, d_fake)
        if state.lecam is not None:
            reg_d = state.lecam(d_real, d_fake)
            loss_d = loss_d + cfg.lecam_weight * reg_d
        state.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        state.opt_d.step()
        if state.ada is not None:
            state.ada.observe(d_real)
    assert fake is not None and yf is not None and z is not None
    loss_g = loss_g_fn(state.D(aug(fake), yf))
    ms = None
    if cfg.ms_weight > 0:
        ms = mode_seeking(fake, z)
        loss_g = loss_g + cfg.ms_weight * ms
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()
    state.iteration += 1
    if state.ema is not None:
        if state.iteration > cfg.ema_start:
            state.ema.update(state.G)
        else:
            state.ema.follow(state.G)
    # one device-to-host copy (the step's one host sync on a GPU) instead of four
    values = torch.stack(
        [loss_d.detach(), loss_g.detach(), d_real.detach().mean(), d_fake.detach().mean()]
    ).tolist()
    out = dict(zip(("loss_d", "loss_g", "d_real", "d_fake"), values, strict=True))
    if state.ada is not None:
        out["aug_p"] = state.ada.p
    if reg_d is not None:
        out["lecam"] = float(reg_d.detach())
    if ms is not None:
        out["ms"] = float(ms.detach())
    return out


# ------------------------------------------------------------------------------------------- sampling


@torch.no_grad()
def generate(G: nn.Module, labels: torch.Tensor, z: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Images in [-1, 1] for ``labels`` from noise ``z`` (eval mode: BN running stats; restores the mode).

    A generator with noise inputs draws them from a fixed seed here, so the same call gives the same images.
    """
    was_training = G.training
    G.eval()
    dev = next(G.parameters()).device
    try:
        with noise_source(torch.Generator().manual_seed(SAMPLE_NOISE_SEED)):
            out = [
                G(z[i : i + batch_size].to(dev), labels[i : i + batch_size].to(dev)).cpu()
                for i in range(0, len(labels), batch_size)
            ]
    finally:
        G.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 3, G.image_size, G.image_size)


def fixed_grid_inputs(cfg: GANConfig, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same noise for every grid of a run (own generator: drawing it never moves the training RNG)."""
    assert cfg.z_dim is not None
    rows = min(n_classes, GRID_MAX_ROWS)
    g = torch.Generator().manual_seed(cfg.seed + 999)
    labels = torch.arange(rows).repeat_interleave(GRID_COLUMNS)
    return labels, torch.randn(len(labels), cfg.z_dim, generator=g)


def save_grid(images: torch.Tensor, path: str | os.PathLike[str], nrow: int = GRID_COLUMNS) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        save_image(images.add(1).div(2).clamp(0, 1), tmp, nrow=nrow, padding=2, format="png")
    return Path(path)


# ------------------------------------------------------------------------------------------- checkpoints


def _generator_tensors(state: GANState) -> dict[str, torch.Tensor]:
    """Live G (``G.*``) and, when there is one, its EMA copy (``EMA.*``): what checkpoints and snapshots share."""
    tensors = module_tensors(state.G, "G")
    if state.ema is not None:
        tensors.update(module_tensors(state.ema.shadow, "EMA"))
    return tensors


def state_to_checkpoint(state: GANState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {**_generator_tensors(state), **module_tensors(state.D, "D")}
    tg, mg = flatten_optimizer(state.opt_g, "opt_g")
    td, md = flatten_optimizer(state.opt_d, "opt_d")
    tensors.update(tg)
    tensors.update(td)
    tensors["rng"] = state.rng.get_state().clone()
    meta = {
        "format": "birdlens-gan-1",
        "iteration": state.iteration,
        "config": state.cfg.to_dict(),
        "classes": state.classes,
        "opt_g": mg,
        "opt_d": md,
        "ema_updates": state.ema.num_updates if state.ema is not None else 0,
        "history": state.history,
        "pending": {"sums": state.pending, "steps": state.n_pending},
    }
    if state.ada is not None:
        meta["ada"] = state.ada.state_dict()
    if state.lecam is not None:
        meta["lecam"] = state.lecam.state_dict()
    return tensors, meta


def state_from_checkpoint(
    path: str | os.PathLike[str], cfg: GANConfig | None = None, device: str | torch.device = "cpu"
) -> GANState:
    """Rebuild a :class:`GANState` from a checkpoint; ``cfg`` may change the schedule, not the networks."""
    tensors, meta = load_checkpoint(path)
    saved = GANConfig.from_saved(meta["config"]).resolved()
    if cfg is not None:
        cfg = cfg.resolved()
        clash = {
            k: (getattr(saved, k), getattr(cfg, k)) for k in ARCH_KEYS if getattr(saved, k) != getattr(cfg, k)
        }
        if clash:
            raise ValueError(f"cannot resume: the checkpoint was trained with different settings {clash}")
    else:
        cfg = saved
    state = init_state(cfg, meta["classes"], device)
    state.G.load_state_dict(module_state(tensors, "G"))
    state.D.load_state_dict(module_state(tensors, "D"))
    if state.ema is not None:
        ema_sd = module_state(tensors, "EMA")
        state.ema.shadow.load_state_dict(ema_sd if ema_sd else state.G.state_dict())
        state.ema.num_updates = int(meta.get("ema_updates", 0))
    state.opt_g.load_state_dict(unflatten_optimizer(tensors, meta["opt_g"], "opt_g"))
    state.opt_d.load_state_dict(unflatten_optimizer(tensors, meta["opt_d"], "opt_d"))
    for opt, lr in ((state.opt_g, cfg.lr_g), (state.opt_d, cfg.lr_d)):
        for group in opt.param_groups:  # a changed learning rate in cfg wins over the saved one
            group["lr"] = lr
    state.rng.set_state(tensors["rng"])
    if state.ada is not None and "ada" in meta:
        state.ada.load_state_dict(meta["ada"])
    if state.lecam is not None and "lecam" in meta:
        state.lecam.load_state_dict(meta["lecam"])
    state.iteration = int(meta["iteration"])
    state.history = list(meta.get("history", []))
    pending = meta.get("pending", {})
    state.pending, state.n_pending = dict(pending.get("sums", {})), int(pending.get("steps", 0))
    return state


WEIGHTS: tuple[str, ...] = ("auto", "ema", "live")


@dataclass
class LoadedGenerator:
    """A generator read from a run folder, checkpoint or snapshot, with what it is."""

    G: nn.Module
    cfg: GANConfig
    classes: list[str]
    weights: str  # "ema" or "live"
    iteration: int


def load_generator(
    run: str | os.PathLike[str], device: str | torch.device = "cpu", weights: str = "auto"
) -> LoadedGenerator:
    """The generator of a run folder (its checkpoint) or of a checkpoint/snapshot file, in eval mode.

    ``weights``: ``auto`` = the EMA copy when the run has one, else the live G; ``ema`` / ``live`` choose
    (the live weights can sample better early in a run: see :meth:`EMA.follow`).
    """
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose from {', '.join(WEIGHTS)}")
    path = Path(run)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no GAN checkpoint at {path}: train one with 'birdlens gan train'")
    tensors, meta = load_checkpoint(path)
    cfg = GANConfig.from_saved(meta["config"]).resolved()
    has_ema = any(k.startswith("EMA.") for k in tensors)
    if weights == "ema" and not has_ema:
        raise ValueError(f"{path} has no EMA generator (ema_decay was 0); use weights 'live' or 'auto'")
    use = "ema" if (weights == "ema" or (weights == "auto" and has_ema)) else "live"
    G = build_generator(cfg, len(meta["classes"]))
    G.load_state_dict(module_state(tensors, "EMA" if use == "ema" else "G"))
    G = G.to(
        device, memory_format=memory_format(device)
    )  # the trainer's layout: the same samples as in training
    return LoadedGenerator(G.eval(), cfg, list(meta["classes"]), use, int(meta.get("iteration", 0)))


def load_sampler(
    run: str | os.PathLike[str], device: str | torch.device = "cpu", weights: str = "auto"
) -> tuple[nn.Module, GANConfig, list[str]]:
    """The generator to sample from (EMA when the run has one, unless ``weights`` says), its config and classes."""
    g = load_generator(run, device, weights)
    return g.G, g.cfg, g.classes


def save_snapshot(state: GANState, path: str | os.PathLike[str]) -> Path:
    """The generators only (live + EMA) at this iteration: small, and readable by :func:`load_generator`."""
    meta = {
        "format": "birdlens-gan-snapshot-1",
        "iteration": state.iteration,
        "config": state.cfg.to_dict(),
        "classes": state.classes,
    }
    return save_checkpoint(path, _generator_tensors(state), meta)


# ------------------------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    state: GANState
    run_dir: Path | None
    seconds: float
    grids: list[Path]


def train_gan(
    cfg: GANConfig,
    data: ImageSet,
    out: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    quiet: bool | None = None,
    extra_meta: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train (or resume) up to ``cfg.iterations`` generator steps; without ``out`` nothing is written.

    ``device`` may be ``cuda``: random draws still come from the checkpointed CPU generator; bit-exact resume
    is guaranteed on the CPU only (CUDA kernels are not all deterministic).
    """
    cfg = cfg.resolved()
    run_dir = Path(out) if out is not None else None
    ckpt = run_dir / CHECKPOINT if run_dir is not None else None
    if ckpt is not None and ckpt.exists() and resume:
        state = state_from_checkpoint(ckpt, cfg, device)
        if state.classes != data.classes:
            raise ValueError(f"cannot resume: classes differ ({state.classes} vs {data.classes})")
    else:
        if ckpt is not None and ckpt.exists() and not force:
            raise RunExistsError(
                f"{run_dir} already holds a GAN run: pass --resume to continue or --force to restart"
            )
        state = init_state(cfg, data.classes, device)
        if run_dir is not None and force:
            clear_run(run_dir)
    data = ImageSet(data.images.to(device), data.labels.to(device), data.classes)
    if run_dir is not None:
        from birdlens.utils.env import environment_info

        write_json(
            run_dir / "config.json",
            {
                "config": cfg.to_dict(),
                "classes": data.classes,
                "train_images": data.per_class_counts(),
                "env": environment_info(cfg.seed),
                **(extra_meta or {}),
            },
        )
    grid_labels, grid_z = fixed_grid_inputs(cfg, len(data.classes))
    grids: list[Path] = []
    t0 = time.perf_counter()
    with console.loop_progress(
        cfg.iterations, f"{cfg.arch} {cfg.image_size}px", quiet, start=state.iteration
    ) as bar:
        while state.iteration < cfg.iterations:
            t_step = time.perf_counter()
            losses = train_step(state, data)
            losses["sec_per_it"] = time.perf_counter() - t_step
            for k, v in losses.items():
                state.pending[k] = state.pending.get(k, 0.0) + v
            state.n_pending += 1
            it = state.iteration
            if it % cfg.log_every == 0 or it == cfg.iterations:
                row = {"iteration": it, **{k: v / state.n_pending for k, v in state.pending.items()}}
                state.history.append(row)
                state.pending, state.n_pending = {}, 0
                bar.update(it, f"D {row['loss_d']:.3f}  G {row['loss_g']:.3f}")
            if run_dir is not None and _due(it, cfg.sample_every, cfg.iterations):
                grids.append(
                    save_grid(
                        generate(state.sampler, grid_labels, grid_z),
                        run_dir / "samples" / f"iter_{it:06d}.png",
                    )
                )
            if run_dir is not None and cfg.snapshot_every and it % cfg.snapshot_every == 0:
                save_snapshot(state, run_dir / "snapshots" / f"iter_{it:06d}.safetensors")
            if run_dir is not None and _due(it, cfg.checkpoint_every, cfg.iterations):
                save_checkpoint(ckpt, *state_to_checkpoint(state))  # type: ignore[arg-type]
    return TrainResult(state, run_dir, time.perf_counter() - t0, grids)


def _due(it: int, every: int, last: int) -> bool:
    """At the last step always, else every ``every`` steps (0 = never)."""
    return it == last or (every > 0 and it % every == 0)


def clear_run(run_dir: str | os.PathLike[str]) -> None:
    """Remove what a run wrote (checkpoint, grids, snapshots) and nothing else, so a restarted run in the same
    folder cannot be mixed with the old one's files (``gan_curve.py`` measures every snapshot it finds)."""
    run_dir = Path(run_dir)
    stale = [
        run_dir / CHECKPOINT,
        (run_dir / CHECKPOINT).with_suffix(".json"),
        *run_dir.glob("samples/iter_*.png"),
        *run_dir.glob("snapshots/iter_*.safetensors"),
        *run_dir.glob("snapshots/iter_*.json"),
    ]
    for f in stale:
        f.unlink(missing_ok=True)
