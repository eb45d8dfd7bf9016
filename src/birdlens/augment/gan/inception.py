"""Optional standard FID (Inception-v3 features), only when the user supplies the Inception weights file.

birdlens does not download anything for this: pass the path of torch-fidelity's
``pt_inception-2015-12-05-6726825d.pth`` (the weights every published FID uses) and install
``torch-fidelity``; torchmetrics then computes FID exactly as the literature does (2048-d pool features,
299 px). Without the file, use FD-lite0 (``metrics.py``), which is not comparable with published FID.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def inception_fid(
    real: torch.Tensor, fake: torch.Tensor, weights: str | os.PathLike[str], batch_size: int = 32
) -> float:
    """FID between uint8 image batches [N, 3, H, W] with the Inception weights at ``weights``."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights not found at {path} (pt_inception-2015-12-05-6726825d.pth)"
        )
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as e:  # pragma: no cover - torchmetrics is a birdlens dependency of lightning
        raise RuntimeError("standard FID needs torchmetrics") from e
    try:
        fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path))
    except (ImportError, ModuleNotFoundError) as e:
        raise RuntimeError("standard FID needs torch-fidelity: pip install torch-fidelity") from e
    for i in range(0, len(real), batch_size):
        fid.update(real[i : i + batch_size], real=True)
    for i in range(0, len(fake), batch_size):
        fid.update(fake[i : i + batch_size], real=False)
    return float(fid.compute())
