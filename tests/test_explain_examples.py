"""Nearest training examples in the model's feature space: the index of a tiny probe run, checked against a
brute-force search in numpy, its cache (reuses the probe's vectors, rebuilt when the model changes), medoids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _trainutil import make_image_folder, tiny_probe_config
from birdlens.data.dataset import ImageDataset
from birdlens.data.manifest import Manifest
from birdlens.explain.examples import FeatureIndex, features_for, index_for_run
from birdlens.runs import layout
from birdlens.runs.trained import load_trained
from birdlens.train import train


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("examples")
    data = make_image_folder(root / "data", n_classes=3, train=6, valid=2, test=2, size=32)
    return train(tiny_probe_config(data, root))


def brute_force(q: np.ndarray, ref: np.ndarray, metric: str) -> np.ndarray:
    """Distances ``[Q, N]`` by the textbook formula, one pair at a time."""
    out = np.zeros((len(q), len(ref)))
    for i, a in enumerate(q):
        for j, b in enumerate(ref):
            if metric == "cosine":
                out[i, j] = max(0.0, 1 - float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))
            else:
                out[i, j] = float(np.sqrt(((a - b) ** 2).sum()))
    return out


def test_the_index_reuses_the_probes_features_and_is_read_back_until_the_model_changes(
    probe_run: Path,
) -> None:
    trained = load_trained(probe_run)
    cache = Path(tiny_probe_config(Path("."), probe_run.parent).feature_cache or "")
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    index = index_for_run(trained, probe_run, quiet=True)
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    assert (
        after == before and len(before) >= 18
    )  # every training vector came from the probe's cache, unwritten
    assert len(index) == 18 and index.features.shape[1] == trained.model.get_classifier().in_features
    assert index.labels.tolist() == sorted(index.labels.tolist()) and set(index.labels.tolist()) == {0, 1, 2}
    saved = probe_run / layout.EXAMPLES_INDEX
    stamp = saved.stat().st_mtime_ns
    again = index_for_run(trained, probe_run, quiet=True)
    assert saved.stat().st_mtime_ns == stamp and again.key == index.key
    torch.testing.assert_close(again.features, index.features, rtol=0, atol=0)
    # the index's vector of a training image is what features_for gives for that photo
    ds = ImageDataset(
        Manifest.from_csv(probe_run / layout.MANIFEST).split("train"), transform=trained.transform()
    )
    x = torch.stack([ds[i][0] for i in (0, 7)])
    torch.testing.assert_close(features_for(trained, x), index.features[[0, 7]], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        next(trained.model.parameters()).add_(0.1)  # another model: the saved index no longer fits
    changed = index_for_run(trained, probe_run, quiet=True)
    assert changed.key != index.key and not torch.allclose(changed.features, index.features)
    assert FeatureIndex.load(saved).key == changed.key  # type: ignore[union-attr]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_neighbours_equal_a_brute_force_search(probe_run: Path, metric: str) -> None:
    base = index_for_run(load_trained(probe_run), probe_run, quiet=True)
    index = FeatureIndex(base.features, base.labels, base.paths, base.classes, metric=metric)
    rng = np.random.default_rng(0)
    queries = torch.from_numpy(rng.normal(size=(4, index.features.shape[1])).astype(np.float32))
    queries[0] = index.features[5]  # a training image finds itself first, at distance 0
    feats = index.features.double().numpy()
    for classes in (None, [2], [0, 1]):
        nb = index.nearest(queries, 4, classes=classes)
        allowed = [j for j in range(len(index)) if classes is None or int(index.labels[j]) in classes]
        d = brute_force(queries.double().numpy(), feats[allowed], metric)
        for q in range(len(queries)):
            order = np.argsort(d[q], kind="stable")[:4]
            assert nb.rows[q].tolist() == [allowed[j] for j in order]
            np.testing.assert_allclose(nb.distances[q].numpy(), d[q][order], rtol=0, atol=1e-9)
            assert all(index.classes[int(index.labels[r])] in {index.classes[c] for c in classes or [0, 1, 2]}
                       for r in nb.rows[q])  # fmt: skip
    assert (
        index.nearest(queries[:1], 1).rows[0, 0] == 5
        and float(index.nearest(queries[:1], 1).distances[0, 0]) < 1e-6
    )
    assert index.nearest(queries, 50, classes=[1]).rows.shape == (4, 6)  # a class has 6 images
    rec = index.describe(index.nearest(queries, 2), 1)
    assert [r["row"] for r in rec] == index.nearest(queries, 2).rows[1].tolist() and "path" in rec[0]
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.nearest(queries, 0)


def test_medoids_equal_the_brute_force_prototypes(probe_run: Path) -> None:
    index = index_for_run(load_trained(probe_run), probe_run, quiet=True)
    feats = index.features.double().numpy()
    medoids = index.medoids()
    for c in range(3):
        rows = [j for j in range(len(index)) if int(index.labels[j]) == c]
        total = brute_force(feats[rows], feats[rows], "cosine").sum(1)
        assert medoids[c] == rows[int(np.argmin(total))]


def test_a_run_without_a_manifest_is_one_clear_error(probe_run: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"manifest\.csv not found"):
        index_for_run(load_trained(probe_run), tmp_path)


def test_explain_cli_writes_each_images_nearest_examples(probe_run: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from birdlens.cli import app

    photos = probe_run.parent / "data" / "test"
    out = tmp_path / "out"
    args = ["explain", str(photos), "--run", str(probe_run), "--methods", "gradcam", "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--examples", "3", "--contrast", "runner-up", "--quiet"])
    assert res.exit_code == 0, res.output
    man = json.loads((out / "manifest.json").read_text())
    trained = load_trained(probe_run)
    index = index_for_run(trained, probe_run, quiet=True)
    for rec in man["images"]:
        from PIL import Image

        x = trained.transform()(Image.open(rec["source"]).convert("RGB"))
        logits = trained.model(x[None]).detach()[0]
        pred, second = torch.argsort(logits, descending=True)[:2].tolist()
        ex = rec["examples"]
        assert ex["predicted"]["class"] == rec["predicted"] == trained.classes[pred]
        assert ex["runner_up"]["class"] == rec["contrast_class"] == trained.classes[second]
        feats = features_for(trained, x[None]).double().numpy()
        for role, c in (("predicted", pred), ("runner_up", second)):
            rows = [j for j in range(len(index)) if int(index.labels[j]) == c]
            d = brute_force(feats, index.features.double().numpy()[rows], "cosine")[0]
            order = np.argsort(d, kind="stable")[:3]
            assert [n["row"] for n in ex[role]["neighbours"]] == [rows[j] for j in order]
            assert [n["distance"] for n in ex[role]["neighbours"]] == pytest.approx(
                d[order].tolist(), abs=1e-6
            )
        assert (out / rec["examples_strip"]).is_file()


def test_two_callers_building_the_index_at_once_extract_the_features_once(
    probe_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import threading
    import time

    import birdlens.train.features as features

    run = tmp_path / "run"
    shutil.copytree(probe_run, run)
    (run / layout.EXAMPLES_INDEX).unlink(missing_ok=True)
    real, calls = features.extract_features, []

    def slow(*args: object, **kwargs: object) -> object:
        calls.append(threading.get_ident())
        time.sleep(0.5)  # long enough that the other caller arrives while this one holds the lock
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "extract_features", slow)
    trained = load_trained(run)
    out: list[FeatureIndex] = []
    threads = [
        threading.Thread(target=lambda: out.append(index_for_run(trained, run, quiet=True))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(out) == 2 and out[0].key == out[1].key
    torch.testing.assert_close(out[0].features, out[1].features, rtol=0, atol=0)
