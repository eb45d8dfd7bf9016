"""``birdlens serve``'s JSON API through FastAPI's TestClient, on a tiny run made by the real ``train`` API.

The tiny run (see ``_apputil``) is a SimpleCNN probe on red / green / blue noise images: it predicts the
colour, so answers can be checked.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from _apputil import COLOURS, big_png, encode, make_tiny_run, noisy
from birdlens.app.budget import Budget
from birdlens.app.server import create_app, create_app_from_run
from birdlens.app.service import ModelService
from birdlens.app.tasks import Watch
from birdlens.app.uploads import DEFAULT_MAX_UPLOAD_BYTES, BodyLimitMiddleware


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("app_tiny"))


@pytest.fixture(scope="module")
def client(tiny_run: Path):
    with TestClient(create_app_from_run(tiny_run)) as c:
        yield c


def post_image(
    client: TestClient, data: bytes, url: str = "/api/predict", filename: str = "photo.png", **form: str
):
    return client.post(url, files={"image": (filename, data, "application/octet-stream")}, data=form or None)


# ---- service basics -----------------------------------------------------------------------------------
def test_health_info_openapi_and_no_cdn_docs(client: TestClient, tiny_run: Path) -> None:
    h = client.get("/healthz").json()
    assert h == {"status": "ok", "model": "simple_cnn", "run": f"{tiny_run.parent.name}/run", "queue": 0}
    info = client.get("/api/info").json()
    assert info["classes"] == sorted(COLOURS) and info["image_size"] == 96
    assert info["max_upload_bytes"] == DEFAULT_MAX_UPLOAD_BYTES == 10 * 1024 * 1024
    schema = client.get("/openapi.json").json()
    for path in (
        "/api/predict",
        "/api/explain",
        "/healthz",
        "/api/examples",
        "/api/tasks",
        "/api/tasks/{task_id}",
    ):
        assert path in schema["paths"], path
    body = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body
    assert "Prediction" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_page_and_assets_are_local(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="drop"' in page.text and "/static/app.js" in page.text
    for asset in ("app.js", "style.css", "favicon.svg"):
        r = client.get(f"/static/{asset}")
        assert r.status_code == 200, asset
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        for token in ("http://", "https://", "//cdn", "@import"):
            if token == "http://" and "http://www.w3.org/2000/svg" in text:
                continue
            assert token not in text, f"external reference {token!r} in a page asset"


# ---- predictions --------------------------------------------------------------------------------------
@pytest.mark.parametrize("label", sorted(COLOURS))
def test_predict_top5_and_gradcam(client: TestClient, label: str) -> None:
    r = post_image(client, encode(noisy(COLOURS[label], seed=7)))
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["top"][0]["label"] == label
    probs = [s["prob"] for s in p["top"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4
    ev = p["gradcam"]
    assert (
        ev["method"] == "gradcam"
        and ev["target_label"] == label
        and ev["params"]["layer"] == "features.2.act"
    )
    assert ev["stats"]["shape"] == [96, 96] and 0 <= ev["stats"]["min"] <= ev["stats"]["max"] <= 1.0 + 1e-6
    for key in ("overlay_png",):
        assert ev[key].startswith("data:image/png;base64,")
    overlay = Image.open(io.BytesIO(__import__("base64").b64decode(ev["overlay_png"].split(",", 1)[1])))
    assert overlay.size == (96, 96) and overlay.mode == "RGB"
    assert p["model"]["model"] == "simple_cnn" and p["width"] == 96


def test_predict_probabilities_match_the_trained_model(client: TestClient, tiny_run: Path) -> None:
    from birdlens.data.images import load_rgb
    from birdlens.runs.trained import load_trained

    trained = load_trained(tiny_run)
    path = sorted((Path(json.loads((tiny_run / "meta.json").read_text())["data"]) / "test").rglob("*.png"))[0]
    want = trained.predict_proba(trained.transform()(load_rgb(path))[None])[0].numpy()
    assert np.allclose(_probs(client, path.read_bytes()), want, atol=1e-5)


def _probs(client: TestClient, data: bytes) -> np.ndarray:
    r = post_image(client, data)
    assert r.status_code == 200, r.text
    out = np.zeros(3)
    for s in r.json()["top"]:
        out[s["index"]] = s["prob"]
    return out


def test_png_with_alpha_is_composited_on_grey(client: TestClient) -> None:
    rgba = np.zeros((96, 96, 4), np.uint8)
    rgba[..., :3] = noisy(COLOURS["RED BIRD"], seed=3)
    rgba[24:72, 24:72, 3] = 255  # an opaque red square; the rest is transparent (and red underneath)
    grey_bg = np.full((96, 96, 3), 128, np.uint8)
    grey_bg[24:72, 24:72] = rgba[24:72, 24:72, :3]
    got = _probs(client, encode(rgba))
    assert np.allclose(got, _probs(client, encode(grey_bg)), atol=1e-5)
    # proof the alpha mattered: the same pixels without alpha answer differently
    assert not np.allclose(got, _probs(client, encode(rgba[..., :3])), atol=1e-3)


def test_cmyk_jpeg_is_accepted_like_the_data_layer(client: TestClient) -> None:
    from birdlens.data.images import decode_rgb, open_image

    cmyk = encode(Image.fromarray(noisy(COLOURS["GREEN BIRD"], seed=5)).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(cmyk)).mode == "CMYK"
    expected = decode_rgb(open_image(cmyk))  # what training would have seen
    got = _probs(client, cmyk)
    assert np.argmax(got) == 1
    assert np.allclose(got, _probs(client, encode(np.asarray(expected))), atol=1e-5)


def test_exif_orientation_is_applied(client: TestClient) -> None:
    arr = np.full((96, 96, 3), 128, np.uint8)
    arr[:, :48] = COLOURS["RED BIRD"]
    arr[:, 48:] = COLOURS["BLUE BIRD"]
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 3  # rotate 180: left/right swap
    r1 = post_image(client, encode(img, "PNG", exif=exif))
    r2 = post_image(client, encode(arr[::-1, ::-1].copy()))
    assert r1.status_code == r2.status_code == 200
    assert r1.json()["gradcam"]["stats"] == r2.json()["gradcam"]["stats"]


def test_large_phone_photo_decodes_at_draft_scale_and_reports_its_size(client: TestClient) -> None:
    big = np.kron(noisy(COLOURS["BLUE BIRD"], seed=8, size=100), np.ones((30, 40, 1), np.uint8))  # 4000x3000
    img = Image.fromarray(big)
    exif = img.getexif()
    exif[0x0112] = 6  # shown rotated: 3000 wide, 4000 high
    r = post_image(client, encode(img, "JPEG", quality=85, exif=exif))
    assert r.status_code == 200, r.text
    p = r.json()
    assert (p["width"], p["height"]) == (3000, 4000)
    assert p["top"][0]["label"] == "BLUE BIRD"


def test_reduce_rgb_equals_converting_then_reducing_the_whole_image(monkeypatch: pytest.MonkeyPatch) -> None:
    from birdlens.app import uploads
    from birdlens.data.images import to_rgb

    monkeypatch.setattr(uploads, "STRIP_PIXELS", 1000)  # many strips, and a last one that is cut short
    a = np.random.default_rng(0).integers(0, 256, (301, 257, 4), dtype=np.uint8)
    rgb = Image.fromarray(a[..., :3])
    images = {
        "RGB": rgb,
        "RGBA": Image.fromarray(a),
        "LA": Image.fromarray(a).convert("LA"),
        "P": rgb.quantize(64),
        "1": Image.fromarray(a[..., 0]).convert("1"),
        "CMYK": rgb.convert("CMYK"),
        "I;16": Image.fromarray(a[..., 0].astype(np.uint16) * 257),
        "I": Image.fromarray(a[..., 0].astype(np.int32) * 3 - 100),
        "F": Image.fromarray(a[..., 0].astype(np.float32) / 300),
    }
    keyed = rgb.quantize(64)
    keyed.info["transparency"] = 3  # a palette entry that is transparent: composited on grey
    images["P+transparency"] = keyed
    for name, img in images.items():
        for factor in (2, 3, 7):
            got, want = uploads.reduce_rgb(img, factor), to_rgb(img).reduce(factor)
            assert got.mode == "RGB" and np.array_equal(np.asarray(got), np.asarray(want)), (name, factor)


def test_large_png_is_reduced_before_the_model_and_stays_upright(client: TestClient, tiny_run: Path) -> None:
    from birdlens.data.images import decode_rgb, open_image
    from birdlens.runs.trained import load_trained

    arr = np.kron(noisy(COLOURS["GREEN BIRD"], seed=12, size=100), np.ones((30, 40, 1), np.uint8))
    img = Image.fromarray(arr)  # 4000 x 3000
    exif = img.getexif()
    exif[0x0112] = 8  # shown rotated: 3000 wide, 4000 high
    data = encode(img, "PNG", exif=exif)
    got = _probs(client, data)
    trained = load_trained(tiny_run)
    full = trained.transform()(decode_rgb(open_image(data)))  # every pixel decoded and resized at once
    want = trained.predict_proba(full[None])[0].numpy()
    assert np.argmax(got) == np.argmax(want) == 1
    assert np.allclose(got, want, atol=2e-3)
    p = post_image(client, data).json()
    assert (p["width"], p["height"]) == (3000, 4000)


_PEAK_SCRIPT = """
import resource, sys
from birdlens.app.uploads import decode_upload
from birdlens.models import resize_size
from birdlens.runs.trained import load_trained
trained = load_trained(sys.argv[1])
transform = trained.transform()
data = open(sys.argv[2], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
img = decode_upload(data, draft_size=resize_size(trained.data_config, trained.image_size))
x = transform(img)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(img.size[0], img.size[1], (after - before) * 1024)
"""


def test_a_9000px_png_costs_about_its_decoded_size_not_several_copies(tiny_run: Path, tmp_path: Path) -> None:
    """Issue 26: a 99 KB 9000 x 9000 grey PNG (under the pixel limit) cost ~390 MB; the 81 MB decode must be
    the only full-size buffer (no RGB copy, no EXIF copy, no full-size resize input)."""
    import subprocess
    import sys

    path = tmp_path / "big.png"
    path.write_bytes(big_png(9000, 9000, (90,), rows=300))
    assert path.stat().st_size < 200_000
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(tiny_run), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.split()
    w, h, grown = (int(v) for v in out)
    decoded = 9000 * 9000  # bytes of the one-channel decode Pillow cannot avoid
    assert grown < 2 * decoded, f"peak memory grew by {grown / 2**20:.0f} MB"
    assert min(w, h) < 9000 // 10  # reduced before anything else touched it


# ---- bad input ----------------------------------------------------------------------------------------
def _bomb_png() -> bytes:
    """A valid small PNG whose header claims 30000 x 30000 pixels (900 Mpx): never decoded."""
    data = bytearray(encode(np.zeros((8, 8, 3), np.uint8)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", 30000, 30000)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("text", b"hello, I am not a picture\n" * 20, "not an image"),
        ("empty", b"", "empty"),
        ("truncated", encode(noisy((90, 90, 90), seed=1), "JPEG", quality=90)[:1500], "truncated"),
        ("bomb", _bomb_png(), "decompression bomb"),
        ("html", b"<html><script>alert(1)</script></html>", "not an image"),
    ],
)
def test_bad_images_get_400_with_a_reason(client: TestClient, name: str, payload: bytes, reason: str) -> None:
    for url in ("/api/predict", "/api/explain", "/api/tasks"):
        r = post_image(client, payload, url=url)
        assert r.status_code == 400, (name, url, r.text)
        assert reason in r.json()["detail"], (name, r.json())


def test_missing_image_field_is_422(client: TestClient) -> None:
    r = client.post("/api/predict", data={"method": "gradcam"})
    assert r.status_code == 422


def test_upload_over_the_limit_is_413(client: TestClient) -> None:
    # just over 10 MB: the body fits the multipart allowance, the file part does not
    big = b"\xff\xd8\xff" + b"\0" * DEFAULT_MAX_UPLOAD_BYTES
    r = post_image(client, big)
    assert r.status_code == 413 and "the limit is 10.0 MB" in r.json()["detail"]
    # far over: refused from the Content-Length header
    r = post_image(client, b"\0" * (DEFAULT_MAX_UPLOAD_BYTES + 200_000))
    assert r.status_code == 413
    # no Content-Length (chunked): refused while streaming
    boundary = "birdlensboundary"

    def chunks():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        for _ in range(11):
            yield b"\0" * (1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/api/predict",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 413, r.text
    assert client.get("/healthz").status_code == 200  # and the server still answers


def test_body_limit_middleware_rejects_by_header_without_reading() -> None:
    reads: list[int] = []
    sent: list[dict] = []

    async def app(scope, receive, send):  # pragma: no cover - must not be called
        raise AssertionError("the app must not run for an oversized declared body")

    async def receive():
        reads.append(1)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg):
        sent.append(msg)

    mw = BodyLimitMiddleware(app, max_body_bytes=1000)
    scope = {"type": "http", "headers": [(b"content-length", b"5000")]}
    asyncio.run(mw(scope, receive, send))
    assert sent[0]["status"] == 413 and not reads


def test_client_filenames_are_never_paths(client: TestClient, tmp_path: Path) -> None:
    target = tmp_path / "evil.png"
    for name in (
        str(target),
        "../../../../" + str(target).lstrip("/"),
        "a\x00b.png",
        "..",
        "ünïcode 名前.png",
    ):
        r = post_image(client, encode(noisy(COLOURS["BLUE BIRD"], seed=9)), filename=name)
        assert r.status_code == 200, (name, r.text)
        assert r.json()["top"][0]["label"] == "BLUE BIRD"
    assert not target.exists()


# ---- explanations -------------------------------------------------------------------------------------
def test_explain_methods_and_budget(client: TestClient) -> None:
    img = encode(noisy(COLOURS["RED BIRD"], seed=11))
    r = post_image(client, img, url="/api/explain", method="lime", params=json.dumps({"num_samples": 40}))
    assert r.status_code == 200, r.text
    ev = r.json()
    assert ev["method"] == "lime" and ev["params"]["num_samples"] == 40 and ev["target_label"] == "RED BIRD"
    assert ev["stats"]["min"] < ev["stats"]["max"] and ev["map"] is None
    r = post_image(client, img, url="/api/explain", method="ig", params='{"steps": 4}', target="0")
    assert r.status_code == 200 and r.json()["target"] == 0


# the methods issue 24 added, each with a small request (its budget, where it has one, far below the cap)
ADDED_METHODS = {
    "gradcam++": {},
    "layercam": {},
    "hirescam": {},
    "xgradcam": {},
    "eigencam": {},
    "scorecam": {"batch_size": 32},
    # the tiny model's raw Ablation-CAM is negative everywhere, so its normalised map is 0: ask for the raw one
    "ablationcam": {"batch_size": 32, "normalize": False},
    "occlusion": {"window": 32, "stride": 32},
    "rise": {"num_masks": 16, "grid": 4},
    "saliency": {},
    "smoothgrad": {"num_samples": 3},
    "lrp": {},
}


def test_the_page_offers_every_method_but_the_random_baseline(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert set(ADDED_METHODS) | {"gradcam", "lime", "shap", "ig"} == set(info["methods"])
    assert "random" not in info["methods"] and info["refused"] == {}  # the SimpleCNN is a plain ReLU CNN
    assert info["budget"]["rise_num_masks"] == Budget().rise_max_masks
    assert info["budget"]["smoothgrad_num_samples"] == Budget().smoothgrad_max_samples
    assert info["params"]["smoothgrad"]["base"]["choices"][:2] == ["gradcam", "gradcam++"]  # from the classes


@pytest.mark.parametrize("method", sorted(ADDED_METHODS))
def test_each_added_method_is_served_with_its_map(client: TestClient, method: str) -> None:
    img = encode(noisy(COLOURS["RED BIRD"], seed=11))
    r = post_image(
        client,
        img,
        url="/api/explain",
        method=method,
        params=json.dumps(ADDED_METHODS[method]),
        include_map="true",
    )
    assert r.status_code == 200, r.text
    ev = r.json()
    m = np.array(ev["map"], dtype=np.float32)
    assert ev["method"] == method and ev["target_label"] == "RED BIRD" and ev["notes"] == []
    assert m.shape == (96, 96) and np.isfinite(m).all() and m.max() > m.min()
    assert np.isclose(m.max(), ev["stats"]["max"], atol=1e-6)
    for k, v in ADDED_METHODS[method].items():
        assert ev["params"][k] == v, (k, ev["params"])


def test_smoothgrad_over_gradcam_is_served_at_the_runs_cam_layer(client: TestClient) -> None:
    img = encode(noisy(COLOURS["RED BIRD"], seed=11))
    params = '{"num_samples": 2, "base": "gradcam"}'
    r = post_image(client, img, url="/api/explain", method="smoothgrad", params=params, include_map="true")
    assert r.status_code == 200, r.text
    ev = r.json()
    assert (
        ev["params"]["base"] == "gradcam"
        and ev["params"]["layer"] == client.get("/api/info").json()["cam_layer"]
    )
    m = np.array(ev["map"], dtype=np.float32)
    assert m.shape == (96, 96) and m.min() == 0 and m.max() == pytest.approx(1)  # a normalised CAM


def test_added_budgets_are_capped_and_memory_ranges_refused(tiny_run: Path) -> None:
    svc = ModelService.from_run(tiny_run, budget=Budget(rise_max_masks=8, smoothgrad_max_samples=2))
    with TestClient(create_app(svc)) as c:
        img = encode(noisy(COLOURS["RED BIRD"], seed=11))
        r = post_image(c, img, url="/api/explain", method="rise", params='{"num_masks": 999999, "grid": 4}')
        assert r.status_code == 200, r.text
        ev = r.json()
        assert ev["params"]["num_masks"] == 8 and ev["notes"] == [
            "num_masks 999999 capped to 8 (server budget)"
        ]
        r = post_image(c, img, url="/api/explain", method="smoothgrad")  # no params: the default, capped too
        assert r.status_code == 200 and r.json()["params"]["num_samples"] == 2
        for method, params, msg in [
            ("scorecam", '{"batch_size": 65}', "scorecam: batch_size must be <= 64"),
            ("occlusion", '{"batch_size": 65}', "occlusion: batch_size must be <= 64"),
            ("smoothgrad", '{"base": "scorecam"}', "smoothgrad: base must be one of 'gradcam', 'gradcam++'"),
            ("smoothgrad", '{"base_params": {"batch_size": 64}}', "number, string or boolean"),
        ]:
            r = post_image(c, img, url="/api/explain", method=method, params=params)
            assert r.status_code == 400 and msg in r.json()["detail"], (method, r.text)


def test_smoothgrad_over_a_budgeted_base_pays_for_the_base(tiny_run: Path) -> None:
    b = Budget(max_base_passes=100)
    ig_steps = b.default("ig")
    used, notes = b.clamp("smoothgrad", {"base": "ig", "num_samples": 90})
    # the base runs at the server's default for it, and samples x steps stays within the passes
    assert used["base_params"] == {"steps": ig_steps} and used["num_samples"] == 100 // ig_steps
    assert notes == [
        f"num_samples 90 capped to {100 // ig_steps} (server budget; {ig_steps} passes of the base each)"
    ]
    assert b.expected_forwards("smoothgrad", used) == (100 // ig_steps) * ig_steps
    # a base without a budget of its own costs one pass a sample: only smoothgrad's own cap applies
    used, notes = b.clamp("smoothgrad", {"base": "gradcam", "num_samples": 90})
    assert used == {"base": "gradcam", "num_samples": 90} and notes == []
    svc = ModelService.from_run(tiny_run, budget=Budget(max_base_passes=2 * b.default("ig")))
    with TestClient(create_app(svc)) as c:
        img = encode(noisy(COLOURS["RED BIRD"], seed=12))
        r = post_image(c, img, url="/api/explain", method="smoothgrad", params='{"base": "ig"}')
        assert r.status_code == 200, r.text
        ev = r.json()
        assert ev["params"]["num_samples"] == 2 and ev["params"]["base_params"]["steps"] == ig_steps


def test_a_method_the_served_model_refuses_is_not_offered(tiny_run: Path) -> None:
    from birdlens.runs.trained import load_trained

    trained = load_trained(tiny_run)
    for module in list(trained.model.modules()):
        for child, sub in list(module.named_children()):
            if isinstance(sub, torch.nn.ReLU):
                setattr(module, child, torch.nn.SiLU())
    with TestClient(create_app(ModelService(trained, run_name="silu"))) as c:
        info = c.get("/api/info").json()
        assert "lrp" not in info["methods"] and "lrp" not in info["params"] and "saliency" in info["methods"]
        assert "'lrp' is refused on this model (it has a SiLU activation)" in info["refused"]["lrp"]
        r = post_image(c, encode(noisy(COLOURS["RED BIRD"], seed=2)), url="/api/explain", method="lrp")
        assert r.status_code == 400 and r.json()["detail"] == info["refused"]["lrp"]
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        fields = [b["properties"]["method"] for b in schema.values() if "method" in b.get("properties", {})]
        enums = [
            f["enum"] for f in fields if "enum" in f
        ]  # the forms' fields (the answers' are plain strings)
        assert len(enums) == 2 and all(e == info["methods"] for e in enums)  # /api/explain and /api/tasks


def test_lime_takes_every_seed_its_range_allows(client: TestClient) -> None:
    # quickshift's C int seed overflowed from 2**31: a 500 found by benchmarks/app_request_memory.py
    img = encode(noisy(COLOURS["RED BIRD"], seed=11))
    for seed in (2**31, 2**32 - 1):
        params = json.dumps({"num_samples": 20, "seed": seed})
        r = post_image(client, img, url="/api/explain", method="lime", params=params)
        assert r.status_code == 200 and r.json()["params"]["seed"] == seed, r.text


def test_explain_requests_are_capped_to_the_budget(tiny_run: Path) -> None:
    svc = ModelService.from_run(tiny_run, budget=Budget(shap_max_evals=40, lime_max_samples=30))
    with TestClient(create_app(svc)) as c:
        img = encode(noisy(COLOURS["RED BIRD"], seed=11))
        r = post_image(
            c,
            img,
            url="/api/explain",
            method="shap",
            params='{"max_evals": 999999}',
            target="2",
            include_map="true",
        )
        assert r.status_code == 200, r.text
        ev = r.json()
        assert ev["params"]["max_evals"] == 40 and "capped to 40" in ev["notes"][0] and ev["target"] == 2
        m = np.array(ev["map"], dtype=np.float32)
        assert m.shape == (96, 96) and np.isclose(m.max(), ev["stats"]["max"], atol=1e-6)
        r = post_image(c, img, url="/api/explain", method="lime")  # no params: the default, capped too
        assert r.status_code == 200 and r.json()["params"]["num_samples"] == 30


@pytest.mark.parametrize(
    ("form", "msg"),
    [
        ({"method": "nope"}, "unknown method"),
        ({"method": "lime", "params": "{not json"}, "JSON object"),
        ({"method": "lime", "params": "[1, 2]"}, "JSON object"),
        ({"method": "lime", "params": '{"num_samples": -3}'}, ">= 1"),
        ({"method": "lime", "params": '{"mean": 0.5}'}, "set by the server"),
        ({"method": "lime", "params": '{"num_samples": 20, "bogus_option": 1}'}, "bogus_option"),
        ({"method": "gradcam", "target": "17"}, "class index"),
    ],
)
def test_explain_bad_parameters_get_400(client: TestClient, form: dict[str, str], msg: str) -> None:
    r = post_image(client, encode(noisy(COLOURS["RED BIRD"], seed=2)), url="/api/explain", **form)
    assert r.status_code == 400, r.text
    assert msg in r.json()["detail"]


@pytest.mark.parametrize(
    ("params", "msg"),
    [
        ('{"num_samples": Infinity}', "JSON object"),  # not JSON: was int(inf) -> OverflowError -> 500
        ('{"num_samples": NaN}', "JSON object"),
        ('{"num_samples": 1e400}', "finite number"),  # valid JSON that parses to inf
        ('{"seed": 1000000000000000000000000000000}', "out of range"),  # was a 500 from numpy
        ('{"num_samples": 20, "kernel_width": "%s"}' % ("x" * 500), "longer than"),
        ('{"num_samples": [1, 2]}', "number, string or boolean"),
        ("[" * 2000 + "]" * 2000, "JSON object"),  # deeper than json's recursion limit: was a 500
        ("[" * 100_000 + "]" * 100_000, "at most 4096 characters"),  # 422 from the declared maxLength
    ],
)
def test_params_outside_the_wire_format_get_4xx_naming_them(
    client: TestClient, params: str, msg: str
) -> None:
    r = post_image(
        client, encode(noisy(COLOURS["RED BIRD"], seed=2)), url="/api/explain", method="lime", params=params
    )
    assert 400 <= r.status_code < 500, r.text
    assert msg in str(r.json()["detail"]), r.json()


def test_unknown_form_fields_are_refused_by_name(client: TestClient) -> None:
    img = encode(noisy(COLOURS["RED BIRD"], seed=2))
    for url, field in (("/api/explain", "param"), ("/api/tasks", "include_map"), ("/api/predict", "method")):
        r = post_image(client, img, url=url, **{field: "1"})
        assert r.status_code == 400, (url, r.text)
        assert f"unknown form field {field!r}" in r.json()["detail"] and "image" in r.json()["detail"]


@pytest.mark.parametrize(
    ("error", "status", "msg"),
    [
        (
            RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: 24 GB"),
            503,
            "out of memory",
        ),
        (MemoryError(), 503, "out of memory"),
        (ValueError("steps must be in 1..128, got 0"), 400, "steps must be in 1..128"),
    ],
)
def test_worker_failures_a_client_can_act_on_are_not_500(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, status: int, msg: str
) -> None:
    svc = ModelService.from_run(tiny_run)

    def fail(*_a: object, **_k: object) -> None:
        raise error

    monkeypatch.setattr(svc, "_explain", fail)
    with TestClient(create_app(svc), raise_server_exceptions=False) as c:
        r = post_image(c, encode(noisy(COLOURS["RED BIRD"], seed=2)), url="/api/explain", method="ig")
        assert r.status_code == status and msg in r.json()["detail"], r.text
    svc = ModelService.from_run(tiny_run)
    monkeypatch.setattr(svc, "_explain", lambda *_a, **_k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with TestClient(create_app(svc), raise_server_exceptions=False) as c:  # other errors stay a 500
        r = post_image(c, encode(noisy(COLOURS["RED BIRD"], seed=2)), url="/api/explain", method="ig")
        assert r.status_code == 500


def test_openapi_declares_exactly_what_the_forms_take(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    bodies = {
        path: schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
        for path in ("/api/predict", "/api/explain", "/api/tasks")
    }
    components = schema["components"]["schemas"]
    for path, ref in bodies.items():
        body = components[ref.rsplit("/", 1)[1]]
        assert body["additionalProperties"] is False, path
        assert body["required"] == ["image"], path
    explain = components[bodies["/api/explain"].rsplit("/", 1)[1]]["properties"]
    assert explain["method"]["enum"] == client.get("/api/info").json()["methods"]
    assert (
        explain["method"]["enum"][:2] == ["gradcam", "gradcam++"]
        and "random" not in explain["method"]["enum"]
    )
    assert explain["params"]["contentMediaType"] == "application/json"
    assert explain["target"]["minimum"] == 0 and explain["target"]["maximum"] == len(COLOURS) - 1
    assert set(explain) == {"image", "method", "params", "target", "include_map", "contrast"}


def test_heavy_method_stops_at_the_time_budget(tiny_run: Path) -> None:
    svc = ModelService.from_run(tiny_run, budget=Budget(timeout_s=1e-9))
    with TestClient(create_app(svc)) as c:
        r = post_image(
            c,
            encode(noisy(COLOURS["RED BIRD"], seed=2)),
            url="/api/explain",
            method="lime",
            params='{"num_samples": 2000}',
        )
        assert r.status_code == 504 and "budget" in r.json()["detail"]
        assert (
            post_image(c, encode(noisy(COLOURS["RED BIRD"], seed=2))).status_code == 200
        )  # model free again


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_a_method_without_a_budget_sizes_its_progress_by_the_rows_it_announces(
    tiny_run: Path, method: str
) -> None:
    svc = ModelService.from_run(tiny_run)
    prep = svc.prepare(Image.fromarray(noisy(COLOURS["RED BIRD"], seed=13)))
    seen: list[tuple[int | None, int]] = []
    real_tick = Watch.tick

    def tick(self: Watch, n: int = 1) -> None:
        seen.append((self.total, n))
        real_tick(self, n)

    Watch.tick = tick  # type: ignore[method-assign]
    try:
        task = svc.submit_explain(prep, method, {}, None)
        task.future.result(timeout=120)
    finally:
        Watch.tick = real_tick  # type: ignore[method-assign]
    # no budget parameter: nothing is known before the method sees the layer, then one row a channel
    assert task.result is not None
    layer = dict(svc.trained.model.named_modules())[str(task.result.params["layer"])]
    acts: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: acts.append(out))
    with torch.no_grad():
        svc.trained.model(prep.x)
    handle.remove()
    totals = [t for t, _ in seen if t is not None]
    assert seen[0][0] is None and totals[-1] == acts[0].shape[1], (seen, acts[0].shape)
    assert sum(n for t, n in seen if t is not None) >= totals[-1]  # every announced row ran


def test_a_full_queue_answers_503(tiny_run: Path) -> None:
    with TestClient(create_app(ModelService.from_run(tiny_run), max_pending=0)) as c:
        r = post_image(c, encode(noisy(COLOURS["RED BIRD"], seed=2)))
        assert r.status_code == 503 and "busy" in r.json()["detail"] and r.headers["retry-after"] == "5"


def test_tasks_report_progress_and_can_be_cancelled(client: TestClient) -> None:
    img = encode(noisy(COLOURS["GREEN BIRD"], seed=4))
    r = post_image(
        client, img, url="/api/tasks", method="lime", params='{"num_samples": 120, "batch_size": 8}'
    )
    assert r.status_code == 202, r.text
    tid = r.json()["id"]
    seen: list[float] = []
    for _ in range(2000):
        s = client.get(f"/api/tasks/{tid}").json()
        seen.append(s["progress"])
        if s["state"] in ("done", "error", "cancelled"):
            break
        threading.Event().wait(0.02)
    assert s["state"] == "done", s
    assert s["progress"] == 1.0 and seen == sorted(seen)
    assert s["result"]["method"] == "lime" and s["result"]["target_label"] == "GREEN BIRD"

    # a long task, cancelled: it stops at its next model forward
    r = post_image(
        client, img, url="/api/tasks", method="lime", params='{"num_samples": 2000, "batch_size": 4}'
    )
    tid = r.json()["id"]
    assert client.delete(f"/api/tasks/{tid}").status_code == 200
    for _ in range(2000):
        s = client.get(f"/api/tasks/{tid}").json()
        if s["state"] in ("done", "error", "cancelled"):
            break
        threading.Event().wait(0.02)
    assert s["state"] == "cancelled", s
    assert client.get("/api/tasks/does-not-exist").status_code == 404


def test_concurrent_requests_get_their_own_answers(client: TestClient) -> None:
    images = [encode(noisy(COLOURS[label], seed=50 + i)) for i, label in enumerate(sorted(COLOURS) * 4)]
    images += [
        encode(np.random.default_rng(s).integers(0, 256, (96, 96, 3), dtype=np.uint8)) for s in range(4)
    ]
    serial = [post_image(client, img).json() for img in images]

    def call(i: int) -> tuple[int, dict]:
        return i, post_image(client, images[i]).json()

    order = [i for _ in range(3) for i in range(len(images))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, order))
    assert len(results) == 3 * len(images)
    for i, got in results:
        want = serial[i]
        assert [s["index"] for s in got["top"]] == [s["index"] for s in want["top"]]
        assert np.allclose([s["prob"] for s in got["top"]], [s["prob"] for s in want["top"]], atol=1e-6)
        g, w = dict(got["gradcam"]["stats"]), dict(want["gradcam"]["stats"])
        assert g.pop("shape") == w.pop("shape") and g == pytest.approx(w, abs=1e-6)
    # different images really do give different answers, so a mix-up could not go unnoticed
    assert len({json.dumps([round(s["prob"], 6) for s in r["top"]]) for r in serial}) == len(images)


# ---- examples and CLI ---------------------------------------------------------------------------------
def test_examples_come_from_the_test_split_by_index(client: TestClient, tiny_run: Path) -> None:
    exs = client.get("/api/examples").json()
    assert [e["label"] for e in exs[:3]] == sorted(COLOURS) and len(exs) == 6
    test_dir = Path(json.loads((tiny_run / "meta.json").read_text())["data"]) / "test"
    files = {p.read_bytes() for p in test_dir.rglob("*.png")}
    for e in exs:
        r = client.get(e["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content in files
    assert client.get(f"/api/examples/{len(exs)}/image").status_code == 404
    assert client.get("/api/examples/-1/image").status_code == 404
    assert client.get("/api/examples/..%2F..%2Fmeta.json/image").status_code in (404, 422)


def test_serve_cli_binds_loopback_by_default(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from birdlens.cli import app

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda a, **kw: calls.append({"app": a, **kw}))
    res = CliRunner().invoke(app, ["serve", "--run", str(tiny_run), "--port", "8123"])
    assert res.exit_code == 0, res.output
    assert calls[0]["host"] == "127.0.0.1" and calls[0]["port"] == 8123
    res = CliRunner().invoke(
        app, ["serve", "--run", str(tiny_run), "--host", "0.0.0.0", "--max-upload-mb", "1"]
    )
    assert res.exit_code == 0 and calls[1]["host"] == "0.0.0.0"
    with TestClient(calls[1]["app"]) as c:
        assert c.get("/api/info").json()["max_upload_bytes"] == 1024 * 1024
