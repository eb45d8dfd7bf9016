"""What a run needs to be reproduced (versions, hardware, threads), and the one way a command sets torch's CPU
threads."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

_PACKAGES = ("birdlens", "torch", "torchvision", "timm", "numpy", "pillow", "scikit-learn", "lightning")


def set_threads(threads: int | None) -> None:
    """torch CPU threads: the flag, else OMP_NUM_THREADS, else torch's own choice."""
    import torch

    torch.set_num_threads(
        threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or torch.get_num_threads()
    )


def environment_info(seed: int | None = None) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "seed": seed,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # torch missing or broken: still report the rest
        info["device"] = "unknown"
    return info
