"""Speed of RISE, Occlusion, Saliency, SmoothGrad and LRP: seconds per image, the multiple of the forward floor,
and ours vs captum (Occlusion, NoiseTunnel(Saliency)) side by side in one run on one 224 px photo.

The forward floor is (model evaluations the method needs) / (best inference throughput of the same model in
this run); a gradient method's evaluation is a forward *and* a backward, so its floor multiple is >= ~2-3 by
construction. Lite0 (pretrained, offline weights) runs every method but LRP, which refuses Lite0 (residual
blocks without a canonizer); LRP runs on ResNet-50 (random init), whose floor is measured too.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/methods_speed.py [--image PATH] [--quick] [--reps 2]
"""

from __future__ import annotations

import argparse
import os

import torch
from explain_speed import best_throughput, interleaved, load_image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image")
    ap.add_argument("--reps", type=int, default=2, help="alternating runs of ours and captum's (best kept)")
    ap.add_argument("--quick", action="store_true", help="smaller budgets (a smoke run)")
    ap.add_argument("--rise", type=int, default=500, help="RISE masks (the default 2000 takes 4x longer)")
    ap.add_argument("--only", default="occlusion,rise,saliency,smoothgrad,lrp", help="sections to run")
    args = ap.parse_args()
    only = set(args.only.split(","))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.environ.setdefault("BIRDLENS_QUIET", "1")
    from birdlens.explain import make_explainer
    from birdlens.models import create_model

    load0 = os.getloadavg()
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    lite = create_model("efficientnet_lite0", pretrained=True).eval().to(memory_format=torch.channels_last)
    x1 = ((torch.from_numpy(load_image(args.image)).permute(2, 0, 1)[None] - 0.5) / 0.5).contiguous()
    rate, rate_b = best_throughput(lite, x1)
    n_rise, n_sg = (100, 10) if args.quick else (args.rise, 50)
    print(f"load average before: {load0[0]:.2f}; Lite0 floor {rate:.1f} img/s (batch {rate_b})")
    print(f"{'method':<44} {'ours s':>8} {'captum s':>8} {'captum/ours':>11} {'evals':>6} {'x floor':>7}")

    def row(name: str, ours: float, evals: int, r: float, lib: float | None = None) -> None:
        ratio = f"{lib / ours:11.2f}" if lib else f"{'-':>11}"
        libs = f"{lib:8.2f}" if lib else f"{'-':>8}"
        print(f"{name:<44} {ours:8.2f} {libs} {ratio} {evals:6d} {ours / (evals / r):7.2f}", flush=True)

    target = int(lite(x1.contiguous(memory_format=torch.channels_last)).argmax())
    prob = lambda v: torch.softmax(lite(v), 1)  # noqa: E731  (our default score is the probability)

    if "occlusion" in only:
        occlusion_rows(lite, x1, target, prob, norm, rate, row, args.reps)
    if "rise" in only:
        rise = make_explainer("rise", lite, data_config=norm, num_masks=n_rise)
        row(
            f"rise {n_rise} masks", interleaved({"o": lambda: rise.explain(x1, target)}, 1)["o"], n_rise, rate
        )
    x16 = x1.expand(16, -1, -1, -1).contiguous() + 0.01 * torch.randn(16, 3, 224, 224)
    if "saliency" in only:
        sal = make_explainer("saliency", lite, data_config=norm)
        t = interleaved({"1": lambda: sal.explain(x1, target), "16": lambda: sal.explain(x16)}, args.reps)
        row("saliency (1 image)", t["1"], 1, rate)
        row("saliency (16 images, per image)", t["16"] / 16, 1, rate)
    if "smoothgrad" in only:
        smoothgrad_rows(lite, x1, target, norm, n_sg, rate, row, args.reps)
    if "lrp" in only:
        lrp_rows(x1, x16, norm, row, args.reps)
    load1 = os.getloadavg()
    print(f"load average after: {load1[0]:.2f}")


def occlusion_rows(lite, x1, target, prob, norm, rate, row, reps) -> None:
    from captum.attr import Occlusion as CaptumOcclusion

    from birdlens.explain import make_explainer

    occ = make_explainer("occlusion", lite, data_config=norm)  # window 32, stride 16: 169 windows
    ref = CaptumOcclusion(prob)
    evals = 1 + 13 * 13
    cap = {"sliding_window_shapes": (3, 32, 32), "strides": (3, 16, 16), "baselines": 0.0, "target": target}
    t = interleaved(
        {
            "ours": lambda: occ.explain(x1, target),
            "captum": lambda: ref.attribute(x1, **cap),
            "captum4": lambda: ref.attribute(x1, perturbations_per_eval=4, **cap),
        },
        reps,
    )
    theirs = ref.attribute(x1, **cap)[0, 0]
    diff = float((occ.explain(x1, target).maps[0] - theirs).abs().max()) / float(theirs.abs().max())
    print(f"occlusion: max |ours - captum| / max |captum| = {diff:.1e}")
    row("occlusion 32/16 (captum per_eval=1, default)", t["ours"], evals, rate, t["captum"])
    row("occlusion 32/16 (captum per_eval=4, as ours)", t["ours"], evals, rate, t["captum4"])


def smoothgrad_rows(lite, x1, target, norm, n_sg, rate, row, reps) -> None:
    from captum.attr import NoiseTunnel
    from captum.attr import Saliency as CaptumSaliency

    from birdlens.explain import make_explainer

    sg = make_explainer("smoothgrad", lite, data_config=norm, num_samples=n_sg)
    nt = NoiseTunnel(CaptumSaliency(lite))
    sigma = 0.15 * float(x1.max() - x1.min())
    t = interleaved(
        {
            "ours": lambda: sg.explain(x1, target),
            "captum": lambda: nt.attribute(
                x1, nt_type="smoothgrad", nt_samples=n_sg, stdevs=sigma, target=target
            ),
        },
        reps,
    )
    row(f"smoothgrad(saliency) {n_sg} samples", t["ours"], n_sg, rate, t["captum"])


def lrp_rows(x1, x16, norm, row, reps) -> None:
    """LRP on ResNet-50 (random init): ours, raw zennit with the same composite and canonizers (the
    'lib' column), and per image in a batch of 8."""
    from zennit.attribution import Gradient

    from birdlens.explain import make_explainer
    from birdlens.explain.methods.lrp import canonizers_for, make_composite
    from birdlens.models import create_model

    r50 = create_model("resnet50", num_classes=20, pretrained=False).eval()
    r50 = r50.to(memory_format=torch.channels_last)
    r50_rate, _ = best_throughput(r50, x1)
    lrp = make_explainer("lrp", r50, data_config=norm)
    onehot = torch.zeros(1, 20)
    onehot[0, int(lrp.explain(x1).target[0])] = 1

    def raw() -> None:
        composite = make_composite("epsilon_plus_flat", 1e-6, canonizers_for(r50))
        with Gradient(r50, composite) as attributor:
            attributor(x1.contiguous(memory_format=torch.channels_last), lambda out: onehot * out)

    t = interleaved({"1": lambda: lrp.explain(x1), "raw": raw, "8": lambda: lrp.explain(x16[:8])}, reps)
    print(f"ResNet-50 floor {r50_rate:.1f} img/s; the lib column of LRP is raw zennit")
    row("lrp epsilon_plus_flat, ResNet-50 (1 image)", t["1"], 1, r50_rate, t["raw"])
    row("lrp, ResNet-50 (8 images, per image)", t["8"] / 8, 1, r50_rate)


if __name__ == "__main__":
    main()
