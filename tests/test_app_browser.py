"""The page in a real browser: headless Debian Chromium (driven by Playwright's Python package, no browser
download) loads ``birdlens serve``'s page from uvicorn on 127.0.0.1, uploads a real bird photo, and must show
the right species, a decoded Grad-CAM image, and LIME/SHAP overlays computed on request with progress.

The model is a real one: an EfficientNet-Lite0 linear probe on 4 species of ``../shared/data/birds``, trained
by birdlens' own ``train`` API once per module (set ``BIRDLENS_APP_RUN`` to an existing run to reuse it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("BIRDLENS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
LEAD_SCREENSHOT = Path("/tmp/birdlens-app.png")

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def pretty(label: str) -> str:
    return label.title()


@pytest.fixture(scope="module")
def lite_run(shared_birds: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    existing = os.environ.get("BIRDLENS_APP_RUN")
    if existing:
        return Path(existing)
    from birdlens.train.api import train
    from birdlens.train.config import TrainConfig

    root = tmp_path_factory.mktemp("app_lite0")
    cfg = TrainConfig(
        data=str(shared_birds),
        out=str(root / "run"),
        model="efficientnet_lite0",
        mode="probe",
        top=4,
        per_class=16,
        quiet=True,
        feature_cache=str(root / "features"),
    )
    return train(cfg, evaluate=False)


@pytest.fixture(scope="module")
def photo(lite_run: Path) -> tuple[Path, str]:
    """A test-split photo the model gets right, after checking that it gets most of them right."""
    import torch

    from birdlens.data.images import load_rgb
    from birdlens.runs.layout import run_manifest
    from birdlens.runs.trained import load_trained

    trained = load_trained(lite_run)
    tf = trained.transform()
    test = sorted(run_manifest(lite_run).split("test"), key=lambda r: str(r.path))
    assert test, "the run has no test split"
    x = torch.stack([tf(load_rgb(r.path)) for r in test])
    pred = trained.predict_proba(x).argmax(1).tolist()
    right = [r for r, p in zip(test, pred, strict=True) if trained.classes[p] == r.label]
    assert len(right) / len(test) >= 0.75, f"probe accuracy {len(right)}/{len(test)}: the model is not usable"
    return Path(right[0].path), right[0].label


@pytest.fixture(scope="module")
def server_url(lite_run: Path) -> Iterator[str]:
    from birdlens.app.server import create_app_from_run

    app = create_app_from_run(lite_run)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # a free port, loopback only
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    if not Path(CHROMIUM).exists():
        msg = f"{CHROMIUM} not found (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900},
            device_scale_factor=1,
        )
        try:
            yield ctx.pages[0] if ctx.pages else ctx.new_page()
        finally:
            ctx.close()


def decoded(page, selector: str) -> bool:
    return page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")


def test_upload_predict_and_explain_in_a_real_browser(
    page, server_url: str, photo: tuple[Path, str], tmp_path: Path, lite_run: Path
) -> None:
    path, label = photo
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    external: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith((server_url, "data:", "blob:")) else external.append(r.url),
    )

    page.goto(server_url + "/")
    page.wait_for_selector("#model-info .chip.run")
    from birdlens.app.service import display_name

    assert display_name(lite_run) in page.inner_text("#model-info")
    assert "efficientnet_lite0" in page.inner_text("#model-info")
    page.wait_for_selector("#examples button img")  # thumbnails of the run's test split

    page.set_input_files("#file", str(path))
    page.wait_for_selector("#top5 li.sp")
    page.wait_for_function(
        "() => { const i = document.querySelector('#panel-gradcam .frame img');"
        " return i && !i.hidden && i.complete && i.naturalWidth > 0; }",
        timeout=60_000,
    )
    labels = page.locator("#top5 li.sp .label").all_inner_texts()
    assert len(labels) == 4  # a 4-species model shows all four
    assert labels[0] == pretty(label)
    assert page.inner_text("#target-label") == pretty(label)
    assert decoded(page, "#panel-gradcam .frame img") and decoded(page, "#panel-view .frame img")
    assert page.eval_on_selector("#panel-gradcam .frame img", "i => i.naturalWidth") == 224

    # "why not <the runner-up>?": the contrastive Grad-CAM (logit difference) in its own panel
    assert page.inner_text("#panel-contrast .run") == f"Why not {labels[1]}?"
    page.click("#panel-contrast .run")
    page.wait_for_function(
        "() => { const i = document.querySelector('#panel-contrast .frame img');"
        " return i && !i.hidden && i.complete && i.naturalWidth > 0; }",
        timeout=60_000,
    )
    assert f"{labels[0]} rather than {labels[1]}" in page.inner_text("#panel-contrast .meta")
    # the nearest training photos (model's feature space), from the predicted species and the runner-up
    page.click("#neighbours-run")
    page.wait_for_function(
        "() => { const s = [...document.querySelectorAll('#neighbours .nb-strip img')];"
        " return s.length === 10 && s.every((i) => i.complete && i.naturalWidth > 0); }",
        timeout=120_000,
    )
    assert page.locator("#neighbours h3").all_inner_texts() == [
        f"predicted: {labels[0]}",
        f"runner-up: {labels[1]}",
    ]

    # LIME and SHAP on request, each with a visible progress indication while it computes
    for method, budget in (("lime", "80"), ("shap", "60")):
        panel = f"#panel-{method}"
        page.fill(f"{panel} .budget", budget)
        page.click(f"{panel} .run")
        page.wait_for_selector(f"{panel} .busy", state="visible", timeout=5_000)
        page.wait_for_function(
            f"() => {{ const i = document.querySelector('{panel} .frame img');"
            " return i && !i.hidden && i.complete && i.naturalWidth > 0; }",
            timeout=90_000,
        )
        assert page.is_hidden(f"{panel} .busy")
        assert budget in page.inner_text(f"{panel} .meta")

    # any other served method from the "Any method" panel: its budget input follows the chosen method
    panel = "#panel-more"
    options = page.eval_on_selector_all(f"{panel} .method option", "os => os.map((o) => o.value)")
    info = page.evaluate("() => fetch('/api/info').then((r) => r.json())")
    assert options == [m for m in info["methods"] if m not in ("gradcam", "lime", "shap")] + list(
        info["refused"]
    )
    for m, why in info[
        "refused"
    ].items():  # refused by this model: shown, not selectable, the reason as title
        option = page.locator(f"{panel} .method option[value='{m}']")
        assert option.is_disabled() and option.get_attribute("title") == why
    assert page.is_hidden(f"{panel} .budget-label")  # gradcam++, the first, has no budget parameter
    page.select_option(f"{panel} .method", "rise")
    assert page.inner_text(f"{panel} .budget-name") == "num masks"
    assert page.get_attribute(f"{panel} .budget", "max") == str(int(info["budget"]["rise_num_masks"]))
    page.fill(f"{panel} .budget", "40")
    page.click(f"{panel} .run")
    page.wait_for_function(
        f"() => {{ const i = document.querySelector('{panel} .frame img');"
        " return i && !i.hidden && i.complete && i.naturalWidth > 0; }",
        timeout=90_000,
    )
    meta = page.inner_text(f"{panel} .meta")
    assert meta.startswith("rise") and "num masks 40" in meta, meta

    shot = tmp_path / "birdlens-app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    with contextlib.suppress(OSError):  # the lead's copy is a convenience; the test's own screenshot counts
        shutil.copyfile(shot, LEAD_SCREENSHOT)

    # a bad file shows the server's reason and no stale prediction
    bad = tmp_path / "notes.jpg"
    bad.write_text("these are my field notes, not a photo")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.inner_text("#error")
    assert page.locator("#top5 li.sp").count() == 0
    # over the upload limit: said at once, without sending the bytes
    page.set_input_files(
        "#file", {"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": b"\xff" * (11 * 1024 * 1024)}
    )
    page.wait_for_function("() => document.querySelector('#error').textContent.includes('too large')")

    # an example thumbnail from the test split goes through the same upload path and shows its label
    first = page.locator("#examples button").first
    ex_label = first.get_attribute("data-label")
    first.click()
    page.wait_for_selector("#top5 li.sp")
    page.wait_for_selector("#truth .ok, #truth .bad")
    assert pretty(ex_label) in page.inner_text("#truth")
    assert page.is_hidden("#error")

    # clicking another species shows the Grad-CAM evidence for that species instead
    page.wait_for_function(
        "() => { const i = document.querySelector('#panel-gradcam .frame img');"
        " return i && !i.hidden && i.naturalWidth > 0; }",
        timeout=60_000,
    )
    second = page.locator("#top5 li.sp").nth(1)
    second_label = second.locator(".label").inner_text()
    second.click()
    page.wait_for_function(f"() => document.querySelector('#target-label').textContent === {second_label!r}")
    page.wait_for_function(
        "() => { const i = document.querySelector('#panel-gradcam .frame img');"
        " return i && !i.hidden && i.naturalWidth > 0; }",
        timeout=60_000,
    )
    assert "selected" in (second.get_attribute("class") or "")
    assert not errors, errors
    assert not external, f"the page fetched outside the server: {external}"
