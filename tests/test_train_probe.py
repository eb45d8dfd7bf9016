"""Probe mode: run directory layout, feature cache, solvers, load_trained; one real-data acceptance test."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _trainutil import make_image_folder
from birdlens.runs.layout import RunDirError
from birdlens.train import TrainConfig, load_trained, train
from birdlens.train.probe_head import fit_probe


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny") / "birds")


def _cfg(data: Path, out: Path, cache: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "data": str(data),
        "out": str(out),
        "model": "simple_cnn",
        "mode": "probe",
        "image_size": 32,
        "feature_cache": str(cache),
        "quiet": True,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_probe_run_directory_and_cache(tiny_data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "features"
    run = train(_cfg(tiny_data, tmp_path / "run", cache, augment="light", probe_views=2))
    for name in (
        "config.yaml",
        "env.json",
        "meta.json",
        "log.csv",
        "best.safetensors",
        "manifest.csv",
        "metrics/test.json",
        "metrics/valid.json",
        "figures/learning_curves.png",
        "figures/confusion_test_counts.png",
        "figures/confusion_test_normalized.png",
        "figures/reliability_test.png",
        "figures/top_losses_test.png",
    ):
        assert (run / name).is_file(), name
    meta = json.loads((run / "meta.json").read_text())
    assert meta["classes"] == ["CLASS A", "CLASS B", "CLASS C"]
    assert meta["mode"] == "probe" and meta["model"] == "simple_cnn" and meta["image_size"] == 32
    assert meta["data_config"]["input_size"] == 32
    assert meta["probe"]["train_vectors"] == 24 * 3  # clean + 2 augmented views per image
    first = meta["probe"]["feature_cache"]["train"]
    assert first["cache_misses"] == 72 and first["cache_hits"] == 0
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(meta["probe"]["history"]) and rows[0]["stage"].startswith("probe C=")

    # same config again: every feature comes from the cache and the fitted head is identical
    run2 = train(_cfg(tiny_data, tmp_path / "run2", cache, augment="light", probe_views=2))
    meta2 = json.loads((run2 / "meta.json").read_text())
    again = meta2["probe"]["feature_cache"]["train"]
    assert again["cache_hits"] == 72 and again["cache_misses"] == 0
    a, b = load_file(str(run / "best.safetensors")), load_file(str(run2 / "best.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # the saved model is backbone + fitted head: load_trained reproduces the recorded test accuracy
    trained = load_trained(run)
    assert not trained.model.training and trained.classes == meta["classes"]
    from birdlens.data.dataset import ImageDataset
    from birdlens.data.manifest import Manifest

    test = Manifest.from_csv(run / "manifest.csv").split("test")
    ds = ImageDataset(
        test, transform=trained.transform(), class_to_idx={c: i for i, c in enumerate(trained.classes)}
    )
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    pred = trained.predict_proba(x).argmax(1).numpy()
    acc = float((pred == np.array(ds.targets)).mean())
    assert acc == pytest.approx(json.loads((run / "metrics/test.json").read_text())["accuracy"])


def test_run_dir_is_never_silently_replaced(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    cfg = _cfg(tiny_data, out, tmp_path / "features")
    with pytest.raises(RunDirError, match="--force"):
        train(cfg)
    assert (out / "precious.txt").read_text() == "keep me"
    train(cfg, force=True, evaluate=False)
    assert not (out / "precious.txt").exists() and (out / "best.safetensors").is_file()


def test_probe_solvers_agree() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, size=(4, 16))
    y = np.repeat(np.arange(4), 30)
    x = centres[y] + rng.normal(0, 1.5, size=(120, 16))
    yv = np.repeat(np.arange(4), 10)
    xv = centres[yv] + rng.normal(0, 1.5, size=(40, 16))
    a = fit_probe(x, y, xv, yv, 4, c_grid=(0.1, 1.0), solver="lbfgs")
    b = fit_probe(x, y, xv, yv, 4, c_grid=(0.1, 1.0), solver="sklearn")
    assert a.c == b.c
    # same objective: the logits agree up to a per-row constant (softmax invariance)
    la = torch.from_numpy(xv).float() @ a.weight.T + a.bias
    lb = torch.from_numpy(xv).float() @ b.weight.T + b.bias
    assert torch.allclose(torch.softmax(la, 1), torch.softmax(lb, 1), atol=2e-3)
    assert a.history[0]["valid_acc"] == pytest.approx(b.history[0]["valid_acc"])


@pytest.mark.slow
@pytest.mark.shared_data
def test_lite0_probe_on_shared_birds(shared_birds: Path, tmp_path: Path) -> None:
    """Acceptance (issue 3): bundled EfficientNet-Lite0 probe reaches >= 0.93 test accuracy."""
    run = train(
        TrainConfig(
            data=str(shared_birds),
            out=str(tmp_path / "run"),
            model="efficientnet_lite0",
            mode="probe",
            feature_cache=str(tmp_path / "features"),
            quiet=True,
        )
    )
    m = json.loads((run / "metrics/test.json").read_text())
    assert m["n"] == 180
    assert m["accuracy"] >= 0.93, m["accuracy"]
