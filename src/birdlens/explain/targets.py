"""Which class an explanation is for: ``--target CLASS`` (a name or an index) or ``--top-k K`` (the K most likely).

Resolved once, against the run's class names, before anything is written, so a typo costs one error line.
Whether the head is softmax or sigmoid (multi-label) is the run's fact (:func:`birdlens.runs.trained.head_of`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

import torch

#: the contrast keyword: each image's likeliest class other than the one explained
RUNNER_UP = "runner-up"


class TargetError(ValueError):
    """A ``--target`` or ``--top-k`` that does not fit the run's classes (the CLI prints it and exits 2)."""


def resolve_target(target: int | str, classes: Sequence[str], what: str = "target") -> int:
    """The class index for ``target``: a class name (exact, then case-insensitive) or an index (``3`` or ``"3"``;
    a string that is also a class name means that class). ``what`` names the option in errors."""
    n = len(classes)
    if isinstance(target, bool):
        raise TargetError(f"{what} must be a class name or an index, got {target!r}")
    text = str(target).strip()
    if isinstance(target, str) and text in classes:  # a name first: a class may be called "3"
        return list(classes).index(text)
    if isinstance(target, int) or text.lstrip("-").isdigit():
        idx = int(text)
        if not 0 <= idx < n:
            raise TargetError(f"{what} index {idx} is out of range: the model has {n} classes (0..{n - 1})")
        return idx
    folded = [c.lower() for c in classes]
    if text.lower() in folded:
        return folded.index(text.lower())
    close = difflib.get_close_matches(text.lower(), folded, n=3, cutoff=0.6)
    if close:
        hint = "did you mean " + ", ".join(repr(classes[folded.index(c)]) for c in close) + "?"
    else:
        hint = f"the classes are {list(classes)} (or an index 0..{n - 1})"
    raise TargetError(f"unknown {what} class {text!r}: {hint}")


def resolve_contrast(contrast: int | str, classes: Sequence[str]) -> int | str:
    """``--contrast``: a class index (from a name or an index, as :func:`resolve_target`) or :data:`RUNNER_UP`
    (a class of that name wins, as names win over indices)."""
    if (
        isinstance(contrast, str)
        and contrast.strip().lower() == RUNNER_UP
        and contrast.strip() not in classes
    ):
        return RUNNER_UP
    return resolve_target(contrast, classes, what="contrast")


def runner_up(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row, the class with the highest logit other than ``target`` (ties: the lower index), ``[B]``."""
    masked = logits.detach().float().clone()
    masked.scatter_(1, target.view(-1, 1).to(masked.device), float("-inf"))
    return masked.argmax(1)


def check_top_k(top_k: int, n_classes: int) -> int:
    """``top_k`` when ``1 <= top_k <= n_classes``, else one :class:`TargetError` saying the range."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= n_classes:
        raise TargetError(
            f"top_k must be an integer from 1 to {n_classes} (the model's classes), got {top_k!r}"
        )
    return top_k


def check_target_options(target: int | str | None, top_k: int | None, classes: Sequence[str]) -> int | None:
    """Validate the pair: at most one of them; returns the resolved target index (``None`` otherwise)."""
    if target is not None and top_k is not None:
        raise TargetError(f"give either a target ({target!r}) or top_k ({top_k!r}), not both")
    if top_k is not None:
        check_top_k(top_k, len(classes))
    return None if target is None else resolve_target(target, classes)


def top_k_classes(logits: torch.Tensor, k: int) -> list[int]:
    """The ``k`` classes with the highest logits of one image, most likely first (ties: lower index first).

    Logits rank classes the same way softmax and sigmoid probabilities do, so this holds for either head."""
    order = torch.sort(logits.detach().float().reshape(-1), descending=True, stable=True).indices
    return [int(i) for i in order[:k]]


def file_slug(text: str, empty: str) -> str:
    """``text`` as a safe file-name part (runs of other characters become ``_``; ``empty`` when none is left):
    the one rule for the image and class names in an explanation run's file names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or empty


def class_slug(classes: Sequence[str], index: int) -> str:
    """Class ``index`` as it appears in file names (``METHOD/IMAGE__CLASS.npy``); when two class names give the
    same slug, the index is added so that no map overwrites another."""
    slugs = [file_slug(c, "class") for c in classes]
    return slugs[index] if slugs.count(slugs[index]) == 1 else f"{slugs[index]}_{index}"
