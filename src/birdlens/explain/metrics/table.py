"""The ranked terminal table: one row per method, one column per metric, arrows for direction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from birdlens.explain.metrics.base import Direction, metric_info
from birdlens.explain.metrics.summary import category_winners, rank_methods


def _fmt(stats: Mapping[str, Any]) -> str:
    if stats.get("mean") is None:
        return "—"
    lo, hi = stats["ci95"]
    return f"{stats['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def results_table(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    metrics: Sequence[str] | None = None,
    title: str = "Explanation quality (mean [95% bootstrap CI]; #rank per metric)",
    verdicts: Mapping[str, str] | None = None,
) -> Table:
    """A rich Table; methods in the order of their mean rank over metrics (best first)."""
    ranking = rank_methods(summary)
    names = list(metrics) if metrics is not None else [m for m in _metric_order(ranking)]
    methods = list(summary)
    mean_rank = {
        m: sum(ranking[n].index(m) + 1 for n in names if m in ranking.get(n, []))
        / max(1, sum(1 for n in names if m in ranking.get(n, [])))
        for m in methods
    }
    methods.sort(key=lambda m: mean_rank[m])
    t = Table(title=title, header_style="bold")
    t.add_column("method", style="cyan", no_wrap=True)
    for n in names:
        arrow = Direction(metric_info(n)["direction"]).arrow
        t.add_column(f"{n} {arrow}", justify="right")
    t.add_column("mean rank", justify="right")
    if verdicts:
        t.add_column("sanity", justify="center")
    for m in methods:
        cells = []
        for n in names:
            st = summary[m].get(n)
            if st is None or st.get("mean") is None:
                cells.append("—")
                continue
            r = ranking[n].index(m) + 1
            txt = f"{_fmt(st)} #{r}"
            cells.append(f"[bold green]{txt}[/]" if r == 1 else txt)
        row = [m, *cells, f"{mean_rank[m]:.1f}"]
        if verdicts:
            v = verdicts.get(m, "n/a")
            row.append({"pass": "[green]pass[/]", "fail": "[red]FAIL[/]"}.get(v, v))
        t.add_row(*row)
    return t


_ORDER = (
    "deletion",
    "insertion",
    "pointing_game",
    "energy_inside",
    "part_rank_corr",
    "top_part_key",
    "key_part_share",
    "road_morf",
    "road_lerf",
    "infidelity",
    "sanity_rank_corr",
    "random_logit",
    "stability",
    "max_sensitivity",
    "avg_sensitivity",
    "local_lipschitz",
    "sparseness",
    "complexity",
)


def _metric_order(ranking: Mapping[str, list[str]]) -> list[str]:
    known = [m for m in _ORDER if m in ranking]
    return known + sorted(m for m in ranking if m not in _ORDER)


def ranked_table(results: Mapping[str, Any], title: str | None = None) -> Table:
    """The tidy (long) table: one row per (metric, method), methods ranked best first within each metric.

    Narrow enough for an 80-column terminal whatever the number of methods; the gap between the best and
    the runner-up is marked *resolved* when its paired 95% bootstrap interval excludes zero."""
    summary = results["methods"]
    ranking = rank_methods(summary)
    verdicts = results.get("sanity", {}).get("verdicts", {})
    resolved = results.get("top_resolved", {})
    n = results.get("data", {}).get("n")
    t = Table(
        title=title or f"Explanation quality, n={n} images (↑ higher / ↓ lower is better)",
        header_style="bold",
    )
    t.add_column("#", justify="right")
    t.add_column("method", no_wrap=True)
    t.add_column("mean", justify="right", no_wrap=True)
    t.add_column("95% CI", justify="right", no_wrap=True)
    t.add_column("n", justify="right")
    t.add_column("note", no_wrap=True)
    for name in _metric_order(ranking):
        direction = Direction(metric_info(name)["direction"])
        t.add_row("", f"[bold magenta]{name} {direction.arrow}[/]", "", "", "", "")
        for r, m in enumerate(ranking[name], start=1):
            st = summary[m][name]
            lo, hi = st["ci95"]
            note = ""
            if r == 1 and name in resolved:
                note = "resolved" if resolved[name]["resolved"] else "ties #2"
            if name == "sanity_rank_corr" and verdicts.get(m) == "fail":
                note = "[red]FAIL[/]"
            mean = f"{st['mean']:.3f}"
            t.add_row(
                str(r),
                f"[cyan]{m}[/]",
                f"[bold green]{mean}[/]" if r == 1 else mean,
                f"{lo:.3f} – {hi:.3f}",
                str(st["n"]),
                note,
                end_section=r == len(ranking[name]),
            )
    return t


def category_table(results: Mapping[str, Any]) -> Table:
    """One row per metric category: the method first by mean rank over the category's metrics, the
    runner-up, and on how many of those metrics their 95% intervals overlap."""
    t = Table(title="Per category (mean rank over its metrics; 1 = best)", header_style="bold")
    for col in ("category", "metrics", "first", "runner-up", "95% CIs overlap"):
        t.add_column(col, no_wrap=col != "metrics")
    for cat, c in category_winners(results["methods"]).items():
        ov = c.get("overlap", {})
        second = c["runner_up"]
        t.add_row(
            f"[bold magenta]{cat}[/]",
            ", ".join(c["metrics"]),
            f"[bold green]{c['best']}[/] ({c['mean_rank'][c['best']]:.1f})",
            f"{second} ({c['mean_rank'][second]:.1f})" if second else "—",
            f"{sum(ov.values())} of {len(ov)}" if ov else "—",
        )
    return t


def print_results(results: Mapping[str, Any], console: Console | None = None) -> None:
    """Print the ranked table, the per-category winners and the sanity verdicts."""
    console = console or Console()
    console.print(ranked_table(results))
    console.print(category_table(results))
    verdicts = results.get("sanity", {}).get("verdicts", {})
    failed = [m for m, v in verdicts.items() if v == "fail"]
    if verdicts:
        thr = results.get("sanity", {}).get("threshold")
        console.print(
            f"sanity check (fail if rank corr after full randomisation > {thr}): "
            + (f"[red]FAIL[/]: {', '.join(failed)}" if failed else "all pass")
            + (
                f"; pass: {', '.join(m for m, v in verdicts.items() if v == 'pass')}"
                if len(failed) < len(verdicts)
                else ""
            )
        )
