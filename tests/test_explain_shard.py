"""``explain`` and ``explain-eval`` sharded over 2 CPU processes (Lightning Fabric, ddp, gloo): the merged outputs
equal a one-process run exactly; an interrupted run resumed gives the same result; bad options are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _trainutil import make_image_folder, save_run, untrained_cnn
from birdlens.cli import app
from birdlens.data.synth import generate_dataset
from birdlens.explain.shard import PARTS_DIR, ShardError, check_processes, units_for_rank

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["CLASS A", "CLASS B", "CLASS C"]
EXPLAIN = ["--methods", "gradcam,ig,lime", "--ig-steps", "4", "--lime-samples", "16", "--batch-images", "2"]
EXPLAIN += ["--top-k", "2", "--n", "6", "--quiet"]
EVAL = ["--methods", "gradcam,lime", "--n", "12", "--steps", "8", "--batch-size", "4", "--sanity-n", "10"]
EVAL += ["--stability-n", "10", "--param", "lime.num_samples=16", "--quiet"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder and a model for explain; synthetic birds (masks, parts) and a model for explain-eval."""
    root = tmp_path_factory.mktemp("shard")
    make_image_folder(root / "data", n_classes=3, train=1, valid=1, test=4, size=40)
    save_run(untrained_cnn(CLASSES, 32), root / "run")
    synth = generate_dataset(
        root / "birds", classes=3, per_class=6, size=32, splits=(0.2, 0.1, 0.7), quiet=True
    )
    assert len(synth.split("test").records) >= 12
    save_run(untrained_cnn(synth.classes, 32), root / "birds_run")
    return root


class Crash(RuntimeError):
    """A run killed half way (Ctrl-C, a lost machine)."""


def _birdlens_2_processes(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user starts it (Fabric's launcher re-runs this command for rank 1)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "BIRDLENS_QUIET": "1"}
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "birdlens.cli", *args, "--devices", "2"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def _files(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", "results.json")
    }


def _without_timings(manifest: dict) -> dict:
    m = {k: v for k, v in manifest.items() if k not in ("seconds", "environment", "seconds_total")}
    m.pop("seconds_per_image", None)
    if "methods" in m and "images" in m:  # explain: seconds per method
        m["methods"] = {k: v["params"] for k, v in m["methods"].items()}
    return m


def test_round_robin_assignment_covers_every_unit_once() -> None:
    got = sorted(u for r in range(3) for u in units_for_rank(8, r, 3))
    assert got == list(range(8))
    assert units_for_rank(8, 1, 3) == [1, 4, 7]


def test_explain_two_processes_resumed_equals_one_process(
    setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import birdlens.explain.run as run

    data, runs = str(setup / "data" / "test"), str(setup / "run")
    one, two = setup / "explain_1", setup / "explain_2"
    r = CliRunner().invoke(app, ["explain", data, "--run", runs, "--out", str(one), *EXPLAIN])
    assert r.exit_code == 0, r.output
    # an interrupted run: groups 0 and 1 (images 0-3) written, then a crash; image 2's part is cut short
    real, calls = run._explain_group_parts, []

    def crash_on_third(*a: object, **k: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise Crash
        real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(run, "_explain_group_parts", crash_on_third)
    with pytest.raises(Crash):
        CliRunner().invoke(
            app,
            ["explain", data, "--run", runs, "--out", str(two), *EXPLAIN, "--resume"],
            catch_exceptions=False,
        )
    parts = two / PARTS_DIR
    assert sorted(p.name for p in parts.glob("image_*.json")) == [f"image_{k:05d}.json" for k in range(4)]
    assert not (two / "manifest.json").exists()
    (parts / "image_00002.json").write_text('{"record": ', encoding="utf-8")
    image_0 = json.loads((parts / "image_00000.json").read_text(encoding="utf-8"))["record"]
    first = two / image_0["targets"][0]["maps"]["gradcam"]  # in group 0: kept as it is
    kept = first.stat().st_mtime_ns
    monkeypatch.undo()

    proc = _birdlens_2_processes("explain", data, "--run", runs, "--out", str(two), *EXPLAIN, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("explained 6 images") == 1  # rank 0 reports, rank 1 is silent
    assert first.stat().st_mtime_ns == kept  # group 0 skipped
    assert not parts.exists()
    assert _files(one) == _files(two)  # maps, overlays and panels byte for byte
    m1 = json.loads((one / "manifest.json").read_text())
    m2 = json.loads((two / "manifest.json").read_text())
    assert len(m1["images"]) == 6 and all(len(rec["targets"]) == 2 for rec in m1["images"])
    assert _without_timings(m1) == _without_timings(m2)
    assert [len(v["params"]) > 0 for v in m2["methods"].values()] == [True] * 3


def test_explain_eval_two_processes_equals_one_process(setup: Path) -> None:
    runs, data = str(setup / "birds_run"), str(setup / "birds")
    one, two = setup / "eval_1", setup / "eval_2"
    r = CliRunner().invoke(app, ["explain-eval", "--run", runs, "--data", data, "--out", str(one), *EVAL])
    assert r.exit_code == 0, r.output
    proc = _birdlens_2_processes("explain-eval", "--run", runs, "--data", data, "--out", str(two), *EVAL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1
    assert (one / "per_image.json").read_bytes() == (two / "per_image.json").read_bytes()
    r1 = json.loads((one / "results.json").read_text())
    r2 = json.loads((two / "results.json").read_text())
    assert r1["data"]["n"] == 12 and set(r1["sanity"]["methods"]) >= {"gradcam", "lime"}
    assert len(r1["sanity"]["methods"]["lime"]["corr"][0]) == 10  # sanity spans both blocks of 8
    assert "stability" in r1["methods"]["lime"]
    assert {"pointing_game", "energy_inside", "part_rank_corr", "key_part_share"} <= set(
        r1["methods"]["gradcam"]
    )
    assert json.dumps(_without_timings(r1), sort_keys=True) == json.dumps(
        _without_timings(r2), sort_keys=True
    )
    assert not (two / PARTS_DIR).exists()


def test_explain_eval_resume_after_a_crash(setup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import birdlens.explain.metrics.sharded as sharded

    runs, data = str(setup / "birds_run"), str(setup / "birds")
    out = setup / "eval_resumed"
    args = ["explain-eval", "--run", runs, "--data", data, "--out", str(out), *EVAL, "--resume"]
    real, calls = sharded._score_block, []

    def crash_on_second(*a: object, **k: object) -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise Crash
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(sharded, "_score_block", crash_on_second)
    with pytest.raises(Crash):
        CliRunner().invoke(app, args, catch_exceptions=False)
    assert [p.name for p in (out / PARTS_DIR).glob("block_*.json")] == ["block_00000.json"]
    calls.clear()
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(calls) == 1  # only the missing block was scored
    ref = setup / "eval_1"
    if not ref.exists():
        pytest.skip("needs the one-process reference of the test above")
    assert (out / "per_image.json").read_bytes() == (ref / "per_image.json").read_bytes()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--devices", "0"], "--devices 0: must be at least 1"),
        (["--devices", str((os.cpu_count() or 1) + 1)], "CPU cores; choose 1.."),
        (["--num-nodes", "2"], "--num-nodes 2: start the command on every node"),
    ],
)
def test_bad_process_options_are_one_line(
    setup: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], message: str
) -> None:
    for k in (
        "MASTER_ADDR",
        "NODE_RANK",
        "SLURM_NTASKS",
        "SLURM_JOB_NAME",
        "TORCHELASTIC_RUN_ID",
        "LSB_JOBID",
    ):
        monkeypatch.delenv(k, raising=False)
    out = setup / "bad"
    for cmd in (
        ["explain", str(setup / "data" / "test"), "--run", str(setup / "run"), "--out", str(out)],
        ["explain-eval", "--run", str(setup / "run"), "--data", str(setup / "data"), "--out", str(out)],
    ):
        r = CliRunner().invoke(app, [*cmd, *options, "--device", "cpu"])
        assert r.exit_code == 2, r.output
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.output
    assert not out.exists()


def test_resume_with_other_options_is_refused(setup: Path) -> None:
    out = setup / "other_options"
    (out / PARTS_DIR).mkdir(parents=True)
    (out / PARTS_DIR / "run.json").write_text('{"kind": "explain", "seed": 99}', encoding="utf-8")
    cmd = ["explain", str(setup / "data" / "test"), "--run", str(setup / "run"), "--out", str(out), *EXPLAIN]
    r = CliRunner().invoke(app, [*cmd, "--resume"])
    assert r.exit_code == 2 and "were made with other options" in r.output, r.output


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores to ask for 2 processes")
def test_devices_from_a_non_command_line_is_refused() -> None:
    with pytest.raises(ShardError, match="start it from a command line"):
        check_processes(2, 1, "cpu")  # pytest's command must not be re-run by the launcher


def test_blocks_align_with_the_explain_and_perturbation_batches() -> None:
    from birdlens.explain.metrics.evaluate import EvalSettings
    from birdlens.explain.metrics.sharded import block_size

    # 224 px, 224 steps: 225 points per image, chunks of 16 pairs -> 16 images (lcm with the explain batch 8)
    assert block_size(EvalSettings(), 224, 224) == 16
    # 32 px, 8 steps: 9 points, chunks of 4 -> 4 images; lcm with 8 -> 8
    assert block_size(EvalSettings(n_steps=8, batch_size=4), 32, 32) == 8
    # 10 steps: 11 points, chunks of 6 -> 6 images, lcm(4, 6) = 12
    cfg = EvalSettings(n_steps=10, batch_size=6, explain_batch=4)
    size = block_size(cfg, 32, 32)
    assert size == 12 and size % cfg.explain_batch == 0 and size * 11 % 6 == 0


class _FakeFabric:
    """What :func:`birdlens.explain.shard._collective` uses of Fabric: the rank and an all-reduce."""

    def __init__(self, rank: int, others_failed: int) -> None:
        self.global_rank, self.device, self.others = rank, "cpu", others_failed

    def all_reduce(self, flag, reduce_op: str):  # type: ignore[no-untyped-def]
        assert reduce_op == "sum"
        return flag + self.others


def test_a_failure_on_one_rank_fails_every_rank(capsys: pytest.CaptureFixture[str]) -> None:
    from birdlens.explain.shard import _collective

    _collective(_FakeFabric(0, 0), lambda: None, "x")  # all well: returns
    with pytest.raises(ShardError, match="1 other process"):
        _collective(_FakeFabric(0, 1), lambda: None, "its share")

    def boom() -> None:
        raise ValueError("bad class 'wren'")

    with pytest.raises(ValueError, match="wren"):
        _collective(_FakeFabric(1, 0), boom, "its share")
    assert "process 1: ValueError: bad class 'wren'" in capsys.readouterr().err
