"""Each new explanation-quality metric against its reference library, on the same photos, maps and draws.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/xmetrics_parity.py      # 16 shared photos, Lite0, 224 px

Model: ``efficientnet_lite0`` with its offline ImageNet weights (1000 classes, so the explained class is the
model's own prediction). Maps: input-gradient saliency (|dlogit/dx| summed over channels), the same function for
both sides, so only the metric differs. References, given birdlens' per-image draws the way the parity tests
do (``tests/test_xmetrics_new.py``): pytorch-grad-cam's ROAD averagers (``torch.randn_like`` fed the draws),
captum's ``infidelity`` (a ``perturb_func`` returning them), Quantus' ``MaxSensitivity``/``AvgSensitivity``/
``LocalLipschitzEstimate`` (a ``perturb_func``), ``Sparseness``/``Complexity`` and ``RandomLogit`` (its
``randint`` fed the draws), Quantus' normalisation set to per image. Prints per metric the largest relative
difference of the 16 values, each side's seconds and the ratio, from one run (the load average is printed:
the machine is shared). For the robustness metrics it also times the floor: the same explanation function on
all noisy copies, with no metric around it, and each side's time as a multiple of it.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds"
PER_IMAGE = {"normalise_axes": (1, 2, 3)}


def photos(n: int, data_config) -> torch.Tensor:  # type: ignore[no-untyped-def]
    from birdlens.data.images import load_rgb
    from birdlens.models import eval_transform

    files = sorted(SHARED.glob("test/*/*.jpg"))
    if len(files) < n:
        raise SystemExit(f"needs {n} photos under {SHARED}/test")
    step = len(files) // n  # spread over the species
    tf = eval_transform(data_config)
    return torch.stack([tf(load_rgb(f)) for f in files[::step][:n]])


def saliency(model, images, targets):  # type: ignore[no-untyped-def]
    out = []
    for s in range(0, images.shape[0], 16):
        x = torch.as_tensor(images[s : s + 16]).detach().clone().float().requires_grad_(True)
        t = torch.as_tensor(targets[s : s + 16]).view(-1, 1)
        model(x).gather(1, t).sum().backward()
        out.append(x.grad.abs().sum(1))
    return torch.cat(out)


def q_saliency(model, inputs, targets, **_):  # type: ignore[no-untyped-def]
    return saliency(model, inputs, targets).numpy()[:, None]


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return np.asarray(out, dtype=np.float64), time.perf_counter() - t0


def road_ref(order, model, x, maps, t, seed):  # type: ignore[no-untyped-def]
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from birdlens.explain.metrics.draws import image_rngs

    rngs, calls, real = image_rngs(x, seed), [0], torch.randn_like

    def draws(like):  # type: ignore[no-untyped-def]
        i = calls[0] % x.shape[0]
        calls[0] += 1
        return torch.from_numpy(rngs[i].standard_normal(tuple(like.shape), dtype=np.float32))

    cls = ROADMostRelevantFirstAverage if order == "morf" else ROADLeastRelevantFirstAverage
    torch.randn_like = draws
    try:
        return cls()(x, maps.numpy(), [ClassifierOutputSoftmaxTarget(int(i)) for i in t], model)
    finally:
        torch.randn_like = real


def infidelity_ref(model, x, maps, t, n, seed):  # type: ignore[no-untyped-def]
    from captum.metrics import infidelity

    from birdlens.explain.metrics.infidelity import pixel_noise

    pert = pixel_noise(x, n, 0.1, seed)

    def perturb(inputs):  # type: ignore[no-untyped-def]
        noise = pert.flatten(0, 1)[:, None].expand_as(inputs)
        return noise, inputs - noise

    with torch.no_grad():
        return infidelity(
            lambda inp: model(inp).softmax(-1),
            perturb,
            x,
            maps[:, None].expand_as(x) / x.shape[1],
            target=t,
            n_perturb_samples=n,
            normalize=True,
        ).numpy()


def quantus_robust(name, model, x, maps, t, n, seed):  # type: ignore[no-untyped-def]
    import quantus

    from birdlens.explain.metrics.robustness import input_noise

    kind, level = ("normal", 0.1) if name == "local_lipschitz" else ("uniform", 0.2)
    eps = input_noise(x, n, kind, level, seed).numpy().reshape(n, x.shape[0], -1)
    step = [0]

    def same(arr, indices, **_):  # type: ignore[no-untyped-def]
        out = (arr + eps[step[0]]).astype(arr.dtype)
        step[0] += 1
        return out

    cls, kw = {
        "max_sensitivity": (quantus.MaxSensitivity, {}),
        "avg_sensitivity": (quantus.AvgSensitivity, {}),
        "local_lipschitz": (quantus.LocalLipschitzEstimate, {"normalise_func_kwargs": PER_IMAGE}),
    }[name]
    metric = cls(nr_samples=n, disable_warnings=True, perturb_func=same, **kw)
    return metric(
        model=model,
        x_batch=x.numpy(),
        y_batch=t.numpy(),
        a_batch=maps.numpy()[:, None].copy(),
        explain_func=q_saliency,
        device="cpu",
        batch_size=x.shape[0],
    )


ROBUSTNESS = ("max_sensitivity", "avg_sensitivity", "local_lipschitz")


def explanation_floor(name, model, x, t, n, seed):  # type: ignore[no-untyped-def]
    """The saliency maps of the ``n * B`` noisy images alone, in one call: the least any implementation of
    the robustness metric has to compute (Quantus and birdlens both call the same explanation function)."""
    from birdlens.explain.metrics.robustness import input_noise

    kind, level = ("normal", 0.1) if name == "local_lipschitz" else ("uniform", 0.2)
    noisy = (x[None] + input_noise(x, n, kind, level, seed)).flatten(0, 1)
    return saliency(model, noisy, t.repeat(n))


def quantus_plain(name, model, x, maps, t, seed):  # type: ignore[no-untyped-def]
    import quantus

    from birdlens.explain.metrics.random_logit import off_picks

    a = maps.numpy()[:, None].copy()
    common = {
        "model": model,
        "x_batch": x.numpy(),
        "y_batch": t.numpy(),
        "a_batch": a,
        "batch_size": x.shape[0],
    }
    if name == "random_logit":
        picks, real = off_picks(x, 1000, seed), np.random.randint
        np.random.randint = lambda lo, hi, k: picks
        try:
            m = quantus.RandomLogit(
                num_classes=1000, seed=seed, disable_warnings=True, normalise_func_kwargs=PER_IMAGE
            )
            return m(**common, explain_func=q_saliency, device="cpu")
        finally:
            np.random.randint = real
    cls = quantus.Sparseness if name == "sparseness" else quantus.Complexity
    return cls(disable_warnings=True, normalise_func_kwargs=PER_IMAGE)(**common)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8, help="draws of infidelity and the robustness metrics")
    ap.add_argument("--only", default="", help="comma-separated metrics (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    warnings.filterwarnings("ignore")

    from birdlens.explain.metrics import get_metric
    from birdlens.models import create_model, get_model_info

    model = create_model("efficientnet_lite0", pretrained=True).eval()
    x = photos(args.images, get_model_info(model).data_config)
    with torch.no_grad():
        t = model(x).argmax(1)
    maps = saliency(model, x, t)
    seed, n = 0, args.samples
    cases = {
        "road_morf": (lambda: road_ref("morf", model, x, maps, t, seed), {}),
        "road_lerf": (lambda: road_ref("lerf", model, x, maps, t, seed), {}),
        "infidelity": (lambda: infidelity_ref(model, x, maps, t, n, seed), {"n_samples": n}),
        "max_sensitivity": (
            lambda: quantus_robust("max_sensitivity", model, x, maps, t, n, seed),
            {"n_samples": n},
        ),
        "avg_sensitivity": (
            lambda: quantus_robust("avg_sensitivity", model, x, maps, t, n, seed),
            {"n_samples": n},
        ),
        "local_lipschitz": (
            lambda: quantus_robust("local_lipschitz", model, x, maps, t, n, seed),
            {"n_samples": n},
        ),
        "sparseness": (lambda: quantus_plain("sparseness", model, x, maps, t, seed), {}),
        "complexity": (lambda: quantus_plain("complexity", model, x, maps, t, seed), {}),
        "random_logit": (lambda: quantus_plain("random_logit", model, x, maps, t, seed), {"flat": True}),
    }
    only = [m for m in args.only.split(",") if m] or list(cases)
    import captum.metrics  # noqa: F401  imports (seconds for Quantus) are not the metric's time
    import pytorch_grad_cam.metrics.road  # noqa: F401
    import quantus  # noqa: F401

    print(f"{args.images} photos, Lite0 224 px, saliency maps, {n} draws; load {os.getloadavg()[0]:.2f}")
    print(
        f"{'metric':16} {'max rel diff':>12} {'reference s':>12} {'birdlens s':>11} {'ratio':>7}"
        f" {'floor s':>8} {'ref/floor':>9} {'ours/floor':>10}"
    )
    for name in only:
        ref_fn, params = cases[name]
        floor = ""
        if name in ROBUSTNESS:  # the explanations every implementation must compute: S * B noisy maps
            _, t_floor = timed(lambda name=name: explanation_floor(name, model, x, t, n, seed))
        ref, t_ref = timed(ref_fn)
        metric = (
            get_metric(name, seed=seed, **params)
            if name not in ("sparseness", "complexity")
            else get_metric(name)
        )
        mine, t_mine = timed(lambda m=metric: m(model, x, maps, t, explain_fn=saliency))
        rel = np.max(np.abs(mine - ref) / np.maximum(np.abs(ref), 1e-12))
        if name in ROBUSTNESS:
            floor = f" {t_floor:8.2f} {t_ref / t_floor:8.2f}x {t_mine / t_floor:9.2f}x"
        print(f"{name:16} {rel:12.2e} {t_ref:12.2f} {t_mine:11.2f} {t_ref / t_mine:6.2f}x{floor}", flush=True)
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
