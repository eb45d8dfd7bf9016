"""``audit.md``: the audit as a person reads it (one row per class, flagged first, with its evidence images);
the study report embeds the same section."""

from __future__ import annotations

from typing import Any


def audit_markdown(result: dict[str, Any], heading: str = "#", image_prefix: str = "") -> str:
    """Markdown of an ``audit.json`` dict; ``image_prefix`` is put before the evidence paths (relative links)."""
    classes = result["classes"]
    flagged = result.get("flagged", [])
    s = result.get("settings", {})
    lines = [
        f"{heading} Shortcut audit",
        "",
        f"{len(flagged)} of {len(classes)} classes flagged"
        + (
            f": {', '.join(flagged)}."
            if flagged
            else ": no class's evidence sits off the object in a way that moves predictions."
        ),
        "",
        f"Method {s.get('method', '?')}; {s.get('per_class', '?')} train images per class clustered (SpRAy); a class "
        f"is flagged when a compact off-object cluster's region, pasted onto other classes' test images, flips "
        f"them to the class with a 95% Wilson lower bound above {s.get('threshold', '?')} (and above a control "
        "that pastes other-class pixels there).",
        "",
        "| class | flagged | flip rate [95% CI] | control | background share | verdict | evidence |",
        "|---|---|---|---|---|---|---|",
    ]
    order = sorted(classes, key=lambda k: (not classes[k]["flagged"], -classes[k]["flip_rate"], k))
    for name in order:
        c = classes[name]
        lo, hi = c["ci95"]
        ev = " ".join(f"![{name}]({image_prefix}{p})" for p in c["evidence"])
        lines.append(
            f"| {name} | {'**yes**' if c['flagged'] else 'no'} | {c['flip_rate']:.2f} [{lo:.2f}, {hi:.2f}] "
            f"(n={c['n_recipients']}) | {c['control_rate']:.2f} | {c['background_reliance']:.2f} | "
            f"{c['verdict']} | {ev} |"
        )
    return "\n".join(lines) + "\n"
