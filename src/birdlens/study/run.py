"""Run a whole study: validate the config, prepare the run directory, run the cached stages, print the report path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from birdlens.runs.layout import prepare_run_dir
from birdlens.study.config import StudyConfig
from birdlens.study.stages import MARKERS, Stage, StageResult, run_stages
from birdlens.utils.atomic import write_json, write_text
from birdlens.utils.env import environment_info


def run_study(
    cfg: StudyConfig, out: Path, *, resume: bool = False, force: bool = False, quiet: bool = False
) -> tuple[Path, list[StageResult]]:
    """Run every stage of ``cfg`` in ``out``; returns the report path and per-stage results."""
    from rich.console import Console

    from birdlens.study.pipeline import build_stages

    out = Path(out)
    stages = build_stages(cfg)  # first: a config naming a missing file fails before the run folder is touched
    prepare_run_dir(out, force=force, resume=resume, resumable=(MARKERS,), require_resumable=False)
    write_text(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    write_json(out / "env.json", environment_info(cfg.seed))
    console = Console(stderr=True, quiet=quiet)
    t0 = time.perf_counter()
    index = {s.name: i for i, s in enumerate(stages, 1)}

    def on_event(kind: str, stage: Stage, info: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - t0
        tag = f"[{index[stage.name]}/{len(stages)}] {stage.name}"
        if kind == "start":
            more = " (resuming)" if info.get("resume") else ""
            console.rule(f"[bold]{tag}[/bold]{more}  ·  elapsed {elapsed / 60:.1f} min", style="cyan")
        elif kind == "cached":
            console.print(f"[dim]{tag}: unchanged, skipped[/dim]")
        elif kind == "done":
            console.print(f"[green]{tag}: done in {info['seconds']:.1f} s[/green]")
        elif kind == "failed":
            console.print(f"[red]{tag}: FAILED — {info['error']}[/red]")

    results = run_stages(stages, out, on_event=on_event, quiet=quiet)
    report = Path(results[-1].summary.get("report", out / "report.html"))
    ran = sum(r.status == "done" for r in results)
    console.print(
        f"[bold]{ran} stage(s) ran, {len(results) - ran} unchanged, "
        f"{(time.perf_counter() - t0) / 60:.1f} min.[/bold]"
    )
    return report, results


def bundled_config(name: str) -> Path:
    """Path of a config shipped inside the package (``demo``)."""
    return Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
