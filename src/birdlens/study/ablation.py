"""Does GAN data help a classifier? The experiment the study skipped.

Four arms, each training the *same* classifier (the linear probe of ``probe.py`` on Lite0 features) and
testing it on the same real test images:

* ``real``: ``budget`` real training images per class;
* ``real+classic``: plus ``classic_copies`` classically augmented copies of each real image;
* ``real+gan``: plus ``gan_per_class`` images per class from a GAN trained **only on that budget's real
  images** (a GAN trained on more real data would leak it);
* ``real+classic+gan``: both.

For every real budget and seed, a fresh stratified subset is drawn, its own GAN is trained, and all four
arms are fitted. Reported: mean test accuracy over seeds with a 95% t-interval, and the paired per-seed
difference to ``real+classic`` with its own 95% t-interval. A verdict says "helps" / "hurts" only when the
interval excludes zero, otherwise "no evidence". Every image of every arm has the GAN's resolution
(resize + centre crop), so the arms differ only in what was added.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdlens.augment.gan.checkpoint import load_meta
from birdlens.augment.gan.config import SCHEDULE_KEYS, GANConfig
from birdlens.augment.gan.data import ImageSet, to_unit
from birdlens.augment.gan.evaluate import sample_images
from birdlens.augment.gan.features import FeatureFn, extract
from birdlens.augment.gan.probe import linear_probe
from birdlens.augment.gan.train import CHECKPOINT, load_sampler, train_gan
from birdlens.evaluate.metrics import t_interval
from birdlens.utils import console
from birdlens.utils.atomic import atomic_path, write_json, write_text
from birdlens.utils.plaintext import plain

ARMS: tuple[str, ...] = ("real", "real+classic", "real+gan", "real+classic+gan")
REFERENCE = "real+classic"
CLASSIC_DESCRIPTION = "flip, random resized crop (scale 0.7-1), rotation +-15 deg, colour jitter 0.2"
CLASSIFIER = "standardised logistic regression (C=0.1) on lite0 features, same for every arm"


@dataclass
class AblationConfig:
    """``gan_per_class`` None = as many generated images per class as the real budget."""

    budgets: list[int] = field(default_factory=lambda: [10, 40])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    classic_copies: int = 2
    gan_per_class: int | None = None
    gan: GANConfig = field(
        default_factory=lambda: GANConfig(
            arch="cgan", image_size=32, iterations=500, batch_size=16, g_width=16, d_width=16
        )
    )


def classic_augment(images: torch.Tensor, copies: int, seed: int) -> torch.Tensor:
    """``copies`` classically augmented versions of each uint8 image (torchvision v2, seeded)."""
    from torchvision.transforms import v2

    size = images.shape[-1]
    t = v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True),
            v2.RandomRotation(15),
            v2.ColorJitter(0.2, 0.2, 0.2),
        ]
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        out = [t(img) for _ in range(copies) for img in images]
    finally:
        torch.random.set_rng_state(state)
    return torch.stack(out) if out else images[:0]


def stratified_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` random images of every class (all of a class that has fewer)."""
    rng = np.random.default_rng(seed)
    idx = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten().numpy()
        idx.extend(rng.choice(members, min(per_class, len(members)), replace=False).tolist())
    return torch.tensor(sorted(idx), dtype=torch.long)


def verdict(lo: float, hi: float) -> str:
    """Of an arm against the reference: "helps"/"hurts" only when the interval excludes zero."""
    return "helps" if lo > 0 else "hurts" if hi < 0 else "no evidence"


def summarise(acc: dict[Any, dict[str, list[float]]]) -> dict[str, Any]:
    """``acc[budget][arm]`` = per-seed accuracies (same seed order in every arm) -> means, CIs, paired differences."""
    out: dict[str, Any] = {}
    for budget, arms in acc.items():
        rows = {}
        for arm, vals in arms.items():
            m, lo, hi = t_interval(vals)
            row: dict[str, Any] = {"mean": m, "ci95": [lo, hi], "per_seed": vals}
            if arm != REFERENCE and REFERENCE in arms:
                diff = np.asarray(vals) - np.asarray(arms[REFERENCE])
                dm, dlo, dhi = t_interval(diff.tolist())
                row["diff_vs_real+classic"] = {"mean": dm, "ci95": [dlo, dhi], "verdict": verdict(dlo, dhi)}
            rows[arm] = row
        out[str(budget)] = rows
    return out


def reuse_action(run: Path, cfg: GANConfig, classes: list[str]) -> str:
    """``reused`` (the kept run is this GAN, finished), ``resumed`` (the same GAN, fewer steps) or ``trained``
    (none, or one trained otherwise: another arch, width, seed, classes or more steps, which is restarted).

    Why: ablation folders are rerun with other flags; a GAN reused because it merely had enough steps would
    be reported under settings it was not trained with.
    """
    ckpt = run / CHECKPOINT
    if not ckpt.exists():
        return "trained"
    try:
        meta = load_meta(ckpt)
        saved = GANConfig.from_saved(meta["config"]).resolved().to_dict()
    except (OSError, KeyError, ValueError, TypeError):
        return "trained"
    wanted = cfg.resolved().to_dict()
    same = meta.get("classes") == list(classes) and all(
        saved[k] == wanted[k] for k in wanted if k not in SCHEDULE_KEYS
    )
    done = int(meta.get("iteration", 0))
    if not same or done > cfg.iterations:
        return "trained"
    return "reused" if done == cfg.iterations else "resumed"


Parts = dict[str, tuple[np.ndarray, np.ndarray]]


def arm_parts(
    features: FeatureFn,
    real: ImageSet,
    f_real: np.ndarray,
    G: torch.nn.Module,
    z_dim: int,
    cfg: AblationConfig,
    seed: int,
    gan_per_class: int,
) -> Parts:
    """Features and labels of what the arms are built from: the real images (features given), their classic
    copies and ``gan_per_class`` generated images per class, the last two drawn from ``seed``."""
    y_gan = torch.arange(len(real.classes)).repeat_interleave(gan_per_class)
    f_gan = extract(features, sample_images(G, y_gan, z_dim, seed=seed + 7))
    classic = classic_augment(real.images, cfg.classic_copies, seed)
    f_classic = extract(features, to_unit(classic)) if len(classic) else np.empty((0, f_real.shape[1]))
    y_classic = real.labels.repeat(cfg.classic_copies).numpy()
    return {
        "real": (f_real, real.labels.numpy()),
        "classic": (f_classic, y_classic),
        "gan": (f_gan, y_gan.numpy()),
    }


def fit_arms(parts: Parts, f_test: np.ndarray, y_test: np.ndarray, seed: int) -> dict[str, tuple[float, int]]:
    """Each arm's test accuracy and training-set size: the same probe fitted on that arm's parts."""
    out = {}
    for arm in ARMS:
        use = arm.split("+")
        X = np.concatenate([parts[u][0] for u in use])
        y = np.concatenate([parts[u][1] for u in use])
        clf = linear_probe(X, y, seed)
        out[arm] = (float((clf.predict(f_test) == y_test).mean()), len(y))
    return out


def compare_generator(
    train: ImageSet,
    test: ImageSet,
    features: FeatureFn,
    G: torch.nn.Module,
    z_dim: int,
    cfg: AblationConfig,
) -> dict[str, Any]:
    """The four arms with a generator trained on all of ``train`` (so every real image is in every arm: none is
    left out for the GAN to leak), one fit per seed of the augmentations (classic copies and GAN samples).

    Why: a shipped generator lets the demo measure the effect in seconds instead of training a GAN per subset;
    the result has :func:`run_ablation`'s layout with one budget, ``all``.
    """
    if train.classes != test.classes:
        raise ValueError("train and test sets must share the class list")
    f_train = extract(features, to_unit(train.images))
    f_test = extract(features, to_unit(test.images))
    y_test = test.labels.numpy()
    per_class = cfg.gan_per_class or max(train.per_class_counts().values())
    acc: dict[str, dict[str, list[float]]] = {"all": {a: [] for a in ARMS}}
    details = []
    for seed in cfg.seeds:
        parts = arm_parts(features, train, f_train, G, z_dim, cfg, seed, per_class)
        for arm, (a, n) in fit_arms(parts, f_test, y_test, seed).items():
            acc["all"][arm].append(a)
            details.append({"budget": "all", "seed": seed, "arm": arm, "n_train": n, "accuracy": a})
    return {
        "arms": list(ARMS),
        "reference": REFERENCE,
        "budgets": ["all"],
        "seeds": cfg.seeds,
        "classifier": CLASSIFIER,
        "classic_augmentation": f"{cfg.classic_copies} copies per image: {CLASSIC_DESCRIPTION}",
        "gan": {"per_class": per_class, "trained_on": "the whole real training split"},
        "image_size": int(train.images.shape[-1]),
        "n_test": len(test),
        "interval": "95% Student-t over seeds of the augmentations (real and test images fixed); "
        "differences paired by seed",
        "summary": summarise(acc),
        "runs": details,
    }


def run_ablation(
    train: ImageSet,
    test: ImageSet,
    features: FeatureFn,
    out: str | os.PathLike[str],
    cfg: AblationConfig | None = None,
    quiet: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every (budget, seed, arm); GAN runs are kept under ``OUT/gans`` and reused when complete."""
    cfg = cfg or AblationConfig()
    out = Path(out)
    say = log or (print if not console.is_quiet(quiet) else (lambda s: None))
    if train.classes != test.classes:
        raise ValueError("train and test sets must share the class list")
    say(f"features of {len(train)} train and {len(test)} test images")
    f_train = extract(features, to_unit(train.images))
    f_test = extract(features, to_unit(test.images))
    y_test = test.labels.numpy()
    acc: dict[int, dict[str, list[float]]] = {b: {a: [] for a in ARMS} for b in cfg.budgets}
    details = []
    for budget in cfg.budgets:
        for seed in cfg.seeds:
            idx = stratified_subset(train.labels, budget, seed)
            sub = ImageSet(train.images[idx], train.labels[idx], train.classes)
            gan_cfg = GANConfig.from_dict(
                {**cfg.gan.to_dict(), "seed": seed, "image_size": train.images.shape[-1]}
            )
            run = out / "gans" / f"budget{budget}_seed{seed}"
            action = reuse_action(run, gan_cfg, sub.classes)
            say(f"budget {budget}/class, seed {seed}: GAN {action} ({gan_cfg.arch}, {gan_cfg.iterations} it)")
            if action != "reused":
                train_gan(gan_cfg, sub, run, resume=action == "resumed", force=True, quiet=quiet)
            G, gcfg, _ = load_sampler(run)
            assert gcfg.z_dim is not None
            parts = arm_parts(
                features, sub, f_train[idx.numpy()], G, gcfg.z_dim, cfg, seed, cfg.gan_per_class or budget
            )
            for arm, (a, n) in fit_arms(parts, f_test, y_test, seed).items():
                acc[budget][arm].append(a)
                details.append({"budget": budget, "seed": seed, "arm": arm, "n_train": n, "accuracy": a})
                say(f"  {arm:>17}: {a:.3f} (n_train {n})")
    result = {
        "arms": list(ARMS),
        "reference": REFERENCE,
        "budgets": cfg.budgets,
        "seeds": cfg.seeds,
        "classifier": CLASSIFIER,
        "classic_augmentation": f"{cfg.classic_copies} copies per image: {CLASSIC_DESCRIPTION}",
        "gan": {
            **cfg.gan.resolved().to_dict(),
            "per_class": cfg.gan_per_class or "= budget",
            "trained_on": "the budget's real subset only",
        },
        "image_size": int(train.images.shape[-1]),
        "n_test": len(test),
        "test_per_class": test.per_class_counts(),
        "interval": "95% Student-t over seeds; differences paired by seed",
        "summary": summarise(acc),
        "runs": details,
    }
    write_json(out / "ablation.json", result)
    write_text(out / "ablation.md", markdown_table(result))
    plot_ablation(result, out / "ablation.png")
    return result


def markdown_table(result: dict[str, Any]) -> str:
    lines = [
        f"# GAN augmentation ablation ({result['image_size']} px, seeds {result['seeds']}, "
        f"{result['n_test']} real test images)",
        "",
        f"Classifier: {result['classifier']}. Classic: {result['classic_augmentation']}. "
        f"GAN: {result['gan']['arch']}, {result['gan']['iterations']} iterations, trained on "
        f"{result['gan']['trained_on']}; {result['gan']['per_class']} generated per class.",
        "",
        "| real/class | arm | accuracy (mean, 95% CI) | diff vs real+classic (95% CI) | arm vs real+classic |",
        "|---:|---|---|---|---|",
    ]
    for budget, rows in result["summary"].items():
        for arm in result["arms"]:
            r = rows[arm]
            d = r.get("diff_vs_real+classic")
            diff = f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d else "(reference)"
            lines.append(
                f"| {budget} | {arm} | {r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {diff} | "
                f"{d['verdict'] if d else ''} |"
            )
    lines += ["", f'Intervals: {result["interval"]}. "helps"/"hurts" only where the interval excludes zero.']
    return "\n".join(lines) + "\n"


def plot_ablation(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = list(result["summary"])
    arms = result["arms"]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(budgets), 3.2))
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        xs = np.arange(len(budgets)) + (j - (len(arms) - 1) / 2) * width
        rows = [result["summary"][b][arm] for b in budgets]
        means = np.array([r["mean"] for r in rows])
        err = np.array([[r["mean"] - r["ci95"][0] for r in rows], [r["ci95"][1] - r["mean"] for r in rows]])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.bar(xs, means, width, yerr=err, capsize=3, label=plain(arm))
    ax.set_xticks(np.arange(len(budgets)), [f"{b}/class" for b in budgets])
    ax.set_ylabel("test accuracy (mean, 95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title(
        f"GAN augmentation ablation, {result['image_size']} px, {len(result['seeds'])} seeds", fontsize=9
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)
