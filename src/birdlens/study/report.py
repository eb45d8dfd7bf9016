"""One self-contained HTML report: every figure embedded, no network, readable offline and printable.

The runner gathers what each stage produced into a plain dict (also written as ``results.json``); this module
only lays it out. Sections follow the study's own order: data (Fig. 1), augmentation, GAN (Fig. 9), learning
curves (Fig. 2), confusion matrices (Fig. 5), the model table (Table 1), explanation panels (Figs. 6-8),
explanation quality, and a reproducibility footer.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from birdlens.utils.atomic import write_text

SECTIONS = (
    ("data", "1. Data"),
    ("augment", "2. Augmentation"),
    ("gan", "3. GAN samples"),
    ("curves", "4. Learning curves"),
    ("confusion", "5. Confusion matrices"),
    ("models", "6. Model comparison"),
    ("explain", "7. Explanations side by side"),
    ("explain_eval", "8. How good are the explanations?"),
    ("audit", "9. Shortcut audit"),
    ("footer", "10. Reproducibility"),
)

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:28px;margin:8px 0 4px} h2{font-size:21px;margin:36px 0 10px;padding-top:10px;border-top:2px solid #e3e6ec}
h3{font-size:16px;margin:20px 0 6px;color:#39435a}
.sub{color:#5b6478;margin:0 0 16px} .muted{color:#7a8396;font-size:13px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:14px} th,td{padding:5px 10px;border-bottom:1px solid #e3e6ec;text-align:left}
th{background:#f0f2f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{font-weight:600;background:#eef7ee}
figure{margin:10px 0 18px} figure img{max-width:100%;border:1px solid #e3e6ec;border-radius:4px}
figcaption{font-size:13px;color:#5b6478;margin-top:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px}
.warn{background:#fff6e5;border-left:4px solid #f0a500;padding:8px 12px;margin:8px 0}
.bad{color:#b42318;font-weight:600} .good{color:#18794e;font-weight:600}
.findings li{margin:4px 0} pre{background:#f4f5f8;padding:10px;overflow:auto;font-size:12px;max-height:420px}
nav a{margin-right:12px;font-size:13px}
@media print{body{background:#fff} main{padding:0} h2{page-break-before:auto} figure{page-break-inside:avoid}}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def embed_image(path: str | Path, alt: str = "", caption: str | None = None) -> str:
    """An <img> with the file inlined as a data URI (so the report is one file)."""
    p = Path(path)
    if not p.is_file():
        return f'<p class="warn">missing figure: {_esc(p.name)}</p>'
    mime = mimetypes.guess_type(p.name)[0] or "image/png"
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_esc(alt or p.stem)}" src="data:{mime};base64,{data}">{cap}</figure>'


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return _esc(v if v is not None else "—")


def html_table(
    rows: Iterable[dict[str, Any]], columns: list[tuple[str, str]], best: int | None = None
) -> str:
    rows = list(rows)
    head = "".join(f"<th>{_esc(label)}</th>" for _, label in columns)
    body = []
    for i, r in enumerate(rows):
        cells = "".join(
            f'<td class="num">{_fmt(r.get(k))}</td>'
            if isinstance(r.get(k), (int, float))
            else f"<td>{_fmt(r.get(k))}</td>"
            for k, _ in columns
        )
        body.append(f"<tr{' class=best' if i == best else ''}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figures(items: list[dict[str, Any]]) -> str:
    if not items:
        return ""
    return (
        '<div class="grid">'
        + "".join(embed_image(f["path"], f.get("alt", ""), f.get("caption")) for f in items)
        + "</div>"
    )


def render_report(results: dict[str, Any], sections_html: dict[str, str]) -> str:
    """Assemble the page from pre-rendered section bodies (a missing section says it was not run)."""
    title = results.get("title", "birdlens study")
    nav = "".join(f'<a href="#{key}">{_esc(label)}</a>' for key, label in SECTIONS)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_esc(title)}</h1><p class=sub>{_esc(results.get('subtitle', ''))}</p>",
    ]
    findings = results.get("findings") or []
    if findings:
        parts.append("<h3>Findings, as measured</h3><ul class=findings>")
        parts += [f"<li>{_esc(f)}</li>" for f in findings]
        parts.append("</ul>")
    parts.append(f"<nav>{nav}</nav>")
    for key, label in SECTIONS:
        body = sections_html.get(key) or '<p class="muted">Not part of this study.</p>'
        parts.append(f'<section id="{key}"><h2>{_esc(label)}</h2>{body}</section>')
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, results: dict[str, Any], sections_html: dict[str, str]) -> Path:
    page = render_report(results, sections_html)
    write_text(path, page)
    write_text(Path(path).with_name("results.json"), json.dumps(results, indent=2, default=str) + "\n")
    return Path(path)


figures_html = _figures
