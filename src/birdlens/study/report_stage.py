"""The report stage: gather every stage's summary into ``results.json`` and lay out ``report.html``."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import yaml

from birdlens.runs import layout
from birdlens.study.report import embed_image, figures_html, html_table, write_report
from birdlens.study.report_evidence import class_evidence_html, error_views_html
from birdlens.study.stages import StageContext, finished_stages
from birdlens.utils.atomic import is_leftover
from birdlens.utils.env import environment_info


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _panel_columns(folder: Path) -> str:
    """``photo | Grad-CAM | ...``: the panel's columns, from the methods its manifest records (their titles)."""
    from birdlens.explain.viz import method_title

    try:
        methods = list(json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["methods"])
    except (OSError, ValueError, KeyError, TypeError):
        methods = []
    return " | ".join(["photo", *[method_title(m) for m in methods]])


def _figs(folder: Path, *patterns: str) -> list[Path]:
    """Figures matching ``patterns``, without the temp file a stage killed mid-write leaves beside a figure."""
    out: list[Path] = []
    for pat in patterns:
        out += [p for p in sorted(folder.glob(pat)) if p not in out and not is_leftover(p)]
    return out


def _caption(p: Path) -> str:
    return p.stem.replace("_", " ").replace("-", " ")


def _ci(v: Any) -> str:
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return f"[{v[0]:.3f}, {v[1]:.3f}]"
    return "—"


def _params_m(params: Any) -> float | None:
    total = params.get("total") if isinstance(params, dict) else params
    return round(total / 1e6, 2) if isinstance(total, (int, float)) and total else None


def _model_rows(inputs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, s in inputs.items():
        if not name.startswith("evaluate:"):
            continue
        m = s.get("metrics", {})
        e = s.get("entry", {})
        meta_path = Path(s["run"]) / layout.META
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        rows.append(
            {
                "name": e.get("name", name.split(":", 1)[1]),
                "model": e.get("model"),
                "mode": e.get("mode"),
                "augment": e.get("augment"),
                "accuracy": m.get("accuracy"),
                "ci95": _ci(m.get("accuracy_ci95")),
                "ci95_values": m.get("accuracy_ci95"),
                "macro_f1": m.get("macro_f1"),
                "top5": m.get("top5_accuracy"),
                "ece": m.get("ece"),
                "n": m.get("n"),
                "train_s": meta.get("train_seconds"),
                "params_m": _params_m(meta.get("params")),
                "run": s["run"],
            }
        )
    return rows


def _overlap(ca: Any, cb: Any) -> bool:
    """Whether two 95% intervals overlap; a missing interval counts as overlapping (no claim without one)."""
    return not (ca and cb) or (ca[0] <= cb[1] and cb[0] <= ca[1])


def _versus(a: dict[str, Any], b: dict[str, Any]) -> str:
    """'beats' only when the 95% intervals do not overlap; otherwise say the difference is not clear."""
    separate = not _overlap(a.get("ci95_values"), b.get("ci95_values"))
    if a["accuracy"] > b["accuracy"]:
        return "beats" if separate else "is ahead of, but not clearly better than (95% intervals overlap),"
    if a["accuracy"] < b["accuracy"]:
        return "is worse than" if separate else "does not beat (95% intervals overlap)"
    return "ties with"


def _findings(rows: list[dict[str, Any]], xeval: dict[str, dict[str, Any]]) -> list[str]:
    """The study's findings, recomputed from this run's numbers (never asserted in advance)."""
    out = []
    by = {r["name"]: r for r in rows}
    cnn = [r for r in rows if r["model"] == "simple_cnn" and r["accuracy"] is not None]
    plain = [r for r in cnn if r["augment"] == "none"]
    aug = [r for r in cnn if r["augment"] != "none"]
    if plain and aug:
        a, b = max(aug, key=lambda r: r["accuracy"]), plain[0]
        verdict = _versus(a, b)
        out.append(
            f"Augmentation: the simple CNN with {a['augment']} ({a['accuracy']:.3f}, 95% CI {a['ci95']}) "
            f"{verdict} the one without ({b['accuracy']:.3f}, CI {b['ci95']})."
        )
    pre = [
        r
        for r in rows
        if r["mode"] in ("probe", "finetune") and r["model"] != "simple_cnn" and r["accuracy"] is not None
    ]
    scratch = [
        r
        for r in rows
        if (r["mode"] == "scratch" or r["model"] == "simple_cnn") and r["accuracy"] is not None
    ]
    if pre and scratch:
        p, s = max(pre, key=lambda r: r["accuracy"]), max(scratch, key=lambda r: r["accuracy"])
        verdict = _versus(p, s)
        out.append(
            f"Transfer learning: {p['name']} ({p['accuracy']:.3f}) {verdict} the best model trained from "
            f"scratch, {s['name']} ({s['accuracy']:.3f})."
        )
    for model, res in xeval.items():
        table = res.get("methods") or {}
        for metric in ("insertion", "deletion", "part_rank_corr", "pointing_game"):
            scored = {m: v[metric] for m, v in table.items() if isinstance(v, dict) and metric in v}
            if len(scored) < 2:
                continue
            higher = next(iter(scored.values())).get("higher_is_better", True)
            order = sorted(scored, key=lambda m: scored[m]["mean"], reverse=higher)
            best, second = order[0], order[1]
            overlap = _overlap(scored[best].get("ci95"), scored[second].get("ci95"))
            tail = (
                f"; {second} is second ({scored[second]['mean']:.3f}) and their 95% intervals "
                f"{'overlap' if overlap else 'do not overlap'}"
            )
            out.append(
                f"Explanations of {model}, {metric} ({'higher' if higher else 'lower'} is better): "
                f"{best} ranks first ({scored[best]['mean']:.3f}){tail}."
            )
    out.extend(_category_findings(xeval))
    if by:
        best = max(rows, key=lambda r: r["accuracy"] or -1)
        out.insert(
            0,
            f"Best model: {best['name']} ({best['model']}, {best['mode']}) with test accuracy "
            f"{best['accuracy']:.3f} (95% CI {best['ci95']}).",
        )
    return out


def _category_findings(xeval: dict[str, dict[str, Any]]) -> list[str]:
    """Per model and metric category: which method ranks first, the runner-up, and whether their 95%
    intervals overlap on the category's metrics (all, some or none)."""
    from birdlens.explain.metrics.summary import category_winners

    out = []
    for model, res in xeval.items():
        try:
            cats = category_winners(res.get("methods") or {})
        except KeyError:
            continue
        for cat, c in cats.items():
            if c["runner_up"] is None:
                continue
            ov = c.get("overlap") or {}
            n_ov = sum(ov.values())
            word = (
                "overlap on every one"
                if n_ov == len(ov)
                else "do not overlap on any"
                if n_ov == 0
                else (f"overlap on {n_ov} of {len(ov)}")
            )
            out.append(
                f"Explanations of {model}, {cat} ({', '.join(c['metrics'])}): {c['best']} ranks first "
                f"(mean rank {c['mean_rank'][c['best']]:.1f}), {c['runner_up']} second "
                f"({c['mean_rank'][c['runner_up']]:.1f}); their 95% intervals {word} of these metrics."
            )
    return out


def _xeval_section(name: str, res: dict[str, Any], folder: Path) -> str:
    table = res.get("methods") or {}
    metrics: list[str] = []
    for v in table.values():
        for k in v:
            if isinstance(v[k], dict) and "mean" in v[k] and k not in metrics:
                metrics.append(k)
    head = "".join(
        f"<th>{_esc(k)} {'↑' if next((t[k].get('higher_is_better', True) for t in table.values() if k in t), True) else '↓'}</th>"
        for k in metrics
    )
    body = []
    for method, v in table.items():
        cells = []
        for k in metrics:
            x = v.get(k)
            cells.append(
                f'<td class="num">{x["mean"]:.3f}<br><span class=muted>{_ci(x.get("ci95"))}</span></td>'
                if isinstance(x, dict)
                else "<td>—</td>"
            )
        body.append(f"<tr><td>{_esc(method)}</td>{''.join(cells)}</tr>")
    parts = [
        f"<h3>{_esc(name)}</h3>",
        f"<table><thead><tr><th>method</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>",
    ]
    verdicts = (res.get("sanity") or {}).get("verdicts") or {}
    if verdicts:
        parts.append(
            "<p>Sanity check (cascading randomisation, Adebayo et al. 2018; a method whose maps barely "
            "change when the weights are randomised fails): "
            + ", ".join(
                f"{_esc(m)}: <span class={'good' if v == 'pass' else 'bad'}>{'passes' if v == 'pass' else 'FAILS'}</span>"
                for m, v in verdicts.items()
            )
            + "</p>"
        )
    parts.append(_category_html(table))
    resolved = res.get("top_resolved") or {}
    if resolved:
        items = []
        for metric, r in resolved.items():
            if isinstance(r, dict) and r.get("best"):
                word = "resolved" if r.get("resolved") else "not resolved"
                items.append(f"{_esc(metric)}: {_esc(r['best'])} over {_esc(r.get('runner_up'))} ({word})")
        parts.append("<p class=muted>Best vs runner-up, paired bootstrap: " + "; ".join(items) + "</p>")
    if res.get("notes"):
        parts.append(f"<p class=muted>{_esc(res['notes'])}</p>")
    figs = _figs(folder / "figures", "categories.png", "curves.png", "sanity.png", "bars_*.png")
    parts.append(figures_html([{"path": p, "caption": _caption(p)} for p in figs]))
    parts.append(class_evidence_html(folder))
    return "".join(parts)


def _category_html(table: dict[str, Any]) -> str:
    """Metrics grouped by category: the method first by mean rank over the category's metrics, the
    runner-up, and per metric whether their 95% intervals overlap."""
    from birdlens.explain.metrics.summary import category_winners

    try:
        cats = category_winners(table)
    except KeyError:  # a results.json with a metric this version does not know
        return ""
    rows = []
    for cat, c in cats.items():
        ov = c.get("overlap") or {}
        overlap = ", ".join(f"{_esc(m)}: {'overlap' if o else 'separate'}" for m, o in ov.items())
        second = c["runner_up"]
        runner = f"{_esc(second)} ({c['mean_rank'][second]:.1f})" if second else "—"
        rows.append(
            f"<tr><td>{_esc(cat)}</td><td>{_esc(', '.join(c['metrics']))}</td>"
            f"<td><b>{_esc(c['best'])}</b> ({c['mean_rank'][c['best']]:.1f})</td>"
            f"<td>{runner}</td><td>{overlap or '—'}</td></tr>"
        )
    return (
        "<p>By category (mean rank over the category's metrics, 1 = best; 95% intervals of the first and "
        "the runner-up per metric):</p><table><thead><tr><th>category</th><th>metrics</th><th>first</th>"
        f"<th>runner-up</th><th>intervals</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _compare_html(c: dict[str, Any]) -> str:
    """The real / +classic / +GAN table: accuracy with its interval, and each arm's paired difference."""
    rows = []
    for arm in c["arms"]:
        r = c["summary"]["all"][arm]
        d = r.get("diff_vs_real+classic")
        rows.append(
            {
                "arm": arm,
                "accuracy": f"{r['mean']:.3f} {_ci(r['ci95'])}",
                "diff": f"{d['mean']:+.3f} {_ci(d['ci95'])}" if d else "(reference)",
                "verdict": d["verdict"] if d else "",
            }
        )
    cols = [("arm", "training set"), ("accuracy", "test accuracy (mean, 95% CI)")]
    cols += [("diff", "vs real+classic (95% CI)"), ("verdict", "verdict")]
    return (
        f"<p>Does adding its images help a classifier? {_esc(c['classifier'])}, {len(c['seeds'])} seeds; "
        f"classic: {_esc(c['classic_augmentation'])}; GAN: {c['gan']['per_class']} images per class.</p>"
        + html_table(rows, cols)
        + f"<p class=muted>{_esc(c['interval'])}. A verdict is given only where the interval excludes zero.</p>"
        + embed_image(c["figure"], "gan comparison", "Test accuracy per training set (mean, 95% CI).")
    )


def _gan_section(g_cfg: dict[str, Any], g: dict[str, Any]) -> str:
    """Generated samples per class, the trained GAN's metrics, and the classifier comparison."""
    if g.get("skipped"):
        return f"<p class=muted>Skipped: {_esc(g['skipped'])}.</p>"
    if g.get("generator"):
        what = (
            f"the shipped generator {_esc(Path(g['generator']).name)}: {_esc(g.get('arch'))}, "
            f"{_esc(g.get('iterations'))} iterations on a CPU, trained on exactly these synthetic birds"
        )
    else:
        what = f"{_esc(g_cfg['arch'])} after {g_cfg['iterations']} iterations"
    html_ = ""
    if g.get("sample_grid"):
        html_ += embed_image(
            g["sample_grid"], "gan samples", f"Generated images, one row per class ({what})."
        )
    html_ += figures_html(
        [
            {"path": p, "caption": f"{what}, one row per class (EMA generator, fixed noise)"}
            for p in g.get("figures", [])
        ]
    )
    if g.get("note"):
        html_ += f"<p class=muted>{_esc(g['note'])}</p>"
    if g.get("metrics"):
        html_ += html_table(
            [{"metric": k, "value": v} for k, v in g["metrics"].items()],
            [("metric", "metric"), ("value", "value")],
        )
    if g.get("compare"):
        html_ += _compare_html(g["compare"])
    return html_


def _data_section(data: dict[str, Any], report: dict[str, Any], cfg: dict[str, Any]) -> str:
    """Counts per class and split, what was skipped, duplicates and leaks, and the sample grid."""
    counts = report.get("classes", {})
    rows = [{"class": c, **{k: v for k, v in sorted(s.items())}} for c, s in counts.items()]
    split_cols = sorted({k for r in rows for k in r if k != "class"})
    warn = "".join(f'<div class="warn">{_esc(w)}</div>' for w in data.get("warnings") or [])
    skipped = report.get("skipped") or []
    return (
        f"<p>{report.get('n_images')} images, {report.get('n_classes')} classes "
        f"({_esc('synthetic part-based birds' if data.get('source') == 'synth' else cfg['data'].get('path'))}); "
        f"{len(skipped)} file(s) skipped, {len(report.get('duplicates') or [])} duplicate group(s), "
        f"{len(report.get('leaks') or [])} leak(s) across splits.</p>{warn}"
        + html_table(rows, [("class", "class"), *[(s, s) for s in split_cols]])
        + embed_image(data["samples"], "samples", "Sample training images per class (the study's Fig. 1).")
    )


def _model_sections(model_rows: list[dict[str, Any]]) -> dict[str, str]:
    """Learning curves, confusion matrices and the table of models (the best one marked)."""
    curves, confusion = [], []
    for r in model_rows:
        figdir = Path(r["run"]) / "figures"
        curves += [
            {"path": p, "caption": f"{r['name']}: {_caption(p)}"} for p in _figs(figdir, "*curve*.png")
        ]
        confusion += [
            {"path": p, "caption": f"{r['name']}: {_caption(p)}"}
            for p in _figs(figdir, "*confusion*normalized*.png")
        ]
    best = max(range(len(model_rows)), key=lambda i: model_rows[i]["accuracy"] or -1) if model_rows else None
    table = html_table(
        model_rows,
        [
            ("name", "entry"),
            ("model", "model"),
            ("mode", "mode"),
            ("augment", "augmentation"),
            ("accuracy", "test accuracy"),
            ("ci95", "95% CI (Wilson)"),
            ("macro_f1", "macro-F1"),
            ("top5", "top-5"),
            ("ece", "ECE"),
            ("n", "n test"),
            ("train_s", "train s"),
            ("params_m", "params (M)"),
        ],
        best=best,
    )
    return {
        "curves": figures_html(curves) or "<p class=muted>No learning curves (probe-only models).</p>",
        "confusion": figures_html(confusion),
        "models": table,
    }


def _explain_section(run: Path, inputs: dict[str, dict[str, Any]]) -> str:
    """The explanation panels of every explained model."""
    explain_html = []
    for name in inputs:
        if name.startswith("explain:"):
            folder = run / "explain" / name.split(":", 1)[1]
            panels = _figs(folder, "*panel*.png")
            caption = f"{_panel_columns(folder)}, with predicted and true labels"
            explain_html.append(
                f"<h3>{_esc(name.split(':', 1)[1])}</h3>"
                + "".join(embed_image(p, "panel", caption) for p in panels)
                + "".join(_visualised_html(v) for v in inputs[name].get("visualised", []))
            )
    return "".join(explain_html)


def _cases_section(inputs: dict[str, dict[str, Any]]) -> str:
    """Per model: its most-confused pairs (photo, plain and contrastive Grad-CAM, nearest training images)
    and its highest-loss images with their nearest training images."""
    out = []
    for name, res in inputs.items():
        if not name.startswith("cases:"):
            continue
        model = name.split(":", 1)[1]
        parts = [f"<h3>{_esc(model)}: why the confusions</h3>"]
        for pair in res.get("pairs") or []:
            what = f"{pair['true']} taken for {pair['pred']} ({pair['count']} test image(s))"
            parts.append(f"<h4>{_esc(what)}</h4>")
            if pair.get("figure"):
                parts.append(
                    embed_image(
                        pair["figure"],
                        "confused pair",
                        f"The most confident mistake: the photo, Grad-CAM for {pair['pred']}, and Grad-CAM "
                        f"of logit({pair['pred']}) - logit({pair['true']}) = {pair['logit_difference']:.2f}: "
                        f"what makes it {pair['pred']} rather than {pair['true']}.",
                    )
                )
            if pair.get("examples_figure"):
                parts.append(embed_image(pair["examples_figure"], "nearest training images", _NN_CAPTION))
        if not res.get("pairs"):
            parts.append("<p class=muted>No confused pairs: every test image was classified correctly.</p>")
        losses = [r for r in res.get("losses") or [] if r.get("examples_figure")]
        if losses:
            parts.append(f"<h4>{_esc(model)}: highest-loss images and what they resemble</h4>")
            parts.append(
                figures_html(
                    [
                        {
                            "path": r["examples_figure"],
                            "caption": f"true {r['true']}, predicted {r['pred']} ({r['prob']:.0%}), "
                            f"loss {r['loss']:.2f}. {_NN_CAPTION}",
                        }
                        for r in losses
                    ]
                )
            )
        out.append("".join(parts))
    return "".join(out)


_NN_CAPTION = (
    "Nearest training images in the model's own feature space (penultimate layer, cosine distance) from the "
    "predicted class and from the runner-up."
)


def _prototypes_html(inputs: dict[str, dict[str, Any]]) -> str:
    """Each model's class prototypes (medoids of the training images in its feature space)."""
    out = []
    for name, res in inputs.items():
        proto = (res.get("prototypes") or {}) if name.startswith("cases:") else {}
        if proto.get("figure"):
            model = name.split(":", 1)[1]
            out.append(
                embed_image(
                    proto["figure"],
                    "class prototypes",
                    f"Class prototypes for {model}: each class's medoid training image in the model's "
                    f"feature space ({proto.get('metric', 'cosine')} distance), the photo most typical of "
                    "the class for this model.",
                )
            )
    return "".join(out)


def _visualised_html(v: dict[str, Any]) -> str:
    """A class activation maximisation beside training images of the class."""
    n = len(v.get("train_images", []))
    caption = (
        f"What maximises the logit of {v['class']} (left; logit {v['start_logit']:.1f} at the random start, "
        f"{v['final_logit']:.1f} after {v['settings']['steps']} steps, seed {v['settings']['seed']}) beside "
        f"{n} of its training images"
    )
    return embed_image(v["figure"], f"visualisation of {v['class']}", caption)


def _audit_section(run: Path, inputs: dict[str, dict[str, Any]]) -> str:
    """Per audited model: the verdict table of :func:`birdlens.explain.audit.report` with its evidence images."""
    from birdlens.explain.audit.core import AUDIT_JSON
    from birdlens.explain.audit.report import rule_text

    parts = []
    for name, summary in inputs.items():
        if not name.startswith("audit:"):
            continue
        folder = Path(summary["dir"])
        audit = json.loads((folder / AUDIT_JSON).read_text())
        rows = [
            {
                "class": cls,
                "flagged": "yes" if v["flagged"] else "no",
                "flip rate [95% CI]": f"{v['flip_rate']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]",
                "control": v["control_rate"],
                "background share": v["background_reliance"],
                "verdict": v["verdict"],
            }
            for cls, v in sorted(audit["classes"].items(), key=lambda kv: (not kv[1]["flagged"], kv[0]))
        ]
        cols = [
            (k, k)
            for k in ("class", "flagged", "flip rate [95% CI]", "control", "background share", "verdict")
        ]
        flagged = audit["flagged"]
        evidence = [
            embed_image(folder / p, "audit evidence", f"{cls}: {Path(p).stem.rsplit('_', 1)[-1]}")
            for cls in (flagged or list(audit["classes"])[:1])
            for p in audit["classes"][cls]["evidence"]
        ]
        parts.append(
            f"<h3>{_esc(summary['model'])}</h3><p>{len(flagged)} of {len(rows)} classes flagged"
            + (f": {_esc(', '.join(flagged))}" if flagged else "")
            + f". {_esc(rule_text(audit.get('settings', {})))}</p>"
            + html_table(rows, cols)
            + '<div class="grid">'
            + "".join(evidence)
            + "</div>"
        )
    return "".join(parts)


def _footer(timings: dict[str, float], env: dict[str, Any], cfg: dict[str, Any]) -> str:
    """Stage timings, the environment and the config, so the report says how it was made."""
    return (
        "<h3>Timings (s)</h3>"
        + html_table(
            [{"stage": k, "seconds": v} for k, v in timings.items()],
            [("stage", "stage"), ("seconds", "seconds")],
        )
        + "<h3>Environment</h3><pre>"
        + _esc(json.dumps(env, indent=2))
        + "</pre>"
        + "<h3>Config</h3><pre>"
        + _esc(yaml.safe_dump(cfg, sort_keys=False))
        + "</pre>"
    )


def report_stage(ctx: StageContext) -> dict[str, Any]:
    """Every stage's summary into ``results.json`` and ``report.html``, one section per stage."""
    run = ctx.run_dir
    cfg = ctx.config["config"]
    inputs = ctx.inputs
    report = json.loads(Path(inputs["data"]["report"]).read_text())
    sections: dict[str, str] = {"data": _data_section(inputs["data"], report, cfg)}
    if "augment" in inputs:
        sections["augment"] = embed_image(
            inputs["augment"]["figure"], "augmentation", "Augmentation presets applied to the same images."
        )
    if "gan" in inputs:
        sections["gan"] = _gan_section(cfg["gan"], inputs["gan"])
    model_rows = _model_rows(inputs)
    sections.update(_model_sections(model_rows))
    sections["confusion"] += error_views_html(inputs)
    sections["explain"] = _explain_section(run, inputs) + _cases_section(inputs)
    sections["data"] += _prototypes_html(inputs)
    xeval = {n.split(":", 1)[1]: s["results"] for n, s in inputs.items() if n.startswith("explain_eval:")}
    sections["explain_eval"] = "".join(
        _xeval_section(n, res, run / "explain_eval" / n) for n, res in xeval.items()
    )
    sections["audit"] = _audit_section(run, inputs)
    env = environment_info(cfg.get("seed"))
    timings = {k: round(v.get("seconds", 0.0), 1) for k, v in finished_stages(run).items()}
    sections["footer"] = _footer(timings, env, cfg)
    findings = _findings(model_rows, xeval)
    results = {
        "title": f"birdlens study: {cfg.get('name')}",
        "subtitle": f"seed {cfg.get('seed')} · {env.get('device')} · {env.get('cpu_count')} CPU cores",
        "findings": findings,
        "data": report,
        "models": model_rows,
        "gan": inputs.get("gan"),
        "explain_eval": xeval,
        "explain": {n: s for n, s in inputs.items() if n.startswith("explain:")},
        "cases": {n.split(":", 1)[1]: s for n, s in inputs.items() if n.startswith("cases:")},
        "env": env,
        "timings": timings,
        "config": cfg,
    }
    path = write_report(run / "report.html", results, sections)
    return {"report": str(path), "findings": findings}
