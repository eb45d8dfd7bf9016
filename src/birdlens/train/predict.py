"""Top-k predictions for image files with a trained run: one bad file never stops the others."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from birdlens.runs.trained import TrainedModel


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "label": self.top[0][0],
            "probability": self.top[0][1],
            "top": [{"label": lbl, "probability": p} for lbl, p in self.top],
        }


def predict_files(
    trained: TrainedModel, paths: Sequence[str | os.PathLike[str]], top_k: int = 5, batch_size: int = 16
) -> list[Prediction]:
    """One :class:`Prediction` per path, in order; unreadable files get ``error`` (one short sentence)."""
    from birdlens.data.images import BadImage, load_rgb

    tf = trained.transform()
    k = max(1, min(top_k, len(trained.classes)))
    results: list[Prediction] = [Prediction(str(p)) for p in paths]
    ok: list[tuple[int, torch.Tensor]] = []
    for i, p in enumerate(paths):
        try:
            img = load_rgb(p)
            ok.append((i, tf(img)))
        except BadImage as e:
            results[i].error = e.reason
        except Exception as e:  # a library failure on one file must not lose the others
            results[i].error = f"could not be read ({type(e).__name__}: {str(e)[:100]})"
    for start in range(0, len(ok), batch_size):
        chunk = ok[start : start + batch_size]
        x = torch.stack([t for _, t in chunk]).contiguous(memory_format=torch.channels_last)
        probs = trained.predict_proba(x).numpy()
        for (i, _), pr in zip(chunk, probs, strict=True):
            order = np.argsort(-pr, kind="stable")[:k]
            results[i].top = [(trained.classes[j], float(pr[j])) for j in order]
    return results
