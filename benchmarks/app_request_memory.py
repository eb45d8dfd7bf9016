"""Peak memory of ``birdlens serve`` for the largest request it allows (issue 26): the largest upload it
decodes, then the largest explanation budget of each method with a budget parameter.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/app_request_memory.py [--run RUN_DIR]

The server is the real ``birdlens serve`` in its own process on 127.0.0.1; its peak resident memory
(``VmHWM`` in ``/proc/PID/status``) is read after start-up and after each request. The largest upload is a
PNG at the data layer's pixel limit (Pillow's ~89 Mpx), RGBA so its decode is as large as any format's; it
compresses to well under the 10 MB upload limit. Without ``--run``, a SimpleCNN probe on synthetic 3-colour
images (96 px) is trained once into ``benchmarks/out/app_memory``, so the upload path dominates; pass a real
run (e.g. a Lite0 probe) to see the explainers' share. Requests ask for the cap of each budget parameter and
the largest value ``/api/info`` declares for every other numeric parameter.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import time
import zlib
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BIRDLENS_QUIET", "1")

import httpx
import numpy as np
from app_load import free_port, start_server  # the same server start-up as the load check
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "app_memory"
COLOURS = {"RED BIRD": (200, 40, 40), "GREEN BIRD": (40, 180, 60), "BLUE BIRD": (40, 60, 200)}


def tiny_run() -> Path:
    run = OUT / "simple-cnn-colours"
    if (run / "best.safetensors").is_file():
        return run
    from birdlens.train.api import train
    from birdlens.train.config import TrainConfig

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        for label, colour in COLOURS.items():
            d = OUT / "data" / split / label
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = np.clip(np.array(colour) + rng.normal(0, 30, (96, 96, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    cfg = TrainConfig(
        data=str(OUT / "data"),
        out=str(run),
        model="simple_cnn",
        mode="probe",
        pretrained=False,
        image_size=96,
        quiet=True,
        feature_cache=str(OUT / "cache"),
    )
    return train(cfg, evaluate=False, force=True)


def largest_png() -> tuple[bytes, int]:
    """An RGBA PNG at the pixel limit, made by streaming zlib (the raw pixels never exist here)."""
    side = math.isqrt(int(Image.MAX_IMAGE_PIXELS or 89_478_485))
    rows = [b"\0" + bytes((40 + k * 50, 90, 200, 255)) * side for k in range(4)]
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(rows[(y // 500) % 4]) for y in range(side)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""), side


def vm(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` memory line, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    raise KeyError(key)


def budget_key(info: dict, method: str) -> str | None:
    """The budget parameter of ``method``, as ``/api/info`` names its cap (``<method>_<param>``)."""
    keys = [k for k in info["budget"] if k.startswith(f"{method}_") and k != f"{method}_default"]
    return keys[0][len(method) + 1 :] if keys else None


def largest_params(info: dict, method: str) -> dict[str, int]:
    """The budget cap of ``method`` and the declared maximum of its other integer parameters."""
    key = budget_key(info, method)
    assert key is not None, method
    out = {key: int(info["budget"][f"{method}_{key}"])}
    for name, spec in (info.get("params") or {}).get(method, {}).items():
        if name != key and spec.get("type") == "int" and isinstance(spec.get("max"), int):
            out[name] = int(spec["max"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="training run to serve (default: a tiny SimpleCNN run)")
    args = ap.parse_args()
    run = args.run or tiny_run()
    png, side = largest_png()
    port = free_port()
    proc, base = start_server(run, port), f"http://127.0.0.1:{port}"
    rows = []
    try:
        with httpx.Client(base_url=base, timeout=600) as c:
            info = c.get("/api/info").json()
            rows.append(("after start-up", "-", vm(proc.pid, "VmHWM")))
            t = time.perf_counter()
            r = c.post("/api/predict", files={"image": ("big.png", png, "image/png")})
            what = f"predict, {side}x{side} RGBA PNG ({len(png) / 2**20:.2f} MB)"
            rows.append((what, f"{r.status_code} in {time.perf_counter() - t:.1f} s", vm(proc.pid, "VmHWM")))
            for method in [m for m in info["methods"] if budget_key(info, m) is not None]:
                params = largest_params(info, method)
                t = time.perf_counter()
                r = c.post(
                    "/api/explain",
                    files={"image": ("big.png", png, "image/png")},
                    data={"method": method, "params": json.dumps(params)},
                )
                status = f"{r.status_code} in {time.perf_counter() - t:.1f} s"
                if r.status_code != 200:
                    is_json = r.headers.get("content-type", "").startswith("application/json")
                    status += f" ({r.json().get('detail') if is_json else r.text[:200]})"
                rows.append((f"explain {method} {params}, same PNG", status, vm(proc.pid, "VmHWM")))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    print(f"run: {run} ({info['model']}, {info['image_size']} px)")
    for what, status, hwm in rows:
        print(f"{what:<70} {status:<40} peak RSS {hwm} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
