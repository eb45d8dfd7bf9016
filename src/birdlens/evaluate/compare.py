"""The study's Table 1 from run directories: model, mode, augmentation, test accuracy (95 % CI), macro-F1,
train time, parameters. Rendered as a rich table, CSV, Markdown or JSON."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from birdlens.runs import layout
from birdlens.utils.atomic import write_text

COLUMNS = (
    "run",
    "model",
    "mode",
    "augment",
    "accuracy",
    "ci95_low",
    "ci95_high",
    "macro_f1",
    "n",
    "train_seconds",
    "params_m",
)


def compare_runs(run_dirs: Sequence[str | os.PathLike[str]], split: str = "test") -> list[dict[str, Any]]:
    """One row per run (from ``meta.json`` and ``metrics/<split>.json``); a run without metrics gets blanks."""
    rows = []
    for rd in run_dirs:
        rd = Path(rd)
        meta_path = rd / layout.META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{rd} is not a training run (no meta.json)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        mpath = rd / layout.METRICS_DIR / f"{split}.json"
        m = json.loads(mpath.read_text(encoding="utf-8")) if mpath.is_file() else {}
        ci = m.get("accuracy_ci95") or [None, None]
        params = (meta.get("params") or {}).get("total")
        rows.append(
            {
                "run": rd.name,
                "model": meta.get("model"),
                "mode": meta.get("mode"),
                "augment": meta.get("augment"),
                "accuracy": m.get("accuracy"),
                "ci95_low": ci[0],
                "ci95_high": ci[1],
                "macro_f1": m.get("macro_f1"),
                "n": m.get("n"),
                "train_seconds": meta.get("train_seconds"),
                "params_m": round(params / 1e6, 2) if params else None,
            }
        )
    return rows


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _display(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["run", "model", "mode", "augment", "test acc (95% CI)", "macro-F1", "train time", "params (M)"]
    body = []
    for r in rows:
        acc = (
            "—"
            if r["accuracy"] is None
            else f"{r['accuracy']:.3f} [{r['ci95_low']:.3f}, {r['ci95_high']:.3f}]"
        )
        t = r["train_seconds"]
        body.append(
            [
                r["run"],
                _fmt(r["model"]),
                _fmt(r["mode"]),
                _fmt(r["augment"]),
                acc,
                _fmt(r["macro_f1"]),
                "—" if t is None else (f"{t:.0f} s" if t < 120 else f"{t / 60:.1f} min"),
                _fmt(r["params_m"], 2),
            ]
        )
    return head, body


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    head, body = _display(rows)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def rich_table(rows: Sequence[dict[str, Any]], title: str = "Table 1") -> Any:
    from rich.table import Table

    head, body = _display(rows)
    table = Table(title=title)
    for h in head:
        table.add_column(h, justify="right" if h not in ("run", "model", "mode", "augment") else "left")
    for b in body:
        table.add_row(*b)
    return table


def write_table(rows: Sequence[dict[str, Any]], out: str | os.PathLike[str]) -> list[Path]:
    """Write by suffix (``.csv``, ``.md``, ``.json``); any other name writes all three beside it."""
    out = Path(out)
    writers = {
        ".csv": to_csv,
        ".md": to_markdown,
        ".json": lambda r: json.dumps(list(r), indent=2, ensure_ascii=False) + "\n",
    }
    targets = [out] if out.suffix in writers else [out.with_name(out.name + s) for s in writers]
    for t in targets:
        write_text(t, writers[t.suffix](rows))
    return targets
