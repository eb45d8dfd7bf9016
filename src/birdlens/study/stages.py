"""A tiny cached stage runner: each stage's outputs are keyed by its config slice and its inputs' keys.

Why not a workflow engine (snakemake, prefect, ...)? The graph is small and fixed, the artefacts are plain files
in one run directory, and what users need is three guarantees that fit in a page of code:

* a re-run skips every stage whose key (config slice + upstream keys + code version) is unchanged;
* changing one setting re-runs only the stages that depend on it;
* an interrupted stage resumes (it is told so), a failed stage is recorded with its traceback, and everything
  finished before it stays on disk.

Markers live in ``RUN/.stages/<stage>.json`` and are written atomically, *after* the stage's own files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from birdlens.utils.atomic import is_leftover, write_json

MARKERS = ".stages"
# Bump when a stage's on-disk format changes so that old caches are not trusted.
FORMAT_VERSION = 1


class StageFailed(RuntimeError):
    """A stage raised; earlier stages are kept. ``stage`` names it, ``__cause__`` holds the error."""

    def __init__(self, stage: str, error: BaseException):
        self.stage = stage
        super().__init__(f"stage '{stage}' failed: {type(error).__name__}: {error}")


@dataclass
class StageContext:
    """What a stage function gets: where to write, what upstream stages produced, and whether to resume."""

    name: str
    dir: Path
    run_dir: Path
    config: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    resume: bool
    progress: Callable[[str], None] = field(default=lambda msg: None)
    quiet: bool = False  # no progress bars in the stage's work (the runner's --quiet)


StageFn = Callable[[StageContext], dict[str, Any]]


@dataclass
class Stage:
    """One step. ``config`` is the slice of the study config it depends on; ``deps`` the stages it reads."""

    name: str
    fn: StageFn
    config: dict[str, Any]
    deps: Sequence[str] = ()
    subdir: str | None = None  # folder under the run dir; default: the name with ':' -> '/'

    @property
    def folder(self) -> str:
        return self.subdir or self.name.replace(":", "/")


@dataclass
class StageResult:
    name: str
    key: str
    status: str  # "done" (ran now), "cached", "failed", "skipped"
    seconds: float
    summary: dict[str, Any]
    error: str | None = None


def _plain(obj: Any) -> Any:
    """A typed config slice (pydantic) as the dict it dumps to, so a stage's key does not depend on whether
    its slice is passed typed or as a dict."""
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json") if callable(dump) else str(obj)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_plain, separators=(",", ":"))


def stage_key(stage: Stage, upstream_keys: Sequence[str]) -> str:
    payload = _canonical(
        {"v": FORMAT_VERSION, "name": stage.name, "config": stage.config, "deps": list(upstream_keys)}
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _marker(run_dir: Path, name: str, kind: str = "") -> Path:
    safe = name.replace(":", "__").replace("/", "_")
    return run_dir / MARKERS / f"{safe}{kind}.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


Emit = Callable[[str, Stage, dict[str, Any]], None]


def _fresh_dir(stage: Stage, key: str, run_dir: Path) -> tuple[Path, bool]:
    """The stage's folder and whether it resumes: only an interrupted run of this very key does; any other
    leftover is deleted, so stale outputs of another config never mix with new ones."""
    out_dir = run_dir / stage.folder
    running = _read(_marker(run_dir, stage.name, ".running"))
    resume = bool(running and running.get("key") == key and out_dir.exists())
    if not resume and out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, resume


def _record_failure(run_dir: Path, stage: Stage, key: str, exc: Exception, seconds: float) -> None:
    write_json(
        _marker(run_dir, stage.name, ".failed"),
        {
            "key": key,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "seconds": seconds,
        },
    )


def _run_one(
    stage: Stage, key: str, run_dir: Path, inputs: dict[str, dict[str, Any]], emit: Emit, quiet: bool
) -> StageResult:
    """Run one stage whose key has no finished marker; mark it running first and finished last."""
    out_dir, resume = _fresh_dir(stage, key, run_dir)
    _marker(run_dir, stage.name, ".failed").unlink(missing_ok=True)
    write_json(_marker(run_dir, stage.name, ".running"), {"key": key, "started": time.time()})
    ctx = StageContext(
        name=stage.name,
        dir=out_dir,
        run_dir=run_dir,
        config=stage.config,
        inputs=inputs,
        resume=resume,
        quiet=quiet,
    )
    emit("start", stage, {"resume": resume})
    t0 = time.perf_counter()
    try:
        summary = stage.fn(ctx) or {}
    except BaseException as exc:  # KeyboardInterrupt too: record it, keep the .running marker to resume
        if isinstance(exc, Exception):
            _record_failure(run_dir, stage, key, exc, time.perf_counter() - t0)
            emit("failed", stage, {"error": str(exc)})
            raise StageFailed(stage.name, exc) from exc
        raise
    seconds = time.perf_counter() - t0
    write_json(
        _marker(run_dir, stage.name),
        {"key": key, "summary": summary, "seconds": seconds, "finished": time.time()},
    )
    _marker(run_dir, stage.name, ".running").unlink(missing_ok=True)
    emit("done", stage, {"seconds": seconds})
    return StageResult(stage.name, key, "done", seconds, summary)


def run_stages(
    stages: Sequence[Stage],
    run_dir: Path,
    *,
    on_event: Emit | None = None,
    quiet: bool = False,
) -> list[StageResult]:
    """Run ``stages`` in order (they must be listed after their deps), skipping the unchanged ones.

    Raises :class:`StageFailed` at the first failure, after recording it; results of finished stages stay.
    """
    run_dir = Path(run_dir)
    (run_dir / MARKERS).mkdir(parents=True, exist_ok=True)
    keys: dict[str, str] = {}
    summaries: dict[str, dict[str, Any]] = {}
    results: list[StageResult] = []
    names = {s.name for s in stages}
    emit = on_event or (lambda *_: None)
    for stage in stages:
        missing = [d for d in stage.deps if d not in keys]
        if missing:
            unknown = [d for d in missing if d not in names]
            raise ValueError(f"stage '{stage.name}' depends on {unknown or missing}, which is not before it")
        key = stage_key(stage, [keys[d] for d in stage.deps])
        keys[stage.name] = key
        done = _read(_marker(run_dir, stage.name))
        if done and done.get("key") == key:
            summaries[stage.name] = done.get("summary", {})
            results.append(StageResult(stage.name, key, "cached", 0.0, summaries[stage.name]))
            emit("cached", stage, summaries[stage.name])
            continue
        result = _run_one(stage, key, run_dir, {d: summaries[d] for d in stage.deps}, emit, quiet)
        summaries[stage.name] = result.summary
        results.append(result)
    return results


def finished_stages(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Markers of finished stages (name -> marker), for the report's timing footer."""
    out = {}
    for p in sorted((Path(run_dir) / MARKERS).glob("*.json")):
        if p.stem.endswith((".running", ".failed")) or is_leftover(p):
            continue
        data = _read(p)
        if data:
            out[p.stem.replace("__", ":")] = data
    return out
