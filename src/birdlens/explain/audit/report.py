"""``audit.md``: the audit as a person reads it (one row per class, flagged first, with its evidence images);
the study report embeds the same section."""

from __future__ import annotations

from typing import Any


def rule_text(settings: dict[str, Any]) -> str:
    """The audit's decision rule in one sentence, with the settings it ran with (the report and audit.md)."""
    s = settings
    alpha = s.get("alpha")
    beats = (
        f"more often than a control pasting other classes' pixels in the same place (paired sign test, p < {alpha})"
        if alpha is not None
        else "more often than a control pasting other classes' pixels in the same place"
    )
    background = (
        f"; a region off the object that is no mark must also flip them {beats}"
        if s.get("flag_background")
        else ""
    )
    control = f", and {beats}" if s.get("mark_control") else ""
    return (
        f"Method {s.get('method', '?')}; {s.get('per_class', '?')} train images per class clustered (SpRAy). A "
        "class is flagged when a compact cluster's region (or a scan of its pixels) is a repeated mark (its "
        "pixels agree across the class's images, not across other classes'), and that mark pasted onto other "
        f"classes' held-out images flips them to the class with a 95% Wilson lower bound above "
        f"{s.get('threshold', '?')}{control}{background}. The control is reported beside every rate."
    )


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
        rule_text(s),
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
