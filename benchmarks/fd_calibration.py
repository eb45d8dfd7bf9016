"""What an FD-lite0 number means: real images against blurred, resized and noisy copies of themselves.

Why: the cgan's FD-lite0 on the synthetic birds stalled while its samples looked like the right birds,
only blurred. This puts FD values next to known, simple degradations of the real images, so a GAN's number can be
read ("as far as the real set blurred by 1.2 px"), and it showed that Lite0 features punish blur hard
(measured: docs/benchmarks.md#gan-what-fd-lite0-means).

    OMP_NUM_THREADS=2 python benchmarks/fd_calibration.py                      # synthetic birds, ~2 min
    OMP_NUM_THREADS=2 python benchmarks/fd_calibration.py --data ../shared/data/birds

Each row: FD-lite0 between the train split and a transformed copy of the same images (one FD over all classes,
not matched per class), at the GAN's resolution (``--size``, default 64 px); the first row is the held-out
test split against the train split, the yardstick a GAN cannot be expected to beat.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from birdlens.augment.gan.data import load_images, resolve_manifest, to_unit
from birdlens.augment.gan.features import Lite0Features, extract
from birdlens.augment.gan.metrics import frechet_distance


def degradations(seed: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Named transforms of images in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)

    def noise(sd: float) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: (x + sd * torch.randn(x.shape, generator=g)).clamp(-1, 1)

    def blur(sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: TF.gaussian_blur(x, kernel_size=2 * round(3 * sigma) + 1, sigma=sigma)

    def resize(factor: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: F.interpolate(
            F.interpolate(x, scale_factor=1 / factor, mode="area"),
            size=x.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )

    return {
        "identity (sanity: 0)": lambda x: x,
        "noise sd 0.05": noise(0.05),
        "noise sd 0.2": noise(0.2),
        "blur sigma 0.5 px": blur(0.5),
        "blur sigma 0.8 px": blur(0.8),
        "blur sigma 1.2 px": blur(1.2),
        "blur sigma 2 px": blur(2.0),
        "2x down, bilinear up": resize(2),
        "4x down, bilinear up": resize(4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", default=None, help="dataset (default: the synthetic birds, 10 classes x 70 train)"
    )
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = args.data
    if data is None:
        from birdlens.data.synth import generate_dataset

        data = tempfile.mkdtemp(prefix="birdlens_fdcal_")
        generate_dataset(data, classes=10, per_class=100, size=64, seed=0, quiet=True)
    m = resolve_manifest(data)
    train = to_unit(load_images(m.split("train"), args.size).images)
    test = to_unit(load_images(m.split("test"), args.size).images)
    feats = Lite0Features()
    f_train = extract(feats, train)
    print(f"FD-lite0 against the {len(train)} train images at {args.size} px ({data})\n")
    print("| compared with | FD-lite0 |\n|---|---:|")
    print(f"| the {len(test)} held-out test images | {frechet_distance(f_train, extract(feats, test)):.1f} |")
    for name, fn in degradations(args.seed).items():
        print(f"| train, {name} | {frechet_distance(f_train, extract(feats, fn(train))):.1f} |", flush=True)


if __name__ == "__main__":
    main()
