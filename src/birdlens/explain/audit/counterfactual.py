"""The counterfactual that decides the audit: paste a suspect region onto other images and count flips.

The flip rate is a binomial proportion over recipient images, so its 95% interval is Wilson's (Wilson 1927),
which stays inside [0, 1] and behaves for small counts and rates near 0, where the normal interval does not.
Whether the suspect flips more than the control (other classes' pixels pasted in the same place onto the
same recipients) is a paired question, so it is answered by the exact sign test on the discordant pairs
(McNemar's test, exact form), which uses each recipient as its own control.
"""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of ``successes / trials`` (``(0, 1)`` for no trials: nothing is known)."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def paste(recipients: np.ndarray, donors: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``recipients [N, H, W, 3]`` with ``region [H, W]`` copied from ``donors`` (cycled: donor ``i % D``)."""
    if not region.any():
        raise ValueError("the region to paste is empty")
    out = recipients.copy()
    idx = np.arange(len(out)) % len(donors)
    out[:, region] = donors[idx][:, region]
    return out


def sign_test(more: int, fewer: int) -> float:
    """One-sided exact sign test: the chance of at least ``more`` of ``more + fewer`` discordant pairs going
    the suspect's way were both pastes alike (p = 1/2); 1.0 when no pair differs."""
    n = more + fewer
    if n <= 0:
        return 1.0
    return float(sum(math.comb(n, k) for k in range(more, n + 1)) / 2**n)
