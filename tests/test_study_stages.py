"""The cached stage runner: skip unchanged work, re-run only what a change touches, resume, keep work on failure."""

from __future__ import annotations

import json

import pytest

from birdlens.study.config import ConfigError, load_study_config, parse_study_config
from birdlens.study.stages import Stage, StageFailed, run_stages


def _pipeline(calls: list[str], cfg: dict, fail: str | None = None):
    def make(name):
        def fn(ctx):
            calls.append(name)
            if name == fail:
                raise RuntimeError("boom")
            (ctx.dir / "out.txt").write_text(f"{name} resume={ctx.resume} inputs={sorted(ctx.inputs)}")
            return {"value": ctx.config.get("v"), "resume": ctx.resume}

        return fn

    return [
        Stage("data", make("data"), {"v": cfg["data"]}),
        Stage("model:a", make("model:a"), {"v": cfg["a"]}, deps=["data"]),
        Stage("model:b", make("model:b"), {"v": cfg["b"]}, deps=["data"]),
        Stage("report", make("report"), {}, deps=["model:a", "model:b"]),
    ]


def test_second_run_does_no_work(tmp_path):
    calls: list[str] = []
    cfg = {"data": 1, "a": 1, "b": 1}
    first = run_stages(_pipeline(calls, cfg), tmp_path)
    assert [r.status for r in first] == ["done"] * 4
    assert calls == ["data", "model:a", "model:b", "report"]
    calls.clear()
    second = run_stages(_pipeline(calls, cfg), tmp_path)
    assert calls == []
    assert [r.status for r in second] == ["cached"] * 4
    assert second[1].summary == {"value": 1, "resume": False}


def test_changing_one_model_reruns_only_it_and_downstream(tmp_path):
    calls: list[str] = []
    run_stages(_pipeline(calls, {"data": 1, "a": 1, "b": 1}), tmp_path)
    calls.clear()
    run_stages(_pipeline(calls, {"data": 1, "a": 1, "b": 2}), tmp_path)
    assert calls == ["model:b", "report"]
    calls.clear()
    run_stages(_pipeline(calls, {"data": 2, "a": 1, "b": 2}), tmp_path)
    assert calls == ["data", "model:a", "model:b", "report"]


def test_failure_keeps_finished_stages_and_names_the_stage(tmp_path):
    calls: list[str] = []
    cfg = {"data": 1, "a": 1, "b": 1}
    with pytest.raises(StageFailed, match="stage 'model:b' failed: RuntimeError: boom"):
        run_stages(_pipeline(calls, cfg, fail="model:b"), tmp_path)
    assert (tmp_path / "model" / "a" / "out.txt").exists()
    failed = json.loads((tmp_path / ".stages" / "model__b.failed.json").read_text())
    assert "boom" in failed["error"] and "Traceback" in failed["traceback"]
    calls.clear()
    results = run_stages(_pipeline(calls, cfg), tmp_path)  # fixed: only the failed stage and after run
    assert calls == ["model:b", "report"]
    assert not (tmp_path / ".stages" / "model__b.failed.json").exists()
    assert [r.status for r in results] == ["cached", "cached", "done", "done"]


def test_interrupted_stage_is_told_to_resume(tmp_path):
    calls: list[str] = []
    cfg = {"data": 1, "a": 1, "b": 1}

    class Interrupt(BaseException):
        pass

    def interrupted(ctx):
        (ctx.dir / "partial.txt").write_text("half")
        raise Interrupt

    stages = _pipeline(calls, cfg)
    stages[1] = Stage("model:a", interrupted, {"v": 1}, deps=["data"])
    with pytest.raises(Interrupt):
        run_stages(stages, tmp_path)
    seen = {}

    def resumed(ctx):
        seen["resume"] = ctx.resume
        seen["partial"] = (ctx.dir / "partial.txt").read_text()
        return {}

    stages[1] = Stage("model:a", resumed, {"v": 1}, deps=["data"])
    run_stages(stages, tmp_path)
    assert seen == {"resume": True, "partial": "half"}


def test_changed_config_never_resumes_stale_outputs(tmp_path):
    calls: list[str] = []
    run_stages(_pipeline(calls, {"data": 1, "a": 1, "b": 1}), tmp_path)
    (tmp_path / "model" / "a" / "stale.txt").write_text("old")
    run_stages(_pipeline(calls, {"data": 1, "a": 5, "b": 1}), tmp_path)
    assert not (tmp_path / "model" / "a" / "stale.txt").exists()


def test_stage_order_is_checked(tmp_path):
    with pytest.raises(ValueError, match="depends on"):
        run_stages([Stage("b", lambda c: {}, {}, deps=["a"])], tmp_path)


def test_config_errors_name_field_value_and_allowed(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text(
        "models:\n  - {name: cnn, model: simple_cnn, mode: prob, augment: keras}\n"
        "explain: {methods: [gradcam, deeplift]}\ntypo_section: 1\n"
    )
    with pytest.raises(ConfigError) as e:
        load_study_config(bad)
    msg = str(e.value)
    assert "models.0.mode: got 'prob'" in msg and "'probe', 'finetune' or 'scratch'" in msg
    assert "models.0.augment: got 'keras'" in msg and "keras-paper" in msg
    assert "explain.methods" in msg and "deeplift" in msg
    assert "typo_section: unknown field" in msg


def test_config_cross_references():
    with pytest.raises(ConfigError, match=r"explain\.models names"):
        parse_study_config({"models": [{"name": "a", "model": "simple_cnn"}], "explain": {"models": ["b"]}})
    with pytest.raises(ConfigError, match="model names must be unique"):
        parse_study_config({"models": [{"name": "a", "model": "x"}, {"name": "a", "model": "y"}]})
    with pytest.raises(ConfigError, match=r"data\.path is empty"):
        parse_study_config({"data": {"source": "path"}, "models": [{"name": "a", "model": "x"}]})


def test_findings_claim_a_difference_only_when_the_intervals_separate() -> None:
    from birdlens.study.report_stage import _findings

    def row(name, model, mode, augment, acc, ci):
        return {
            "name": name,
            "model": model,
            "mode": mode,
            "augment": augment,
            "accuracy": acc,
            "ci95": f"[{ci[0]:.3f}, {ci[1]:.3f}]",
            "ci95_values": ci,
        }  # as _model_rows builds them

    rows = [
        row("cnn-none", "simple_cnn", "scratch", "none", 0.250, [0.16, 0.36]),
        row("cnn-keras", "simple_cnn", "scratch", "keras-paper", 0.264, [0.18, 0.38]),
        row("lite0", "efficientnet_lite0", "probe", "none", 0.903, [0.81, 0.95]),
    ]
    xeval = {
        "lite0": {
            "methods": {
                "shap": {"deletion": {"mean": 0.12, "ci95": [0.07, 0.18], "higher_is_better": False}},
                "lime": {"deletion": {"mean": 0.28, "ci95": [0.19, 0.37], "higher_is_better": False}},
                "ig": {"deletion": {"mean": 0.30, "ci95": [0.10, 0.40], "higher_is_better": False}},
            }
        }
    }
    text = _findings(rows, xeval)
    aug = next(t for t in text if t.startswith("Augmentation"))
    assert "not clearly better" in aug and " beats " not in aug
    transfer = next(t for t in text if t.startswith("Transfer"))
    assert " beats " in transfer
    deletion = next(t for t in text if "deletion" in t)
    assert "shap ranks first (0.120)" in deletion and "lime is second" in deletion
    assert "intervals do not overlap" in deletion


def test_report_figures_skip_a_killed_writes_temp_file(tmp_path):
    """A SIGKILL during an atomic write left `.confusion_test_normalized.png.XXXX.png` (empty) in a model's figures;
    the report embedded it as a broken image."""
    from birdlens.study.report_stage import _figs

    (tmp_path / "confusion_test_normalized.png").write_bytes(b"png")
    (tmp_path / ".confusion_test_normalized.png.1426poqv.png").write_bytes(b"")
    assert _figs(tmp_path, "*confusion*normalized*.png") == [tmp_path / "confusion_test_normalized.png"]


def test_finished_stages_skip_a_killed_writes_temp_marker(tmp_path):
    from birdlens.study.stages import MARKERS, finished_stages

    (tmp_path / MARKERS).mkdir()
    (tmp_path / MARKERS / "data.json").write_text('{"seconds": 1.0}')
    (tmp_path / MARKERS / ".model__cnn.json.ab12.json").write_text(
        '{"seconds": 2.0}'
    )  # complete, not renamed
    assert finished_stages(tmp_path) == {"data": {"seconds": 1.0}}


def test_the_temp_file_atomic_path_writes_is_what_the_globs_skip(tmp_path):
    """The skip above is tied to the writer's own naming, not to a name typed into a test."""
    from birdlens.study.report_stage import _figs
    from birdlens.utils.atomic import atomic_path, is_leftover

    with atomic_path(tmp_path / "confusion_test.png", suffix=".png") as tmp:
        tmp.write_bytes(b"")
        assert tmp.exists() and is_leftover(tmp) and _figs(tmp_path, "*.png") == []
    assert not is_leftover(tmp_path / "confusion_test.png")
    assert _figs(tmp_path, "*.png") == [tmp_path / "confusion_test.png"]


def test_a_typed_config_slice_has_the_key_of_its_dump():
    """Stages get typed slices; their cache key must be what the dumped dict gives (old runs stay cached)."""
    from birdlens.study.config import ModelEntry
    from birdlens.study.stages import stage_key

    m = ModelEntry(name="a", model="simple_cnn", options={"x": 1})
    typed = Stage("m", lambda ctx: {}, {"model": m, "seed": 0})
    plain = Stage("m", lambda ctx: {}, {"model": m.model_dump(), "seed": 0})
    assert stage_key(typed, []) == stage_key(plain, [])
    other = Stage("m", lambda ctx: {}, {"model": m.model_copy(update={"epochs": 9}), "seed": 0})
    assert stage_key(other, []) != stage_key(plain, [])


def test_a_model_entry_becomes_the_trainers_config_in_one_step():
    from birdlens.study.config import ModelEntry

    m = ModelEntry(name="a", model="simple_cnn", mode="scratch", epochs=3, options={"epochs": 2})
    t = m.train_config("data", "out", seed=4, quiet=True)
    assert (t.model, t.mode, t.pretrained, t.epochs, t.seed, t.quiet) == (
        "simple_cnn",
        "finetune",
        False,
        2,
        4,
        True,
    )
    p = ModelEntry(name="b", model="efficientnet_lite0", mode="probe").train_config(
        "d", "o", seed=0, quiet=False
    )
    assert (p.mode, p.pretrained) == ("probe", True)
