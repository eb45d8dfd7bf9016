"""``birdlens gan ...``: train a GAN, sample a dataset from it, measure it, export it.

The ``gan ablation`` command is a classifier experiment, so it lives with the study's experiments
(:mod:`birdlens.study.ablation`) and :mod:`birdlens.study.cli` attaches it to this group."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from birdlens.utils.device import DEVICE_HELP
from birdlens.utils.env import set_threads

app = typer.Typer(
    name="gan",
    help="GAN augmentation: the study's DCGAN, a data-efficient conditional GAN, "
    "FD-lite0/KID-lite0, and the real/classic/GAN ablation (registered by birdlens.study.cli).",
    no_args_is_help=True,
)

_QUIET = typer.Option("--quiet", "-q", help="no progress bar (also BIRDLENS_QUIET=1)")


# config keys whose command-line flag has another name
_FLAG_OF = {"g_width": "width", "d_width": "width", "ada_speed_images": "ada_speed"}
# the settings ``train`` takes from its flags (and a recipe, and a resumed checkpoint)
_TRAIN_KEYS: tuple[str, ...] = (
    "arch",
    "image_size",
    "iterations",
    "batch_size",
    "seed",
    "classes",
    "split",
    "g_width",
    "d_width",
    "n_dis",
    "diffaugment",
    "ema_decay",
    "ema_start",
    "ema_rampup",
    "ada_target",
    "ada_speed_images",
    "lecam_weight",
    "ms_weight",
    "joint_d",
    "noise_inputs",
    "sample_every",
    "checkpoint_every",
    "snapshot_every",
    "device",
)


def explicit_keys(ctx: typer.Context, keys: Iterable[str]) -> set[str]:
    """The config keys set on the command line (by click's parameter source, so ``--image-size 64`` counts
    even though 64 is the flag's default: comparing with the default could not tell it from an omitted flag)."""

    def given(name: str) -> bool:
        src = ctx.get_parameter_source(name)  # by name: typer may bring its own copy of click's enum
        return src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")

    return {k for k in keys if given(_FLAG_OF.get(k, k))}


def train_settings(ctx: typer.Context, config: Path | None, resume: bool, out: Path) -> dict[str, object]:
    """The run's settings: the flags, under a ``--config`` recipe (explicit flags win), under the checkpoint's
    own settings on ``--resume`` (explicit flags and recipe keys win; each change is noted on stderr)."""
    from birdlens.augment.gan.checkpoint import load_meta
    from birdlens.augment.gan.config import merge_recipe, read_recipe, resume_settings, saved_settings
    from birdlens.augment.gan.train import CHECKPOINT

    given = {k: ctx.params[_FLAG_OF.get(k, k)] for k in _TRAIN_KEYS}
    given["classes"] = list(given["classes"]) if given["classes"] else None
    explicit = explicit_keys(ctx, given)
    if config is not None:
        given = merge_recipe(config, given, explicit)
        explicit |= set(read_recipe(config))  # a recipe named on resume is meant, like a flag
    if resume and (out / CHECKPOINT).exists():
        try:
            saved = saved_settings(load_meta(out / CHECKPOINT)["config"])
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"cannot read the checkpoint in {out} ({e}); --force restarts the run") from None
        given, changed = resume_settings(saved, given, explicit)
        for k, (was, now) in sorted(changed.items()):
            typer.echo(
                f"note: resuming with {k} = {now!r} (the checkpoint was trained with {was!r})", err=True
            )
    return given


def _error(message: object) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


# ``train``'s options, named here so that the command reads as a list of what it takes
_Data = Annotated[Path, typer.Option(help="image folder (split/class/*.jpg), manifest.csv or dataset root")]
_Out = Annotated[Path, typer.Option(help="run folder (checkpoints, sample grids)")]
_Arch = Annotated[str, typer.Option(help="cgan (default, data-efficient) or dcgan (the study's baseline)")]
_Size = Annotated[int, typer.Option(help="64 (default) or 128 (GPU); any power of two >= 16")]
_Iterations = Annotated[int, typer.Option(help="generator updates")]
_Classes = Annotated[
    list[str] | None,
    typer.Option(help="train on these classes only (repeatable); one class = the study's per-species GAN"),
]
_Width = Annotated[int | None, typer.Option(help="network width (default: cgan 32, dcgan 64)")]
_NDis = Annotated[
    int | None, typer.Option(help="discriminator steps per generator step (default: cgan 2, dcgan 1)")
]
_DiffAugment = Annotated[
    str | None,
    typer.Option(
        help="DiffAugment policies, '' to disable (default: cgan color,translation,cutout; dcgan none)"
    ),
]
_EmaDecay = Annotated[float | None, typer.Option(help="EMA decay of G (0 = off; default cgan 0.999)")]
_EmaStart = Annotated[
    int,
    typer.Option(
        help="generator steps before the EMA starts (the live G is sampled until then; BigGAN: 20000)"
    ),
]
_EmaRampup = Annotated[
    float | None,
    typer.Option(
        help="cap the EMA's half-life at this fraction of its "
        "updates (default cgan 0.05, as StyleGAN2-ADA; 0 = BigGAN "
        "warm-up)"
    ),
]
_AdaTarget = Annotated[
    float,
    typer.Option(
        help="adaptive DiffAugment: raise its probability while E[sign D(real)] > this (ADA: 0.6; 0 = always on)"
    ),
]
_AdaSpeed = Annotated[int, typer.Option(help="real images over which the probability may go from 0 to 1")]
_LeCam = Annotated[
    float | None,
    typer.Option(
        help="LeCam regulariser on D for little data (Tseng et al. 2021; default cgan 0.3, dcgan 0 = off)"
    ),
]
_MsWeight = Annotated[
    float,
    typer.Option(
        help="mode-seeking term on G against per-class collapse (MSGAN: 1; 0 = off; needs an even batch)"
    ),
]
_JointD = Annotated[
    bool,
    typer.Option(
        "--joint-d", help="one discriminator call over real and fake together (GPU speed; cgan only)"
    ),
]
_NoiseInputs = Annotated[
    bool,
    typer.Option(
        "--noise-inputs",
        help="per-pixel noise inputs in the generator (StyleGAN; sharper texture; cgan only)",
    ),
]
_SampleEvery = Annotated[int, typer.Option(help="sample grid every N steps (0 = at the end only)")]
_CheckpointEvery = Annotated[int, typer.Option(help="checkpoint every N steps (0 = at the end only)")]
_SnapshotEvery = Annotated[
    int,
    typer.Option(
        help="also keep the generators every N steps in RUN/snapshots (0 = never), to measure FD along the run"
    ),
]
_Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="continue the run in --out with its own settings (flags given explicitly override them)",
    ),
]
_ForceRestart = Annotated[
    bool,
    typer.Option(
        "--force",
        help="restart: delete the run in --out (checkpoint, grids, snapshots) and train from scratch",
    ),
]
_Device = Annotated[str, typer.Option(help=DEVICE_HELP)]
_Threads = Annotated[int | None, typer.Option(help="torch CPU threads")]
_Recipe = Annotated[
    Path | None,
    typer.Option(help="YAML recipe (e.g. configs/gan-gpu.yaml); flags given explicitly override it"),
]


@app.command()
def train(
    ctx: typer.Context,
    data: _Data,
    out: _Out,
    arch: _Arch = "cgan",
    image_size: _Size = 64,
    iterations: _Iterations = 2000,
    batch_size: int = 32,
    seed: int = 0,
    classes: _Classes = None,
    split: str = "train",
    width: _Width = None,
    n_dis: _NDis = None,
    diffaugment: _DiffAugment = None,
    ema_decay: _EmaDecay = None,
    ema_start: _EmaStart = 0,
    ema_rampup: _EmaRampup = None,
    ada_target: _AdaTarget = 0.0,
    ada_speed: _AdaSpeed = 100_000,
    lecam_weight: _LeCam = None,
    ms_weight: _MsWeight = 0.0,
    joint_d: _JointD = False,
    noise_inputs: _NoiseInputs = False,
    sample_every: _SampleEvery = 500,
    checkpoint_every: _CheckpointEvery = 500,
    snapshot_every: _SnapshotEvery = 0,
    resume: _Resume = False,
    force: _ForceRestart = False,
    device: _Device = "cpu",
    threads: _Threads = None,
    config: _Recipe = None,
    quiet: Annotated[bool, _QUIET] = False,
) -> None:
    """Train a class-conditional GAN on the train split; sample grids every --sample-every iterations."""
    from birdlens.augment.gan.config import GANConfig
    from birdlens.augment.gan.data import load_images, resolve_manifest, select
    from birdlens.augment.gan.train import RunExistsError, train_gan
    from birdlens.utils.device import resolve_device

    set_threads(threads)
    try:
        settings = train_settings(ctx, config, resume, out)
        run_device = str(resolve_device(settings.pop("device")))  # a DeviceError is a ValueError
        cfg = GANConfig.from_dict(settings)
        manifest = select(resolve_manifest(data), cfg.split, cfg.classes)
        images = load_images(manifest, cfg.image_size)
        res = train_gan(
            cfg,
            images,
            out,
            resume=resume,
            force=force,
            quiet=quiet,
            extra_meta={"data": str(data)},
            device=run_device,
        )
    except (RunExistsError, ValueError) as e:
        raise _error(e) from None
    last = res.state.history[-1] if res.state.history else {}
    typer.echo(
        f"{cfg.arch}: {res.state.iteration} iterations in {out} ({res.seconds:.0f} s); "
        f"loss_d {last.get('loss_d', float('nan')):.3f} loss_g {last.get('loss_g', float('nan')):.3f}"
    )
    if res.grids:
        typer.echo(f"last sample grid: {res.grids[-1]}")


@app.command()
def sample(
    run: Annotated[Path, typer.Option(help="a run folder written by 'birdlens gan train'")],
    out: Annotated[
        Path, typer.Option(help="output dataset folder (OUT/train/<CLASS>/gan_XXXX.png + manifest.csv)")
    ],
    per_class: Annotated[int, typer.Option(help="images per class")] = 100,
    seed: int = 0,
    classes: Annotated[list[str] | None, typer.Option(help="only these classes (repeatable)")] = None,
    weights: Annotated[str, typer.Option(help="auto (EMA when the run has one), ema or live")] = "auto",
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="write into a folder that is not empty, replacing its GAN images and manifest.csv"
        ),
    ] = False,
    quiet: Annotated[bool, _QUIET] = False,
) -> None:
    """Write generated images in split-folder layout, ready to be mixed into training."""
    from birdlens.augment.gan.sample import write_samples

    try:
        m = write_samples(
            run, out, per_class, seed=seed, classes=classes, quiet=quiet, weights=weights, force=force
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise _error(e) from None
    typer.echo(
        f"wrote {len(m)} images of {len(m.classes)} classes to {out} (manifest: {out / 'manifest.csv'})"
    )


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option(help="a run folder")],
    data: Annotated[Path, typer.Option(help="the real images (same classes as the run)")],
    out: Annotated[Path | None, typer.Option(help="write the metrics JSON here")] = None,
    per_class: Annotated[
        int | None, typer.Option(help="generated images per class (default: as many as real)")
    ] = None,
    cas: Annotated[
        bool, typer.Option(help="also the classification accuracy score on the test split")
    ] = True,
    seed: int = 0,
    inception_weights: Annotated[
        Path | None,
        typer.Option(
            help="pt_inception-2015-12-05-6726825d.pth: also the standard FID (needs torch-fidelity)"
        ),
    ] = None,
    weights: Annotated[str, typer.Option(help="auto (EMA when the run has one), ema or live")] = "auto",
    threads: int | None = None,
) -> None:
    """FD-lite0 / KID-lite0 and precision / recall / density / coverage (overall + per class) against the real
    train split, and CAS on the test split."""
    from birdlens.augment.gan.data import load_images, resolve_manifest, select
    from birdlens.augment.gan.evaluate import gan_metrics
    from birdlens.augment.gan.train import load_generator
    from birdlens.utils.atomic import write_json

    set_threads(threads)
    try:
        loaded = load_generator(run, weights=weights)
        cfg, classes = loaded.cfg, loaded.classes
        manifest = resolve_manifest(data)
        real = load_images(select(manifest, cfg.split, classes), cfg.image_size, classes)
    except (FileNotFoundError, ValueError) as e:
        raise _error(e) from None
    test = None
    if cas:
        name = next((s for s in ("test", "valid") if s in manifest.splits), None)
        held = (
            set(select(manifest, name).classes) if name else set()
        )  # once: Manifest.classes scans every record
        present = [c for c in classes if c in held]
        if present:  # CAS tests on the classes the split has; the classifier still knows all of them
            test = load_images(select(manifest, name, present), cfg.image_size, classes)
        missing = [c for c in classes if c not in present]
        if missing and name:
            typer.echo(
                f"note: CAS leaves out {len(missing)} of {len(classes)} classes with no {name} images: "
                f"{missing}",
                err=True,
            )
        elif not name:
            typer.echo("note: no CAS: the data have no test or valid split", err=True)
    rep = gan_metrics(loaded, real, per_class=per_class, test=test, seed=seed)
    if inception_weights is not None:
        import torch

        from birdlens.augment.gan.data import to_uint8
        from birdlens.augment.gan.evaluate import sample_images
        from birdlens.augment.gan.inception import inception_fid

        assert cfg.z_dim is not None
        labels = real.labels if per_class is None else torch.arange(len(classes)).repeat_interleave(per_class)
        fake = to_uint8(sample_images(loaded.G, labels, cfg.z_dim, seed))
        try:
            rep["FID-inception"] = inception_fid(real.images, fake, inception_weights)
        except (FileNotFoundError, RuntimeError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
    if out is not None:
        write_json(out, rep)
    typer.echo(json.dumps({k: v for k, v in rep.items() if k != "per_class"}, indent=2))


@app.command()
def export(
    run: Annotated[Path, typer.Option(help="a run folder written by 'birdlens gan train'")],
    data: Annotated[
        Path, typer.Option(help="the dataset folder the run was trained on (its record is kept)")
    ],
    out: Annotated[Path, typer.Option(help="the generator file to write (.safetensors, + a .json sidecar)")],
    weights: Annotated[str, typer.Option(help="auto (EMA when the run has one), ema or live")] = "auto",
) -> None:
    """Write the run's generator alone, with its config, classes and how its data were made (for shipping)."""
    from birdlens.augment.gan.export import data_record, export_generator

    try:
        path = export_generator(run, out, data_record(data), weights=weights)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise _error(e) from None
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def register(parent: typer.Typer) -> None:
    """Attach ``gan`` to the top-level ``birdlens`` command."""
    parent.add_typer(app, name="gan")
