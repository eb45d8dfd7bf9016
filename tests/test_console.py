"""One console module: one truth rule for BIRDLENS_QUIET, read in one place; quiet passed as a parameter."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from birdlens.utils import console

SRC = Path(__file__).resolve().parents[1] / "src" / "birdlens"


@pytest.mark.parametrize(
    ("value", "quiet"),
    [
        ("", False),
        ("0", False),
        ("false", False),
        (" No ", False),
        ("off", False),
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("2", True),
    ],
)
def test_one_truth_rule(monkeypatch: pytest.MonkeyPatch, value: str, quiet: bool) -> None:
    monkeypatch.setenv(console.QUIET_ENV, value)
    assert console.env_quiet() is quiet
    assert console.is_quiet(None) is quiet
    assert console.is_quiet(True) is True
    assert console.is_quiet(False) is quiet  # an unset --quiet flag yields to the environment


def test_unset_variable_is_not_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(console.QUIET_ENV, raising=False)
    assert console.is_quiet(None) is False


def test_only_the_console_reads_the_variable() -> None:
    readers = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if re.search(r"environ\b[^\n]*BIRDLENS_QUIET|getenv\([^\n]*BIRDLENS_QUIET", p.read_text())
    ]
    assert readers == [], readers
    assert "QUIET_ENV" in (SRC / "utils" / "console.py").read_text()
    leftovers = [
        p for p in ("data/progress.py", "train/progress.py", "augment/gan/progress.py") if (SRC / p).exists()
    ]
    assert leftovers == []


def test_progress_and_track_yield_everything_quiet_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(console.QUIET_ENV, raising=False)
    for quiet in (True, False):
        assert list(console.track(range(5), total=5, description="x", quiet=quiet)) == list(range(5))
        with console.progress(3, "x", quiet, info=True, elapsed=True, transient=False) as bar:
            bar.advance()
            bar(1)
            bar.update(3, info="done")
        with console.loop_progress(4, "loop", quiet, start=1) as bar:
            bar.update(4, "D 0.1  G 0.2")
        with console.bars(quiet) as group:
            a, b = group.task("a", 2), group.task("b", 4)
            a.advance(2)
            b.update(completed=4)


def test_note_obeys_quiet_and_warn_does_not(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(console.QUIET_ENV, "1")
    console.note("a note")
    console.warn("figure [x].png not written: it failed")
    err = capsys.readouterr().err
    assert "a note" not in err
    assert "figure [x].png not written: it failed" in err  # no markup eaten, no wrapping
    monkeypatch.setenv(console.QUIET_ENV, "0")
    console.note("another note")
    assert "another note" in capsys.readouterr().err


def test_study_stages_get_quiet_as_a_parameter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from birdlens.study.stages import Stage, run_stages

    monkeypatch.delenv(console.QUIET_ENV, raising=False)
    seen: list[bool] = []

    def fn(ctx):  # type: ignore[no-untyped-def]
        seen.append(ctx.quiet)
        return {}

    run_stages([Stage("one", fn, {"v": 1})], tmp_path / "a", quiet=True)
    run_stages([Stage("one", fn, {"v": 1})], tmp_path / "b")
    assert seen == [True, False]
    assert os.environ.get(console.QUIET_ENV) is None  # no side channel
