"""Load check of ``birdlens serve``: N predict requests from C concurrent clients over loopback HTTP.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/app_load.py [--run RUN_DIR] [--requests 200] [--clients 8]

The server is the real ``birdlens serve`` in its own process on 127.0.0.1 (a free port). Without ``--run``,
a Lite0 linear probe on 4 species of ``../shared/data/birds`` is trained first into ``benchmarks/out/``
(reused on later runs). Photos are the run's valid and test images. Every image is first sent alone to record its
answer; under load every response must equal its own image's answer (same top-5 indices, probabilities
within 1e-6, same Grad-CAM map statistics) and have HTTP 200, else the script exits 1. It prints p50/p95/p99
latency, throughput, the server's queue wait, and the load average before and after, since on a shared
2-core machine the numbers move with whatever else runs.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BIRDLENS_QUIET", "1")

import httpx

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "birds"
OUT = REPO / "benchmarks" / "out" / "app_load"


def default_run() -> Path:
    run = OUT / "lite0-probe-4species"
    if (run / "best.safetensors").is_file():
        return run
    from birdlens.train.api import train
    from birdlens.train.config import TrainConfig

    print(f"training a Lite0 probe on 4 species of {SHARED} -> {run} (once)", flush=True)
    return train(
        TrainConfig(
            data=str(SHARED),
            out=str(run),
            model="efficientnet_lite0",
            mode="probe",
            top=4,
            per_class=16,
            quiet=True,
            feature_cache=str(OUT / "features"),
        ),
        evaluate=False,
        force=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run: Path, port: int, threads: int | None = None) -> subprocess.Popen[bytes]:
    """The real ``birdlens serve`` on 127.0.0.1:PORT, once it answers ``/healthz`` (``threads``: torch's own
    choice when None)."""
    cmd = [sys.executable, "-m", "birdlens.cli", "serve", "--run", str(run), "--host", "127.0.0.1"]
    cmd += ["--port", str(port)] + ([] if threads is None else ["--threads", str(threads)])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


def answer(resp: httpx.Response) -> tuple[list[int], list[float], dict[str, float]]:
    j = resp.json()
    stats = {k: v for k, v in j["gradcam"]["stats"].items() if k != "shape"}
    return [s["index"] for s in j["top"]], [s["prob"] for s in j["top"]], stats


def same(a: tuple, b: tuple) -> bool:
    return (
        a[0] == b[0]
        and all(abs(x - y) <= 1e-6 for x, y in zip(a[1], b[1], strict=True))
        and all(abs(a[2][k] - b[2][k]) <= 1e-6 for k in a[2])
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="training run to serve (default: a Lite0 probe trained once)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    args = ap.parse_args()

    from birdlens.runs.layout import run_manifest

    run = args.run or default_run()
    manifest = run_manifest(run)
    photos = sorted([*manifest.split("test"), *manifest.split("valid")], key=lambda r: str(r.path))
    if not photos:
        raise SystemExit(f"{run} has no test or valid images to send")
    blobs = [(Path(r.path).read_bytes(), r.label) for r in photos]
    port = free_port()
    load_before = os.getloadavg()
    proc = start_server(run, port, args.threads)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as c:
            classes = c.get("/api/info").json()["classes"]
            expected = []
            for data, _ in blobs:
                r = c.post("/api/predict", files={"image": ("photo.jpg", data, "image/jpeg")})
                r.raise_for_status()
                expected.append(answer(r))
        accuracy = sum(
            classes[e[0][0]] == label for e, (_, label) in zip(expected, blobs, strict=True)
        ) / len(blobs)

        latencies: list[float] = []
        queued: list[float] = []
        model_s: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()
        counter = iter(range(args.requests))

        def client() -> None:
            with httpx.Client(base_url=base, timeout=300) as c:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    k = (i * 7) % len(blobs)  # interleave images so neighbours differ
                    t0 = time.perf_counter()
                    try:
                        r = c.post("/api/predict", files={"image": (f"{i}.jpg", blobs[k][0], "image/jpeg")})
                    except httpx.HTTPError as e:
                        with lock:
                            failures.append(f"request {i}: {type(e).__name__}: {e}")
                        continue
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies.append(dt)
                        if r.status_code != 200:
                            failures.append(f"request {i}: HTTP {r.status_code} {r.text[:200]}")
                        elif not same(answer(r), expected[k]):
                            failures.append(f"request {i}: answer differs from image {k}'s own answer")
                        else:
                            queued.append(r.json()["queued_seconds"])
                            model_s.append(r.json()["seconds"])

        t0 = time.perf_counter()
        workers = [threading.Thread(target=client) for _ in range(args.clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    load_after = os.getloadavg()

    q = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) >= 2
        else [latencies[0]] * 99
    )
    print(
        f"run: {run}  ({len(classes)} classes; the served model is right on {accuracy:.1%} of the "
        f"{len(blobs)} valid+test photos sent)"
    )
    print(
        f"{args.requests} POST /api/predict (top-5 + Grad-CAM), {args.clients} concurrent clients, loopback, "
        f"server torch threads {args.threads}"
    )
    print(
        f"latency  p50 {1000 * q[49]:.0f} ms   p95 {1000 * q[94]:.0f} ms   p99 {1000 * q[98]:.0f} ms   "
        f"max {1000 * max(latencies):.0f} ms"
    )
    if queued:
        print(
            f"server side: queue wait median {1000 * statistics.median(queued):.0f} ms, model work (forward + "
            f"Grad-CAM + PNGs) median {1000 * statistics.median(model_s):.0f} ms"
        )
    print(f"throughput {len(latencies) / wall:.1f} req/s over {wall:.1f} s")
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores; > 2 means contended)"
    )
    ok = not failures and len(latencies) == args.requests
    print(f"errors / wrong answers: {len(failures)}" + ("" if ok else "  <-- FAIL"))
    for f in failures[:10]:
        print("  ", f)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
