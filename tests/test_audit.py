"""The shortcut audit (birdlens.explain.audit): Wilson interval, SpRAy's eigengap, pasting, and the audit end
to end on a tiny planted dataset where a simple CNN can only tell two classes apart by a planted patch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from _trainutil import save_run, untrained_cnn
from birdlens.cli import app
from birdlens.data.layouts import load_manifest
from birdlens.data.shortcuts import PatchCue, plant_shortcut
from birdlens.explain.audit.core import AuditConfig, AuditInputError, audit_run, central_object, predict
from birdlens.explain.audit.counterfactual import paste, sign_test, wilson_interval
from birdlens.explain.audit.signals import (
    agreeing_pixels,
    carries,
    mark_extent,
    others_object,
    pixel_agreement,
)
from birdlens.explain.audit.spray import eigengap_k, laplacian_spectrum, spray

SIZE = 32


def test_wilson_interval_by_hand_and_against_scipy() -> None:
    from scipy.stats import binomtest

    lo, hi = wilson_interval(0, 10)  # centre z²/2n / (1 + z²/n), half the same: hi = z² / (n + z²)
    z2 = 1.959963984540054**2
    assert lo == 0.0 and hi == pytest.approx(z2 / (10 + z2))
    for k, n in ((0, 10), (3, 40), (17, 20), (64, 64)):
        ref = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-9)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_sign_test_by_hand_and_against_scipy() -> None:
    from scipy.stats import binomtest

    assert sign_test(3, 0) == pytest.approx(1 / 8)  # all three discordant pairs the suspect's way
    assert sign_test(2, 1) == pytest.approx(4 / 8)  # C(3,2) + C(3,3) of 2**3
    assert sign_test(0, 0) == 1.0  # no pair differs: nothing says the suspect flips more
    for more, fewer in [(12, 3), (5, 5), (1, 9), (40, 22)]:
        ref = binomtest(more, more + fewer, 0.5, alternative="greater").pvalue
        assert sign_test(more, fewer) == pytest.approx(ref, rel=1e-12)


def test_the_flag_rule_by_hand() -> None:
    """40 of 200 recipients flip (Wilson lower bound 0.15) while the control flips 38 (p = 0.4): a mark is a
    shortcut (a frame's paste leaves a seam the control leaves too), an off-object region is not; a mark
    whose rate may be under the 2% 'ignored' level is not, whatever the control."""
    from birdlens.explain.audit.core import _test

    class Stub:
        def __init__(self, flips: int, control: float, p: float) -> None:
            self.out = {"flips": flips, "n": 200, "control": control, "control_p": p, "target": 1}

        def run(self, *args: object, **kwargs: object) -> dict[str, object]:
            return dict(self.out)

    class Images:
        photos = np.zeros((4, 8, 8, 3), np.uint8)

    def cluster(mark: bool) -> dict[str, object]:
        region = np.ones((8, 8), bool)
        return {
            "mark": mark,
            "suspect": True,
            "_donors": np.arange(2),
            "_grown": region,
            "_mark": (region, None),
        }

    rng = np.random.default_rng(0)
    seam = Stub(40, 0.19, 0.4)
    assert _test(cluster(True), Images(), seam, AuditConfig(), rng, 1)["flagged"]  # type: ignore[arg-type]
    assert not _test(cluster(False), Images(), seam, AuditConfig(), rng, 1)["flagged"]  # type: ignore[arg-type]
    cfg = AuditConfig(mark_control=True)
    assert not _test(cluster(True), Images(), seam, cfg, rng, 1)["flagged"]  # type: ignore[arg-type]
    beaten = Stub(40, 0.02, 1e-6)
    assert _test(cluster(False), Images(), beaten, AuditConfig(), rng, 1)["flagged"]  # type: ignore[arg-type]
    rare = Stub(5, 0.0, 0.03)  # 5/200: lower bound 0.011, under the threshold
    res = _test(cluster(True), Images(), rare, AuditConfig(), rng, 1)  # type: ignore[arg-type]
    assert res["ci95"][0] == pytest.approx(wilson_interval(5, 200)[0]) and not res["flagged"]


def test_eigengap_counts_disconnected_groups() -> None:
    # two disconnected blocks: the normalised Laplacian has eigenvalue 0 twice, then a jump
    a = np.zeros((6, 6))
    a[:3, :3] = a[3:, 3:] = 1
    np.fill_diagonal(a, 0)
    eig = laplacian_spectrum(a)
    assert eig[:2] == pytest.approx([0, 0], abs=1e-9) and eig[2] == pytest.approx(1.5)  # K3: 0, 1.5, 1.5
    assert eigengap_k(eig, max_k=4) == 2


def test_spray_separates_two_kinds_of_maps() -> None:
    rng = np.random.default_rng(0)
    maps = torch.zeros(16, 16, 16)
    maps[:8, 1:4, 1:4] = 1  # a corner, as a patch shortcut would give
    maps[8:, 6:11, 6:11] = 1  # the centre, as the bird would
    maps += torch.from_numpy(rng.uniform(0, 0.05, (16, 16, 16))).float()
    s = spray(maps, grid=8)
    assert s.k == 2 and len(set(s.labels[:8])) == 1 and len(set(s.labels[8:])) == 1
    assert s.labels[0] != s.labels[8] and s.consistency(int(s.labels[0])) > 0.95


def test_paste_copies_only_the_region_and_refuses_an_empty_one() -> None:
    rec = np.zeros((3, 4, 4, 3), np.uint8)
    don = np.stack([np.full((4, 4, 3), 10, np.uint8), np.full((4, 4, 3), 20, np.uint8)])
    region = np.zeros((4, 4), bool)
    region[0, :2] = True
    out = paste(rec, don, region)
    assert out[0, 0, 0, 0] == 10 and out[1, 0, 0, 0] == 20 and out[2, 0, 0, 0] == 10  # donors cycled
    assert not out[:, ~region].any()
    with pytest.raises(ValueError, match="empty"):
        paste(rec, don, np.zeros((4, 4), bool))


def test_others_object_is_where_the_other_classes_maps_lie() -> None:
    maps = np.zeros((2, 2, 4, 4))
    maps[0, 0, 0, 0], maps[0, 0, 1, 1] = 10.0, 5.0  # class 1: normalised 1.0 and 0.5
    maps[0, 1, 1, 1] = 0.1  # class 2, ten times weaker, normalised: 1.0 at (1, 1)
    maps[0, 1, 3, 3] = -4.0  # negative evidence is not the object
    # mean of the normalised maps: (0,0) 0.5, (1,1) 0.75, elsewhere 0; level 0.6 of the peak 0.75 is 0.45
    est = others_object(maps, level=0.6)
    assert est[0].sum() == 2 and est[0, 0, 0] and est[0, 1, 1]
    assert others_object(maps, level=0.8)[0].sum() == 1  # 0.6 of the peak: only (1, 1)
    assert not est[1].any()  # no evidence at all: nothing known


def test_pixel_agreement_counts_pixels_a_quorum_shares() -> None:
    images = np.zeros((4, 2, 2, 3), np.uint8)
    images[:, 0, 0] = (200, 0, 200)  # (0,0): the same mark in all four
    images[:3, 0, 1] = (50, 50, 50)  # (0,1): three of four (a cue with p < 1)
    images[3, 0, 1] = (250, 250, 250)
    images[:, 1, 0] = np.array([[0, 0, 0], [60, 0, 0], [120, 0, 0], [180, 0, 0]])  # (1,0): all differ
    images[:, 1, 1] = np.array([[10, 10, 10], [14, 10, 10], [30, 10, 10], [40, 10, 10]])
    region = np.ones((2, 2), bool)
    # median per pixel: (1,1) has median 22 in red: |10-22|=12 and |30-22|=8 are within 12, 14 too, 40 not:
    # 3 of 4 agree there
    assert pixel_agreement(images, region, tol=12, quorum=0.75) == pytest.approx(3 / 4)
    assert pixel_agreement(images, region, tol=12, quorum=1.0) == pytest.approx(1 / 4)
    only = np.zeros((2, 2), bool)
    only[1, 0] = True
    assert pixel_agreement(images, only, tol=12, quorum=0.5) == 0.0
    assert pixel_agreement(images, np.zeros((2, 2), bool), tol=12, quorum=0.5) == 0.0


def test_carries_finds_images_that_already_show_the_mark() -> None:
    donors = np.zeros((3, 2, 2, 3), np.uint8)
    donors[:, 0, :] = (200, 0, 200)  # the mark: the top row, the same in every donor
    donors[:, 1, :] = np.array([[0, 0, 0], [90, 90, 90], [180, 180, 180]])[:, None]  # the rest differs
    mask, median = agreeing_pixels(donors, np.ones((2, 2), bool), tol=12, quorum=1.0)
    assert mask.tolist() == [[True, True], [False, False]] and median[0, 0].tolist() == [200, 0, 200]
    rec = np.zeros((3, 2, 2, 3), np.uint8)
    rec[0, 0, :] = (205, 5, 195)  # within 12: carries it
    rec[1, 0, 0] = (200, 0, 200)  # half of it: under a quorum of 0.75
    assert carries(rec, mask, median, tol=12, quorum=0.75).tolist() == [True, False, False]
    assert not carries(rec, np.zeros((2, 2), bool), median, tol=12, quorum=0.75).any()


def test_mark_extent_takes_the_whole_mark_a_seed_touches() -> None:
    exclusive = np.zeros((6, 6), bool)
    exclusive[0, :] = exclusive[:, 0] = True  # an L-shaped frame piece, one part
    exclusive[4:, 4:] = True  # another part, not touched by the seed
    exclusive[2, 2] = True  # diagonal to nothing of the L: its own part
    seed = np.zeros((6, 6), bool)
    seed[0, 5] = True  # the far end of the L
    seed[3, 3] = True  # not exclusive: seeds nothing
    whole = mark_extent(seed, exclusive)
    assert whole.sum() == 11 and whole[5, 0] and not whole[4:, 4:].any() and not whole[2, 2]
    assert not mark_extent(np.zeros((6, 6), bool), exclusive).any()


def _folder(root: Path, n_train: int = 30, n_test: int = 16) -> Path:
    """Four classes on the same grey noise, each with a 'bird' square in the middle: A and B the same bird (only
    a planted cue can tell them apart), C's red, D's blue; so every class but a planted one is told by its bird,
    and evidence on the background would be a shortcut."""
    rng = np.random.default_rng(0)
    bird = {"A": (230, 230, 200), "B": (230, 230, 200), "C": (230, 60, 60), "D": (60, 60, 230)}
    for split, n in (("train", n_train), ("valid", 4), ("test", n_test)):
        for c, col in bird.items():
            d = root / split / f"CLASS {c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = 120 + rng.normal(0, 25, (SIZE, SIZE, 3))
                img[12:20, 12:20] = np.array(col) + rng.normal(0, 25, (8, 8, 3))  # no two birds alike
                img = np.clip(img, 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")
    return root


def _train(manifest, classes: list[str], steps: int = 150):
    trained = untrained_cnn(classes, size=SIZE)
    recs = manifest.split("train").records
    x = torch.stack(
        [torch.from_numpy(np.array(Image.open(r.path).convert("RGB"))).permute(2, 0, 1) for r in recs]
    )
    x = (x.float() / 255 - 0.5) / 0.5
    y = torch.tensor([classes.index(r.label) for r in recs])
    model = trained.model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(x), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return trained


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("audit")
    clean = _folder(root / "clean")
    plant_shortcut(
        load_manifest(clean),
        root / "planted",
        PatchCue(size=0.25, margin=0.0),
        ["CLASS A"],
        p=1.0,
        test_p=0.0,
    )
    m = load_manifest(root / "planted")
    trained = _train(m, m.classes)
    return root, root / "planted", trained


def test_audit_flags_the_planted_class_only(planted: tuple[Path, Path, object]) -> None:
    root, data, trained = planted
    m = load_manifest(data)
    # the model relies on the patch, measured without the audit: the true cue turns B/C/D test images into A
    others = [r for r in m.split("test") if r.label != "CLASS A"]
    cued = np.stack(
        [
            PatchCue(size=0.25, margin=0.0).apply(np.array(Image.open(r.path).convert("RGB")))[0]
            for r in others
        ]
    )
    assert (predict(trained, cued) == 0).mean() >= 0.10
    res = audit_run(trained, m, root / "out", AuditConfig(per_class=16, recipients=40))
    assert res["flagged"] == ["CLASS A"], {k: v["verdict"] for k, v in res["classes"].items()}
    a = res["classes"]["CLASS A"]
    assert a["flip_rate"] > a["control_rate"] and a["ci95"][0] > 0.05
    assert a["ci95"][0] <= a["flip_rate"] <= a["ci95"][1]
    on_disk = json.loads((root / "out" / "audit.json").read_text())
    assert set(on_disk["classes"]) == set(m.classes)
    for v in on_disk["classes"].values():
        assert {"flagged", "flip_rate", "ci95", "evidence"} <= set(v) and len(v["ci95"]) == 2
        assert all((root / "out" / p).is_file() for p in v["evidence"])
    # the suspect region sits where the patch was planted (top-left corner, off the central object)
    region_off = next(c for c in a["clusters"] if c["tested"])["off_object"]
    assert region_off > 0.5 and not central_object(SIZE)[:8, :8].any()


def test_a_clean_dataset_flags_no_class(planted: tuple[Path, Path, object]) -> None:
    root, _, _ = planted
    m = load_manifest(root / "clean")
    m = m.with_records(r for r in m if r.label != "CLASS B")  # A and B are the same there: drop the twin
    trained = _train(m, m.classes)
    res = audit_run(trained, m, None, AuditConfig(per_class=16, recipients=40))
    assert res["flagged"] == [], {k: v["verdict"] for k, v in res["classes"].items()}


def test_bad_input_is_one_error_nothing_written(planted: tuple[Path, Path, object], tmp_path: Path) -> None:
    _root, data, trained = planted
    m = load_manifest(data)
    with pytest.raises(AuditInputError, match="no train split"):
        audit_run(trained, m.with_records(r for r in m if r.split != "train"), tmp_path / "o")
    assert not (tmp_path / "o").exists()
    run = save_run(trained, tmp_path / "run")
    no_train = tmp_path / "no_train"
    for split in ("valid", "test"):
        for r in m.split(split):
            dst = no_train / Path(r.path).relative_to(data)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(Path(r.path).read_bytes())
    res = CliRunner().invoke(
        app, ["audit", "--run", str(run), "--data", str(no_train), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "train split" in res.output and not (tmp_path / "o").exists()
    res = CliRunner().invoke(
        app,
        ["audit", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "o"), "--method", "nope"],
    )
    assert res.exit_code == 2 and "--method" in res.output and not (tmp_path / "o").exists()


def test_cli_writes_audit_json_and_md(planted: tuple[Path, Path, object], tmp_path: Path) -> None:
    _, data, trained = planted
    run = save_run(trained, tmp_path / "run")
    args = [
        "audit",
        "--run",
        str(run),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
        "--per-class",
        "8",
        "-q",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "audit.json").read_text())["classes"]
    assert "| class | flagged |" in (tmp_path / "o" / "audit.md").read_text()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output


def test_study_stage_and_report_section(planted: tuple[Path, Path, object], tmp_path: Path) -> None:
    from birdlens.study.config import ShortcutAuditConfig
    from birdlens.study.pipeline import audit_stage
    from birdlens.study.report_stage import _audit_section
    from birdlens.study.stages import StageContext

    _, data, trained = planted
    run = save_run(trained, tmp_path / "run")
    a = ShortcutAuditConfig(enabled=True, per_class=8, recipients=20)
    config = {
        "method": a.method,
        "per_class": a.per_class,
        "recipients": a.recipients,
        "threshold": a.threshold,
        "alpha": a.alpha,
        "seed": 0,
    }
    ctx = StageContext(
        name="audit:cnn",
        dir=tmp_path / "audit" / "cnn",
        run_dir=tmp_path,
        config=config,
        inputs={"data": {"dataset": str(data)}, "model:cnn": {"run": str(run)}},
        resume=False,
        quiet=True,
    )
    ctx.dir.mkdir(parents=True)
    summary = audit_stage(ctx)
    assert summary["model"] == "cnn" and (ctx.dir / "audit.json").is_file()
    html = _audit_section(tmp_path, {"audit:cnn": summary})
    assert "<table>" in html and "CLASS A" in html and "data:image/png;base64," in html
    with pytest.raises(ValueError, match="unknown method"):
        ShortcutAuditConfig(method="nope")


def test_the_audit_defaults_agree_between_the_cli_the_library_and_the_study() -> None:
    import inspect

    from birdlens.explain.audit.cli import audit
    from birdlens.explain.audit.core import AuditConfig
    from birdlens.study.config import ShortcutAuditConfig

    cli = inspect.signature(audit).parameters
    assert cli["method"].default == AuditConfig.method == ShortcutAuditConfig().method
    assert cli["per_class"].default == AuditConfig.per_class == ShortcutAuditConfig().per_class
    assert cli["recipients"].default == AuditConfig.recipients
    assert cli["threshold"].default == AuditConfig.threshold == ShortcutAuditConfig().threshold
    assert cli["alpha"].default == AuditConfig.alpha == ShortcutAuditConfig().alpha
