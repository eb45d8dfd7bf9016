"""GAN training: exact resume, atomic run folder, sampling into a dataset, the CLI, the ablation's statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from _data_helpers import tiny_image_set
from birdlens.augment.gan.config import GANConfig
from birdlens.augment.gan.train import (
    CHECKPOINT,
    GANState,
    RunExistsError,
    init_state,
    load_sampler,
    train_gan,
)
from birdlens.data.manifest import Manifest
from birdlens.evaluate.metrics import t_interval
from birdlens.study.ablation import (
    AblationConfig,
    run_ablation,
    stratified_subset,
    summarise,
)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


@pytest.mark.parametrize(("arch", "noise"), [("cgan", False), ("dcgan", False), ("cgan", True)])
def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, arch: str, noise: bool) -> None:
    data = tiny_image_set()
    k = 3
    cfg = dict(
        arch=arch,
        image_size=16,
        batch_size=4,
        g_width=4,
        d_width=4,
        seed=5,
        sample_every=2,
        checkpoint_every=2,
        log_every=1,
        noise_inputs=noise,
    )
    train_gan(GANConfig(iterations=2 * k, **cfg), data, tmp_path / "straight", quiet=True)
    train_gan(GANConfig(iterations=k, **cfg), data, tmp_path / "split", quiet=True)
    res = train_gan(GANConfig(iterations=2 * k, **cfg), data, tmp_path / "split", resume=True, quiet=True)
    assert res.state.iteration == 2 * k
    a, b = _tensors(tmp_path / "straight" / CHECKPOINT), _tensors(tmp_path / "split" / CHECKPOINT)
    assert a.keys() == b.keys()
    assert any(key.startswith("opt_d.state.") for key in a) and "rng" in a
    assert any(key.startswith("EMA.") for key in a) == (arch == "cgan")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # and training actually moved the weights away from the seeded initialisation
    init = init_state(GANConfig(iterations=2 * k, **cfg), data.classes)
    moved = [
        not torch.equal(v, a[f"G.{name}"]) for name, v in init.G.state_dict().items() if v.is_floating_point()
    ]
    assert any(moved)
    grids = sorted(p.name for p in (tmp_path / "straight" / "samples").glob("*.png"))
    assert grids == ["iter_000002.png", "iter_000004.png", "iter_000006.png"]


def test_adaptive_augmentation_state_survives_a_resume(tmp_path: Path) -> None:
    from birdlens.augment.gan.checkpoint import save_checkpoint
    from birdlens.augment.gan.train import state_from_checkpoint, state_to_checkpoint, train_step

    data = tiny_image_set()
    cfg = GANConfig(
        arch="cgan",
        image_size=16,
        batch_size=4,
        g_width=4,
        d_width=4,
        seed=2,
        ada_target=0.6,
        ada_speed_images=64,
    )

    def fresh() -> GANState:
        st = init_state(cfg, data.classes)
        assert st.ada is not None
        st.ada.p = 0.5  # mid-way, so the per-image draws of diff_augment are exercised
        return st

    straight = fresh()
    for _ in range(6):
        train_step(straight, data)
    split = fresh()
    for _ in range(3):
        train_step(split, data)
    save_checkpoint(tmp_path / "c.safetensors", *state_to_checkpoint(split))
    split = state_from_checkpoint(tmp_path / "c.safetensors")
    for _ in range(3):
        train_step(split, data)
    assert straight.ada is not None and split.ada is not None
    assert (
        split.ada.state_dict() == straight.ada.state_dict() and straight.ada.p != 0.5
    )  # it moved, identically
    for k, v in straight.G.state_dict().items():
        assert torch.equal(v, split.G.state_dict()[k]), k
    assert init_state(GANConfig(arch="cgan", image_size=16, g_width=4, d_width=4), data.classes).ada is None


def test_ema_start_samples_the_live_generator_until_the_average_begins() -> None:
    from birdlens.augment.gan.train import train_step

    data = tiny_image_set()
    cfg = GANConfig(
        arch="cgan", image_size=16, batch_size=4, g_width=4, d_width=4, seed=1, ema_start=3, ema_decay=0.999
    ).resolved()
    state = init_state(cfg, data.classes)
    for _ in range(3):
        train_step(state, data)
        assert state.ema is not None and state.ema.num_updates == 0
        live, shadow = state.G.state_dict(), state.ema.shadow.state_dict()
        assert all(torch.equal(live[k], shadow[k]) for k in live)  # sampler == live weights, buffers included
    for _ in range(2):
        train_step(state, data)
    assert state.ema.num_updates == 2
    live, shadow = state.G.state_dict(), state.ema.shadow.state_dict()
    assert any(not torch.equal(live[k], shadow[k]) for k in live if k.endswith("original"))
    # the default (0) averages from the first step, as before
    plain = init_state(GANConfig(**{**cfg.to_dict(), "ema_start": 0}), data.classes)
    train_step(plain, data)
    assert plain.ema is not None and plain.ema.num_updates == 1


def test_ema_rampup_caps_the_half_life_at_a_fraction_of_the_updates() -> None:
    from torch import nn

    from birdlens.augment.gan.ema import EMA

    live = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(live.weight)
    ema = EMA(live, decay=0.999, rampup=0.5)
    expected = 0.0
    for n in range(1, 21):
        with torch.no_grad():
            live.weight.fill_(float(n))  # the live weight moves every step
        ema.update(live)
        d = 0.5 ** (1 / min(693.147, 0.5 * n))  # half-life min(ln .5 / ln .999, rampup * n) updates
        expected = d * expected + (1 - d) * n
    assert float(ema.shadow.weight) == pytest.approx(expected, rel=1e-5)
    assert 10 < expected < 19  # lags the live weight (20) by a few steps, unlike the plain 0.999 average
    assert ema.current_decay() == pytest.approx(0.5 ** (1 / 10))
    ema.num_updates = 100_000  # long runs reach the plain decay
    assert ema.current_decay() == pytest.approx(0.999)
    plain = EMA(live, decay=0.999)
    plain.num_updates = 5
    assert plain.current_decay() == pytest.approx(6 / 15)  # BigGAN warm-up unchanged without rampup
    with pytest.raises(ValueError, match="decay"):
        EMA(live, decay=1.0)


def test_snapshots_keep_both_generators_and_weights_choose_between_them(tmp_path: Path) -> None:
    from birdlens.augment.gan.evaluate import sample_images
    from birdlens.augment.gan.train import load_generator

    data = tiny_image_set()
    cfg = GANConfig(
        arch="cgan",
        image_size=16,
        batch_size=4,
        g_width=4,
        d_width=4,
        iterations=4,
        snapshot_every=2,
        checkpoint_every=4,
    )
    res = train_gan(cfg, data, tmp_path / "r", quiet=True)
    snaps = sorted(p.name for p in (tmp_path / "r" / "snapshots").glob("*.safetensors"))
    assert snaps == ["iter_000002.safetensors", "iter_000004.safetensors"]
    last = tmp_path / "r" / "snapshots" / "iter_000004.safetensors"
    keys = _tensors(last).keys()
    assert any(k.startswith("G.") for k in keys) and any(k.startswith("EMA.") for k in keys)
    assert not any(k.startswith(("D.", "opt_")) for k in keys)  # generators only: small
    live, ema = load_generator(last, weights="live"), load_generator(last)
    assert (
        live.weights,
        ema.weights,
        live.iteration,
        load_generator(tmp_path / "r" / "snapshots" / "iter_000002.safetensors").iteration,
    ) == ("live", "ema", 4, 2)
    z_labels = torch.arange(3)
    same = sample_images(res.state.G, z_labels, 128, seed=3)
    assert torch.equal(sample_images(live.G, z_labels, 128, seed=3), same)
    assert torch.equal(
        sample_images(ema.G, z_labels, 128, seed=3),
        sample_images(res.state.ema.shadow, z_labels, 128, seed=3),
    )
    assert not torch.equal(sample_images(ema.G, z_labels, 128, seed=3), same)
    d = train_gan(
        GANConfig(arch="dcgan", image_size=16, batch_size=4, g_width=4, d_width=4, iterations=1),
        data,
        tmp_path / "d",
        quiet=True,
    )
    assert d.state.ema is None and load_generator(tmp_path / "d").weights == "live"
    with pytest.raises(ValueError, match="no EMA"):
        load_generator(tmp_path / "d", weights="ema")
    with pytest.raises(FileNotFoundError, match="gan train"):
        load_generator(tmp_path / "nothing")


def test_channels_last_on_the_cpu_changes_the_layout_not_the_numbers() -> None:
    """The CPU trainer keeps its networks channels-last (1.4x faster); an NCHW twin must train the same."""
    from birdlens.augment.gan.train import init_state, memory_format, train_step

    assert memory_format("cpu") == torch.channels_last and memory_format("cuda") == torch.contiguous_format
    data = tiny_image_set()
    cfg = GANConfig(arch="cgan", image_size=16, batch_size=4, g_width=4, d_width=4)
    fast, plain = init_state(cfg, data.classes), init_state(cfg, data.classes)
    conv = fast.G.blocks[0].conv1.parametrizations.weight.original
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    plain.set_layout(torch.contiguous_format)  # what the trainer did before (and still does on CUDA)
    assert plain.G.blocks[0].conv1.parametrizations.weight.original.is_contiguous()
    assert (
        plain.ema is not None
        and plain.ema.shadow.blocks[0].conv1.parametrizations.weight.original.is_contiguous()
    )
    for _ in range(3):
        a, b = train_step(fast, data), train_step(plain, data)
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    for (name, p), q in zip(fast.D.named_parameters(), plain.D.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    for (name, p), q in zip(fast.G.named_parameters(), plain.G.parameters(), strict=True):
        # G's conv biases feed batch norm, which removes them: their gradient is rounding noise, and Adam
        # turns any noise into steps of about lr, so only they may differ (by a few lr over 3 steps)
        if name.endswith(".bias") and name.split(".")[-2] in ("conv1", "conv2", "skip"):
            assert (p - q).abs().max() <= 10 * cfg.resolved().lr_g, name
        else:
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_existing_run_is_not_overwritten_and_resume_checks_the_networks(tmp_path: Path) -> None:
    data = tiny_image_set()
    cfg = GANConfig(arch="cgan", image_size=16, batch_size=4, g_width=4, d_width=4, iterations=1)
    train_gan(cfg, data, tmp_path / "r", quiet=True)
    with pytest.raises(RunExistsError):
        train_gan(cfg, data, tmp_path / "r", quiet=True)
    with pytest.raises(ValueError, match="different settings"):
        train_gan(
            GANConfig(arch="cgan", image_size=16, batch_size=4, g_width=8, d_width=8, iterations=2),
            data,
            tmp_path / "r",
            resume=True,
            quiet=True,
        )
    train_gan(cfg, data, tmp_path / "r", force=True, quiet=True)
    assert not list((tmp_path / "r").glob(".*tmp"))  # atomic writes leave no temporary files


def _write_folder(root: Path, classes: int = 2, per_split: dict[str, int] | None = None) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (per_split or {"train": 6, "test": 3}).items():
        for c in range(classes):
            d = root / split / f"BIRD {c}"
            d.mkdir(parents=True)
            for i in range(n):
                arr = (rng.random((40, 40, 3)) * 80 + 90 * c).astype(np.uint8)
                Image.fromarray(arr).save(d / f"img_{i}.png")
    return root


def test_cli_train_resume_sample(tmp_path: Path) -> None:
    from birdlens.cli import app

    data = _write_folder(tmp_path / "birds")
    run = tmp_path / "run"
    runner = CliRunner()
    common = [
        "gan",
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--arch",
        "cgan",
        "--image-size",
        "16",
        "--batch-size",
        "4",
        "--width",
        "4",
        "--sample-every",
        "2",
        "--checkpoint-every",
        "2",
        "--quiet",
    ]
    r = runner.invoke(app, [*common, "--iterations", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*common, "--iterations", "2"])
    assert r.exit_code == 2 and "--resume" in r.output
    r = runner.invoke(app, [*common, "--iterations", "3", "--resume"])
    assert r.exit_code == 0, r.output
    _G, cfg, classes = load_sampler(run)
    assert cfg.iterations == 3 and classes == ["BIRD 0", "BIRD 1"]
    out = tmp_path / "gan-data"
    r = runner.invoke(
        app, ["gan", "sample", "--run", str(run), "--per-class", "3", "--out", str(out), "--quiet"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / "gan.json").read_text())["generator"] == "ema"
    assert json.loads((out / "gan.json").read_text())["iterations"] == 3
    r = runner.invoke(
        app,
        [
            "gan",
            "evaluate",
            "--run",
            str(run),
            "--data",
            str(data),
            "--no-cas",
            "--weights",
            "live",
            "--out",
            str(tmp_path / "m.json"),
            "--threads",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["generator"] == "live" and m["iterations_trained"] == 3 and m["n_fake"] == m["n_real"]
    r = runner.invoke(
        app, ["gan", "evaluate", "--run", str(tmp_path / "none"), "--data", str(data), "--no-cas"]
    )
    assert r.exit_code == 2 and "gan train" in r.output
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == [f"train/BIRD {c}/gan_{i:04d}.png" for c in range(2) for i in range(3)]
    m = Manifest.from_csv(out / "manifest.csv")
    assert len(m) == 6 and m.splits == ["train"] and m.classes == ["BIRD 0", "BIRD 1"]
    with Image.open(out / "train" / "BIRD 0" / "gan_0000.png") as im:
        assert im.size == (16, 16) and im.mode == "RGB"


def test_interval_and_verdict_statistics() -> None:
    m, lo, hi = t_interval([0.5, 0.6, 0.7])
    assert m == pytest.approx(0.6) and lo == pytest.approx(0.6 - 4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    assert hi - m == pytest.approx(m - lo)
    acc = {
        10: {
            "real": [0.5, 0.52, 0.51],
            "real+classic": [0.6, 0.62, 0.61],
            "real+gan": [0.70, 0.71, 0.72],
            "real+classic+gan": [0.6, 0.5, 0.7],
        }
    }
    s = summarise(acc)["10"]
    assert s["real+gan"]["diff_vs_real+classic"]["verdict"] == "helps"
    assert s["real"]["diff_vs_real+classic"]["verdict"] == "hurts"
    assert s["real+classic+gan"]["diff_vs_real+classic"]["verdict"] == "no evidence"
    assert "diff_vs_real+classic" not in s["real+classic"]
    idx = stratified_subset(torch.arange(30) % 3, 4, seed=0)
    assert torch.bincount(torch.arange(30)[idx] % 3).tolist() == [4, 4, 4]
    assert torch.equal(idx, stratified_subset(torch.arange(30) % 3, 4, seed=0))


def test_ablation_end_to_end_writes_table_and_plot(tmp_path: Path) -> None:
    """Tiny and fast: a fixed random projection stands in for Lite0 (the real run uses Lite0)."""
    train, test = tiny_image_set(n=30, seed=1), tiny_image_set(n=12, seed=2)
    proj = torch.randn(3 * 16 * 16, 8, generator=torch.Generator().manual_seed(0))

    def feats(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ proj

    cfg = AblationConfig(
        budgets=[2, 4],
        seeds=[0, 1, 2],
        classic_copies=1,
        gan=GANConfig(arch="cgan", image_size=16, iterations=2, batch_size=4, g_width=4, d_width=4),
    )
    res = run_ablation(train, test, feats, tmp_path, cfg, quiet=True)
    assert set(res["summary"]) == {"2", "4"}
    for budget in ("2", "4"):
        for arm in res["arms"]:
            row = res["summary"][budget][arm]
            assert len(row["per_seed"]) == 3 and row["ci95"][0] <= row["mean"] <= row["ci95"][1]
    counts = {(r["budget"], r["arm"]): r["n_train"] for r in res["runs"] if r["seed"] == 0}
    assert (
        counts[(2, "real")] == 6
        and counts[(2, "real+classic")] == 12
        and counts[(2, "real+classic+gan")] == 18
    )
    for name in ("ablation.json", "ablation.md", "ablation.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "diff vs real+classic" in (tmp_path / "ablation.md").read_text()
    assert len(list((tmp_path / "gans").iterdir())) == 6  # one GAN per budget and seed, on that subset only


def test_gpu_recipe_is_a_valid_config() -> None:
    from birdlens.augment.gan.config import merge_recipe
    from birdlens.augment.gan.models import build_discriminator, build_generator

    recipe = Path(__file__).resolve().parents[1] / "configs" / "gan-gpu.yaml"
    given = {"arch": "cgan", "image_size": 64, "iterations": 2000, "seed": 0, "device": "cpu", "ema_start": 0}
    merged = merge_recipe(recipe, given, explicit=set())
    assert merged["device"] == "cuda" and merged["image_size"] == 128 and merged["iterations"] == 40000
    merged = merge_recipe(recipe, {**given, "iterations": 7}, explicit={"iterations", "image_size"})
    assert (
        merged["iterations"] == 7 and merged["image_size"] == 64
    )  # an explicit flag wins, default value or not
    assert merged["device"] == "cuda" and merged["batch_size"] == 64
    merged.pop("device")
    cfg = GANConfig.from_dict({**merged, "image_size": 128}).resolved()
    G, D = build_generator(cfg, 20), build_discriminator(cfg, 20)
    assert G.image_size == D.image_size == 128


def test_cli_recipe_flags_given_explicitly_win(tmp_path: Path) -> None:
    """``--image-size 64 --device cpu`` equal the flags' defaults: comparing values could not see them."""
    from birdlens.cli import app

    data = _write_folder(tmp_path / "birds")
    recipe = Path(__file__).resolve().parents[1] / "configs" / "gan-gpu.yaml"
    run = tmp_path / "run"
    r = CliRunner().invoke(
        app,
        [
            "gan",
            "train",
            "--data",
            str(data),
            "--out",
            str(run),
            "--config",
            str(recipe),
            "--image-size",
            "64",
            "--device",
            "cpu",
            "--iterations",
            "0",
            "--width",
            "4",
            "--lecam-weight",
            "0.3",
            "--ms-weight",
            "1",
            "--joint-d",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["image_size"] == 64 and cfg["iterations"] == 0 and cfg["g_width"] == cfg["d_width"] == 4
    assert cfg["lecam_weight"] == 0.3 and cfg["ms_weight"] == 1.0 and cfg["joint_d"] is True
    assert (
        cfg["batch_size"] == 64 and cfg["lr_d"] == 4e-4 and cfg["snapshot_every"] == 5000
    )  # from the recipe


def test_gan_metrics_report_fd_kid_and_cas(tmp_path: Path) -> None:
    from birdlens.augment.gan.evaluate import gan_metrics

    real, test = tiny_image_set(n=18, seed=3), tiny_image_set(n=9, seed=4)
    train_gan(
        GANConfig(arch="dcgan", image_size=16, batch_size=4, g_width=4, d_width=4, iterations=2),
        real,
        tmp_path / "run",
        quiet=True,
    )
    proj = torch.randn(3 * 16 * 16, 6, generator=torch.Generator().manual_seed(0))

    def feats(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ proj

    feats.name = "proj"  # type: ignore[attr-defined]
    rep = gan_metrics(tmp_path / "run", real, feats, test=test)
    assert rep["n_real"] == rep["n_fake"] == 18 and rep["features"] == "proj"
    assert rep["FD-proj"] > 0 and set(rep["per_class"]) == {"C0", "C1", "C2"}
    assert rep["cas"]["n_train_generated"] == 18 and rep["cas"]["n_test_real"] == 9
    assert 0.0 <= rep["cas"]["accuracy"] <= 1.0 and "real_baseline" in rep["cas"]
    assert rep["generator"] == "live" and rep["iterations_trained"] == 2
    train_gan(
        GANConfig(arch="cgan", image_size=16, batch_size=4, g_width=4, d_width=4, iterations=3),
        real,
        tmp_path / "c",
        quiet=True,
    )
    by = {w: gan_metrics(tmp_path / "c", real, feats, weights=w) for w in ("auto", "ema", "live")}
    assert [by[w]["generator"] for w in by] == ["ema", "ema", "live"]
    assert by["auto"]["FD-proj"] == by["ema"]["FD-proj"] != by["live"]["FD-proj"]
    from birdlens.augment.gan.train import load_generator

    already = gan_metrics(
        load_generator(tmp_path / "c", weights="live"), real, feats
    )  # loaded once, e.g. by the CLI
    assert already["generator"] == "live" and already["FD-proj"] == by["live"]["FD-proj"]


def test_ema_update_equals_a_per_parameter_lerp_and_copies_the_buffers() -> None:
    """The multi-tensor update (one kernel on a GPU) is the same arithmetic as the plain loop, bit for bit."""
    import copy

    from birdlens.augment.gan.ema import EMA
    from birdlens.augment.gan.train import train_step

    data = tiny_image_set()
    cfg = GANConfig(arch="cgan", image_size=16, batch_size=4, g_width=4, d_width=4, seed=2).resolved()
    state = init_state(cfg, data.classes)
    ema = EMA(state.G, decay=0.9)
    train_step(state, data)  # the live G (and its BN / spectral-norm buffers) moved away from the shadow
    expected = copy.deepcopy(ema.shadow)
    d = min(
        0.9, (1 + 1) / (10 + 1)
    )  # BigGAN's warm-up at the first update (num_updates is 1 when it is read)
    with torch.no_grad():
        for s, p in zip(expected.parameters(), state.G.parameters(), strict=True):
            s.lerp_(p, 1.0 - d)
    ema.update(state.G)
    got, want, live = ema.shadow.state_dict(), expected.state_dict(), state.G.state_dict()
    params = {n for n, _ in ema.shadow.named_parameters()}
    assert params and all(torch.equal(got[n], want[n]) for n in params)
    buffers = [n for n, _ in ema.shadow.named_buffers()]
    assert buffers and all(torch.equal(got[n], live[n]) for n in buffers)
    assert any(not torch.equal(got[n], live[n]) for n in params)  # averaged, not copied
    with pytest.raises(ValueError, match="parameters"):
        ema.update(torch.nn.Linear(1, 1))


def test_cli_resume_keeps_the_runs_own_settings_and_says_what_a_flag_changes(tmp_path: Path) -> None:
    """A flag left out on --resume must not fall back to its default (the run's rampup, LeCam, D steps stay)."""
    from birdlens.cli import app

    data = _write_folder(tmp_path / "birds")
    run = tmp_path / "run"
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "gan",
            "train",
            "--data",
            str(data),
            "--out",
            str(run),
            "--image-size",
            "16",
            "--batch-size",
            "4",
            "--width",
            "4",
            "--iterations",
            "2",
            "--ema-rampup",
            "0.1",
            "--lecam-weight",
            "0",
            "--n-dis",
            "1",
            "--seed",
            "3",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        ["gan", "train", "--data", str(data), "--out", str(run), "--iterations", "3", "--resume", "--quiet"],
    )
    assert r.exit_code == 0, r.output
    assert "note:" not in r.output  # nothing was changed explicitly
    cfg = load_sampler(run)[1]
    assert (cfg.iterations, cfg.image_size, cfg.batch_size, cfg.g_width, cfg.seed) == (3, 16, 4, 4, 3)
    assert (cfg.ema_rampup, cfg.lecam_weight, cfg.n_dis) == (0.1, 0.0, 1)  # not the defaults 0.05, 0.3, 2
    r = runner.invoke(
        app,
        [
            "gan",
            "train",
            "--data",
            str(data),
            "--out",
            str(run),
            "--iterations",
            "4",
            "--resume",
            "--n-dis",
            "2",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "resuming with n_dis = 2 (the checkpoint was trained with 1)" in r.output
    assert load_sampler(run)[1].n_dis == 2 and load_sampler(run)[1].lecam_weight == 0.0


def test_cli_resume_of_a_run_saved_before_lecam_was_the_default_keeps_it_off(tmp_path: Path) -> None:
    """A checkpoint without the lecam_weight / ema_rampup keys trained without them: resume must not add them."""
    from birdlens.augment.gan.checkpoint import load_checkpoint, save_checkpoint
    from birdlens.augment.gan.train import CHECKPOINT
    from birdlens.cli import app

    data = _write_folder(tmp_path / "birds")
    run = tmp_path / "run"
    runner = CliRunner()
    common = ["gan", "train", "--data", str(data), "--out", str(run), "--quiet"]
    r = runner.invoke(
        app,
        [
            *common,
            "--image-size",
            "16",
            "--batch-size",
            "4",
            "--width",
            "4",
            "--iterations",
            "2",
            "--lecam-weight",
            "0",
            "--ema-rampup",
            "0",
        ],
    )
    assert r.exit_code == 0, r.output
    tensors, meta = load_checkpoint(run / CHECKPOINT)
    for key in ("lecam_weight", "ema_rampup"):  # as written before the keys existed
        del meta["config"][key]
    save_checkpoint(run / CHECKPOINT, tensors, meta)
    r = runner.invoke(app, [*common, "--iterations", "3", "--resume"])
    assert r.exit_code == 0, r.output
    assert "note:" not in r.output
    cfg = load_sampler(run)[1]
    assert cfg.iterations == 3 and (cfg.lecam_weight, cfg.ema_rampup) == (0.0, 0.0)


def test_zero_intervals_mean_at_the_end_only_and_force_clears_the_old_run(tmp_path: Path) -> None:
    data = tiny_image_set()
    small = {"arch": "cgan", "image_size": 16, "batch_size": 4, "g_width": 4, "d_width": 4}
    run = tmp_path / "r"
    train_gan(
        GANConfig(**small, iterations=2, sample_every=1, checkpoint_every=1, snapshot_every=1),
        data,
        run,
        quiet=True,
    )
    assert len(list(run.glob("samples/iter_*.png"))) == 2 and len(list(run.glob("snapshots/iter_*"))) == 4
    (run / "notes.txt").write_text("mine")
    train_gan(
        GANConfig(**small, iterations=3, sample_every=0, checkpoint_every=0),
        data,
        run,
        force=True,
        quiet=True,
    )
    assert [p.name for p in run.glob("samples/*.png")] == ["iter_000003.png"]  # the old grids are gone
    assert not list(run.glob("snapshots/*")) and (run / "notes.txt").read_text() == "mine"
    assert json.loads((run / "checkpoint.json").read_text())["iteration"] == 3
    for bad in ({"sample_every": -1}, {"batch_size": 0}, {"log_every": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GANConfig(**{**small, **bad}).resolved()


def test_sample_refuses_a_folder_that_is_not_empty_unless_forced(tmp_path: Path) -> None:
    from birdlens.cli import app

    run = tmp_path / "r"
    train_gan(
        GANConfig(arch="cgan", image_size=16, batch_size=4, g_width=4, d_width=4, iterations=1),
        tiny_image_set(),
        run,
        quiet=True,
    )
    out = tmp_path / "real"
    (out / "train" / "C0").mkdir(parents=True)
    (out / "manifest.csv").write_text("path,label,split\n")  # a real dataset's manifest must not be replaced
    runner = CliRunner()
    r = runner.invoke(
        app, ["gan", "sample", "--run", str(run), "--per-class", "3", "--out", str(out), "--quiet"]
    )
    assert r.exit_code == 2 and "not empty" in r.output and "Traceback" not in r.output
    assert (out / "manifest.csv").read_text() == "path,label,split\n"
    r = runner.invoke(
        app, ["gan", "sample", "--run", str(run), "--per-class", "3", "--out", str(out), "--force", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["gan", "sample", "--run", str(run), "--per-class", "2", "--out", str(out), "--force", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    assert len(list(out.rglob("gan_*.png"))) == 6  # 3 classes x 2: the third image of each class went
    assert len(Manifest.from_csv(out / "manifest.csv")) == 6


def test_cli_bad_data_is_an_error_message_and_cas_skips_classes_without_test_images(tmp_path: Path) -> None:
    import shutil

    from birdlens.cli import app

    data = _write_folder(tmp_path / "birds")
    run = tmp_path / "run"
    runner = CliRunner()
    base = [
        "gan",
        "train",
        "--out",
        str(run),
        "--image-size",
        "16",
        "--batch-size",
        "4",
        "--width",
        "4",
        "--iterations",
        "1",
        "--quiet",
    ]
    for args, says in (
        ([*base, "--data", str(tmp_path / "missing")], "missing"),
        ([*base, "--data", str(data), "--classes", "NO SUCH BIRD"], "NO SUCH BIRD"),
        ([*base, "--data", str(data), "--sample-every", "-1"], "sample_every"),
        ([*base, "--data", str(data), "--device", "cuda:7"], "--device cuda:7: not on this machine"),
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "error:" in r.output and says in r.output, r.output
        assert not (run / "checkpoint.safetensors").exists()
    r = runner.invoke(app, [*base, "--data", str(data)])
    assert r.exit_code == 0, r.output
    shutil.rmtree(data / "test" / "BIRD 1")
    m_path = tmp_path / "m.json"
    r = runner.invoke(
        app,
        ["gan", "evaluate", "--run", str(run), "--data", str(data), "--out", str(m_path), "--threads", "1"],
    )
    assert r.exit_code == 0, r.output
    assert "CAS leaves out 1 of 2 classes with no test images: ['BIRD 1']" in r.output
    assert json.loads(m_path.read_text())["cas"]["n_test_real"] == 3
    r = runner.invoke(app, ["gan", "evaluate", "--run", str(run), "--data", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output


def test_ablation_reuses_a_kept_gan_only_when_it_is_the_one_asked_for(tmp_path: Path) -> None:
    from birdlens.study.ablation import reuse_action

    data = tiny_image_set()
    small = {"arch": "cgan", "image_size": 16, "batch_size": 4, "g_width": 4, "d_width": 4, "seed": 1}
    run = tmp_path / "r"
    assert reuse_action(run, GANConfig(**small, iterations=2), data.classes) == "trained"
    train_gan(GANConfig(**small, iterations=2), data, run, quiet=True)
    assert reuse_action(run, GANConfig(**small, iterations=2, sample_every=7), data.classes) == "reused"
    assert reuse_action(run, GANConfig(**small, iterations=3), data.classes) == "resumed"
    assert reuse_action(run, GANConfig(**small, iterations=1), data.classes) == "trained"  # trained longer
    assert (
        reuse_action(run, GANConfig(**{**small, "g_width": 8, "d_width": 8}, iterations=2), data.classes)
        == "trained"
    )
    assert reuse_action(run, GANConfig(**{**small, "seed": 2}, iterations=2), data.classes) == "trained"
    assert reuse_action(run, GANConfig(**{**small, "arch": "dcgan"}, iterations=2), data.classes) == "trained"
    assert reuse_action(run, GANConfig(**small, iterations=2), ["A", "B", "C"]) == "trained"


def test_init_state_is_seeded_without_resetting_the_callers_generator() -> None:
    from birdlens.augment.gan.train import init_state

    cfg = GANConfig(arch="cgan", image_size=16, batch_size=4, g_width=4, d_width=4, seed=5)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = init_state(cfg, ["A", "B"]), init_state(cfg, ["A", "B"])
    assert torch.equal(torch.random.get_rng_state(), before)
    for (name, p), q in zip(a.G.state_dict().items(), b.G.state_dict().values(), strict=True):
        assert torch.equal(p, q), name  # the same seed, the same weights (spectral norm's u included)


def test_an_interrupted_run_resumed_writes_the_same_loss_history(tmp_path: Path, monkeypatch) -> None:
    """Killed between two log rows: the losses summed so far are in the checkpoint, so row 4 averages 4 steps."""
    import birdlens.augment.gan.train as train_mod

    data = tiny_image_set()
    cfg = GANConfig(
        arch="cgan",
        image_size=16,
        batch_size=4,
        g_width=4,
        d_width=4,
        seed=2,
        iterations=6,
        sample_every=0,
        checkpoint_every=3,
        log_every=4,
    )
    straight = train_gan(cfg, data, tmp_path / "straight", quiet=True).state.history
    real_step, calls = train_mod.train_step, []

    def dies_at_step_4(state, batch):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(state, batch)

    monkeypatch.setattr(train_mod, "train_step", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_gan(cfg, data, tmp_path / "split", quiet=True)
    monkeypatch.setattr(train_mod, "train_step", real_step)
    resumed = train_gan(cfg, data, tmp_path / "split", resume=True, quiet=True).state.history

    def losses(rows: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in r.items() if k != "sec_per_it"} for r in rows]

    assert [r["iteration"] for r in straight] == [4, 6]
    assert losses(resumed) == losses(straight)


def test_gan_ablation_command_is_still_under_gan(tmp_path: Path) -> None:
    """The ablation lives in birdlens.study; ``birdlens gan ablation`` stays where users call it."""
    from birdlens.cli import app

    res = CliRunner().invoke(app, ["gan", "ablation", "--help"])
    assert res.exit_code == 0 and "--gan-iterations" in res.output
    res = CliRunner().invoke(
        app, ["gan", "ablation", "--data", str(tmp_path / "none"), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and res.output.startswith("error: ")


def test_gan_ablation_with_a_bad_budget_list_is_a_usage_error(tmp_path: Path) -> None:
    from birdlens.cli import app

    for flag in ("--budgets", "--seeds"):
        res = CliRunner().invoke(
            app, ["gan", "ablation", "--data", str(tmp_path), "--out", str(tmp_path / "o"), flag, "10,x"]
        )
        assert res.exit_code == 2 and not isinstance(res.exception, ValueError), flag
        assert flag in res.output and "whole numbers" in res.output and "Traceback" not in res.output, flag


def test_a_recipe_with_an_unknown_key_is_one_error_line(tmp_path: Path) -> None:
    from birdlens.augment.gan.config import RecipeError, read_recipe
    from birdlens.cli import app

    bad = tmp_path / "r.yaml"
    bad.write_text("arch: cgan\niterashuns: 5\n")
    with pytest.raises(RecipeError, match="iterashuns"):
        read_recipe(bad)
    with pytest.raises(
        RecipeError, match=r"did you mean 'iterashuns' -> 'iterations'\? a recipe takes: arch, "
    ):
        read_recipe(bad)  # the message says what to write instead
    res = CliRunner().invoke(
        app, ["gan", "train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--config", str(bad)]
    )
    assert res.exit_code == 2 and "unknown keys" in res.output and "Traceback" not in res.output
    (tmp_path / "list.yaml").write_text("- arch\n")
    with pytest.raises(RecipeError, match="mapping"):
        read_recipe(tmp_path / "list.yaml")
