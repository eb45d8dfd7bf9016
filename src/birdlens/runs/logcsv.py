"""``log.csv``: one row per epoch (probe: per regularisation strength), readable by people and by the plots."""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any

from birdlens.utils.atomic import write_text

LOG_COLUMNS = (
    "epoch",
    "stage",
    "train_loss",
    "train_acc",
    "valid_loss",
    "valid_acc",
    "lr_head",
    "lr_backbone",
    "seconds",
    "images_per_s",
)


def write_log_csv(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(LOG_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def read_log_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of ``log.csv`` with numbers parsed (empty cells -> NaN)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if k == "stage":
                    row[k] = v
                else:
                    try:
                        row[k] = float(v) if v != "" else math.nan
                    except ValueError:
                        row[k] = v
            rows.append(row)
    return rows
