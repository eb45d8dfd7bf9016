"""Host-to-device copies of the small random draws a GAN step makes, without stalling the host.

Why: every random number of a step is drawn on the CPU generator (so a CUDA run draws the very numbers a CPU run
draws, and resume restores one generator state). A plain ``.to("cuda")`` of such a tensor copies from pageable
memory, and that copy makes the host wait until the GPU has finished everything queued before it: 43 times per
step of the cgan recipe (4 draws per D update, 7 per DiffAugment call; two D updates, five calls). Copying from
pinned memory with ``non_blocking=True`` queues the copy and returns; PyTorch's pinned-memory cache keeps the
source block until the copy has run (the step time it saves on a GPU: docs/benchmarks.md, "GAN").
"""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t.to(device)``; from the CPU to a CUDA device through pinned memory, without a host sync."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
