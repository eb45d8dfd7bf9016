"""The report's evidence views: class-level part reliance on synthetic birds, and Grad-CAM heatmaps on the
highest-loss and most-confused test images."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from birdlens.study.report import embed_image, figures_html


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _cell(v: Any, star: bool = False) -> str:
    if v is None:
        return '<td class="num">—</td>'
    return f'<td class="num">{v:.3f}{"*" if star else ""}</td>'


def _table(head: list[str], rows: list[str]) -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def class_evidence_html(folder: Path) -> str:
    """Two per-class tables (the model's measured reliance on each part; each explainer's top part and its
    rank agreement with the model) and the heatmap figure, from ``folder/class_evidence.json``."""
    path = folder / "class_evidence.json"
    if not path.is_file():
        return ""
    ev = json.loads(path.read_text(encoding="utf-8"))
    parts, classes = ev["parts"], ev["classes"]
    rows = []
    for c in classes:
        key = set(ev["key_parts"].get(c, []))
        cells = "".join(_cell(v, p in key) for p, v in zip(parts, ev["drop"][c], strict=True))
        rows.append(f"<tr><td>{_esc(c)}</td><td class=num>{ev['n'][c]}</td>{cells}</tr>")
    reliance = _table(["class", "n", *parts], rows)
    methods = list(ev["share"])
    rows = []
    for c in classes:
        cells = "".join(
            f"<td>{_esc(ev['top_part'][m][c] or '—')} "
            f"({'—' if ev['agreement'][m][c] is None else format(ev['agreement'][m][c], '.2f')})</td>"
            for m in methods
        )
        rows.append(f"<tr><td>{_esc(c)}</td><td>{_esc(ev['top_part']['model'][c] or '—')}</td>{cells}</tr>")
    mean = "".join(
        f"<td class=num>{'—' if ev['mean_agreement'][m] is None else format(ev['mean_agreement'][m], '.2f')}</td>"
        for m in methods
    )
    rows.append(f"<tr><td><b>mean ρ</b></td><td></td>{mean}</tr>")
    agreement = _table(["class", "model's top part", *[f"{m}: top part (ρ)" for m in methods]], rows)
    fig = embed_image(
        folder / ev["figure"] if ev.get("figure") else folder / "missing.png",
        "class evidence",
        "Per class: the model's measured reliance on each part, then each explainer's share of map mass.",
    )
    return (
        "<h3>Class-level evidence</h3>"
        f"<p>For each class, {_esc(max(ev['n'].values()))} test birds re-rendered without each part in turn: "
        "the drop of the class's own probability is how much the model relies on that part (* marks the "
        "class's key parts, — a part the class lacks).</p>"
        + reliance
        + "<p>Beside it, the part holding the most map mass for each explainer and Spearman's ρ between the "
        "explainer's per-part shares and the measured drops (1: same order as the model).</p>"
        + agreement
        + fig
    )


def error_views_html(inputs: dict[str, dict[str, Any]]) -> str:
    """The Grad-CAM error views of every evaluated model (highest-loss images, most-confused pairs)."""
    items = []
    for name, s in inputs.items():
        if name.startswith("evaluate:"):
            model = s.get("entry", {}).get("name", name.split(":", 1)[1])
            for p in s.get("views") or []:
                what = "highest-loss images" if "top_loss" in Path(p).name else "most-confused pairs"
                cap = f"{model}: {what}; photo, Grad-CAM for the predicted class, Grad-CAM for the true class"
                items.append({"path": p, "caption": cap})
    if not items:
        return ""
    return "<h3>Where the model looked when it was wrong</h3>" + figures_html(items)
