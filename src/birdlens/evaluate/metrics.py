"""Classification metrics computed from predicted probabilities: the numbers of ``metrics/<split>.json``.

Why a Wilson interval: with 180 test images an accuracy of 0.95 is ±0.03, and the normal approximation
misbehaves near 0 and 1 (it can leave [0, 1]); Wilson's score interval does not (Wilson 1927; Brown, Cai &
DasGupta 2001). Why ECE: a probe and a fine-tuned model with the same accuracy can differ a lot in how much
their probabilities can be trusted, and the explanation stage shows those probabilities to people.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when ``n == 0`` (nothing is known)."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean over seeds and its Student-t interval (infinite with one value): the interval for repeated runs,
    where Wilson's is the one for a single run's test proportion."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, float("-inf"), float("inf")
    h = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - h, m + h


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> list[dict[str, float]]:
    """Equal-width confidence bins ``(lo, hi]`` with their count, mean confidence and accuracy."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out = []
    for lo, hi in itertools.pairwise(edges):
        # (lo, hi] as in Guo et al. 2017; a confidence of exactly 0 falls in the first bin
        sel = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence >= lo) & (confidence <= hi)
        n = int(sel.sum())
        out.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "count": n,
                "confidence": float(confidence[sel].mean()) if n else float("nan"),
                "accuracy": float(correct[sel].mean()) if n else float("nan"),
            }
        )
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE = sum over bins of (bin count / N) * |accuracy(bin) - mean confidence(bin)|."""
    n = len(confidence)
    if n == 0:
        return float("nan")
    return float(
        sum(
            b["count"] / n * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(confidence, correct, n_bins)
            if b["count"]
        )
    )


def top_k_accuracy(probs: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of rows whose target is among the ``k`` highest probabilities (k is capped at the class count)."""
    probs = np.asarray(probs)
    if len(probs) == 0:
        return float("nan")
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(targets)[:, None]).any(axis=1).mean())


def most_confused(cm: np.ndarray, classes: Sequence[str], limit: int = 10) -> list[dict[str, Any]]:
    """Off-diagonal cells of a confusion matrix, largest first: which species the model mixes up."""
    pairs = [
        (int(cm[i, j]), i, j)
        for i in range(cm.shape[0])
        for j in range(cm.shape[1])
        if i != j and cm[i, j] > 0
    ]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [{"true": classes[i], "pred": classes[j], "count": c} for c, i, j in pairs[:limit]]


def classification_metrics(
    probs: np.ndarray, targets: np.ndarray, classes: Sequence[str], n_bins: int = 15
) -> dict[str, Any]:
    """Everything ``metrics/<split>.json`` holds, from class probabilities ``[N, C]`` and integer targets."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[0] != targets.shape[0]:
        raise ValueError(f"probs must be [N, C] with N = len(targets); got {probs.shape} and {targets.shape}")
    if probs.shape[1] != len(classes):
        raise ValueError(f"probs has {probs.shape[1]} columns but there are {len(classes)} classes")
    n = len(targets)
    labels = list(range(len(classes)))
    pred = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    correct = pred == targets
    k = int(correct.sum())
    lo, hi = wilson_interval(k, n)
    cm = (
        confusion_matrix(targets, pred, labels=labels) if n else np.zeros((len(classes),) * 2, dtype=np.int64)
    )
    prec, rec, f1, support = precision_recall_fscore_support(targets, pred, labels=labels, zero_division=0)
    conf = probs.max(axis=1) if n else np.zeros(0)
    eps = 1e-12
    nll = float(-np.log(np.clip(probs[np.arange(n), targets], eps, 1.0)).mean()) if n else float("nan")
    return {
        "n": n,
        "correct": k,
        "accuracy": k / n if n else float("nan"),
        "accuracy_ci95": [lo, hi],
        "top5_accuracy": top_k_accuracy(probs, targets, 5),
        "macro_f1": float(f1_score(targets, pred, labels=labels, average="macro", zero_division=0))
        if n
        else float("nan"),
        "nll": nll,
        "ece": expected_calibration_error(conf, correct, n_bins),
        "ece_bins": n_bins,
        "reliability": reliability_bins(conf, correct, n_bins),
        "per_class": {
            c: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "most_confused": most_confused(cm, classes),
        "confusion_matrix": cm.astype(int).tolist(),
        "classes": list(classes),
    }
