"""The whole study on a tiny config: resume after a kill, caching, selective re-runs, and a complete report."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from birdlens.runs.layout import RunDirError
from birdlens.study.config import load_study_config
from birdlens.study.run import run_study

CONFIG = Path(__file__).parent / "data" / "study_tiny.yaml"
SECTIONS = (
    "data",
    "augment",
    "gan",
    "curves",
    "confusion",
    "models",
    "explain",
    "explain_eval",
    "audit",
    "footer",
)


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", BIRDLENS_QUIET="1", BIRDLENS_CACHE=str(tmp / "cache"), HF_HUB_OFFLINE="1")
    return env


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Start the study in a subprocess, SIGKILL it once the first model is finished, then resume in-process."""
    tmp = tmp_path_factory.mktemp("study")
    out = tmp / "run"
    env = _env(tmp)
    proc = subprocess.Popen(
        [sys.executable, "-m", "birdlens.cli", "run", str(CONFIG), "--out", str(out), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker = out / ".stages" / "model__cnn-none.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), proc.stderr.read().decode() if proc.stderr else "no marker"
    os.environ.update({k: env[k] for k in ("BIRDLENS_CACHE", "HF_HUB_OFFLINE")})
    cfg = load_study_config(CONFIG)
    report, results = run_study(cfg, out, resume=True, quiet=True)
    return {
        "out": out,
        "cfg": cfg,
        "report": report,
        "results": {r.name: r for r in results},
        "killed": killed,
    }


def test_resume_after_kill_keeps_finished_stages(study):
    res = study["results"]
    assert res["data"].status == "cached" and res["model:cnn-none"].status == "cached"
    assert res["report"].status == "done"
    assert all(r.status in ("cached", "done") for r in res.values())
    assert not list((study["out"] / ".stages").glob("*.failed.json"))


def test_second_run_does_no_work(study):
    _, results = run_study(study["cfg"], study["out"], resume=True, quiet=True)
    assert [r.name for r in results if r.status != "cached"] == []


def test_changing_one_model_reruns_only_it_and_what_follows(study):
    data = study["cfg"].model_dump(mode="json")
    data["models"][1]["epochs"] = 1  # cnn-keras
    from birdlens.study.config import parse_study_config

    cfg = parse_study_config(data)
    _, results = run_study(cfg, study["out"], resume=True, quiet=True)
    ran = sorted(r.name for r in results if r.status == "done")
    assert ran == ["cases:cnn-keras", "evaluate:cnn-keras", "model:cnn-keras", "report"]
    study["cfg"] = cfg


def test_existing_run_needs_resume_or_force(study):
    with pytest.raises(RunDirError, match="--resume"):
        run_study(study["cfg"], study["out"], quiet=True)


def test_report_has_every_section_and_figure(study):
    html = Path(study["report"]).read_text()
    for key in SECTIONS:
        body = html.split(f'<section id="{key}">', 1)[1].split("</section>", 1)[0]
        assert "Not part of this study" not in body, key
    imgs = re.findall(r'<img [^>]*src="data:image/png;base64,', html)
    # sample grid, augmentation, GAN grid, 4 models x (curves + confusion), 1 panel, curves + sanity + bars
    assert len(imgs) >= 1 + 1 + 1 + 8 + 1 + 3
    assert "missing figure" not in html
    results = json.loads((study["out"] / "results.json").read_text())
    assert {m["name"] for m in results["models"]} == {"cnn-none", "cnn-keras", "cnn-gan", "lite0-probe"}
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in results["models"])
    assert "FD-lite0" in results["gan"]["metrics"]
    assert set(results["explain_eval"]["lite0-probe"]["methods"]) >= {"gradcam", "lime", "random (baseline)"}
    assert results["findings"] and results["timings"]
    # the cases of the explained model: its prototypes in the data section, its confusions and top losses
    assert (
        "Class prototypes for lite0-probe"
        in html.split('<section id="data">', 1)[1].split("</section>", 1)[0]
    )
    cases = results["cases"]["lite0-probe"]
    assert len(cases["prototypes"]["classes"]) == len(results["data"]["classes"])
    assert all(r["examples_figure"] for r in cases["losses"]) and "lite0-probe: why the confusions" in html


def test_report_in_a_real_browser(study, tmp_path):
    """Headless Chromium opens report.html from disk: every image decodes, no console errors."""
    pw = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Debian chromium is missing (.ci/run installs it)")
        pytest.skip("Debian chromium not installed")
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(Path(study["report"]).resolve().as_uri())
        page.wait_for_load_state("load")
        n_images = page.evaluate("document.images.length")
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length"
        )
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert n_images >= 15 and broken == 0
    assert errors == []
    assert shot.stat().st_size > 10_000
