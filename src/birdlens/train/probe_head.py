"""Fitting the linear head of a probe on cached features, and choosing its regularisation on valid.

Both solvers minimise the same objective, multinomial logistic regression on standardised features with an
L2 penalty (scikit-learn's ``C`` convention: loss = C * sum(CE) + ||W||^2 / 2), so their results agree and
``benchmarks/train_accuracy.py`` can compare them fairly:

* ``lbfgs``: full-batch torch L-BFGS with strong-Wolfe line search, warm-started along the C grid;
* ``sklearn``: ``sklearn.linear_model.LogisticRegression`` (lbfgs).

The fitted ``(W, b)`` absorbs the standardisation, so it drops into the model's own ``nn.Linear`` head.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class ProbeFit:
    weight: torch.Tensor  # [C, D] in raw feature space
    bias: torch.Tensor  # [C]
    c: float
    solver: str
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # one row per C tried


def _standardise(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std < 1e-6] = 1.0
    return mean, std


def _fold(
    w: np.ndarray, b: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits = W (x - m)/s + b = (W/s) x + (b - (W/s) m)."""
    w_raw = w / std[None, :]
    b_raw = b - w_raw @ mean
    return torch.from_numpy(w_raw.astype(np.float32)), torch.from_numpy(b_raw.astype(np.float32))


def _scores(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    logits = torch.from_numpy(x @ w.T + b)
    yt = torch.from_numpy(y)
    return float(F.cross_entropy(logits, yt)), float((logits.argmax(1) == yt).double().mean())


def _fit_lbfgs(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    c: float,
    init: tuple[np.ndarray, np.ndarray] | None,
    max_iter: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    xt = torch.from_numpy(x).double()
    yt = torch.from_numpy(y)
    n, d = xt.shape
    w = torch.zeros(n_classes, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    if init is not None:
        with torch.no_grad():
            w.copy_(torch.from_numpy(init[0]))
            b.copy_(torch.from_numpy(init[1]))
    reg = 1.0 / (2.0 * c * n)  # sklearn objective divided by C*n
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w.T + b, yt) + reg * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def _fit_sklearn(x: np.ndarray, y: np.ndarray, c: float, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=2000, tol=1e-6)
    clf.fit(x, y)
    w = np.zeros((n_classes, x.shape[1]))
    b = np.zeros(n_classes)
    w[clf.classes_] = clf.coef_ if len(clf.classes_) > 2 else np.vstack([-clf.coef_, clf.coef_]) / 2
    b[clf.classes_] = clf.intercept_ if len(clf.classes_) > 2 else np.array([-1, 1]) * clf.intercept_ / 2
    return w, b


def fit_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray | None,
    y_valid: np.ndarray | None,
    n_classes: int,
    c_grid: Sequence[float] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
    solver: Literal["lbfgs", "sklearn"] = "lbfgs",
) -> ProbeFit:
    """Fit one head per C, keep the best on valid (accuracy, then loss); without valid data use C=1."""
    t0 = time.perf_counter()
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training split has fewer than 2 classes: a classifier needs at least 2")
    mean, std = _standardise(x_train)
    xs = ((x_train - mean) / std).astype(np.float64)
    have_valid = x_valid is not None and y_valid is not None and len(y_valid) > 0
    xv = ((x_valid - mean) / std).astype(np.float64) if have_valid else None  # type: ignore[operator]
    grid = sorted(c_grid) if have_valid else [1.0]
    history: list[dict[str, float]] = []
    best: tuple[tuple[float, float], float, np.ndarray, np.ndarray] | None = None
    init = None
    for c in grid:
        t = time.perf_counter()
        if solver == "lbfgs":
            w, b = _fit_lbfgs(xs, y_train, n_classes, c, init)
            init = (w, b)  # warm start: larger C continues from the smaller C's optimum
        elif solver == "sklearn":
            w, b = _fit_sklearn(xs, y_train, c, n_classes)
        else:
            raise ValueError(f"unknown probe solver {solver!r}: use lbfgs or sklearn")
        tr_loss, tr_acc = _scores(w, b, xs, y_train)
        row = {"c": c, "train_loss": tr_loss, "train_acc": tr_acc, "seconds": time.perf_counter() - t}
        if have_valid:
            va_loss, va_acc = _scores(w, b, xv, y_valid)  # type: ignore[arg-type]
            row.update(valid_loss=va_loss, valid_acc=va_acc)
            score = (va_acc, -va_loss)
        else:
            score = (tr_acc, -tr_loss)
        history.append(row)
        if best is None or score > best[0]:
            best = (score, c, w, b)
    assert best is not None
    weight, bias = _fold(best[2], best[3], mean, std)
    return ProbeFit(
        weight=weight, bias=bias, c=best[1], solver=solver, seconds=time.perf_counter() - t0, history=history
    )
