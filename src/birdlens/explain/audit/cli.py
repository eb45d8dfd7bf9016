"""``birdlens audit --run RUN --data DATA --out OUT``: the shortcut audit; thin over :func:`audit_run`.

A mistake a user can make (a wrong path, a run without a train split, an existing output) is one sentence on
stderr and exit code 2, and nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from birdlens.utils.device import DEVICE_HELP


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def audit(
    run: Annotated[Path, typer.Option("--run", help="training run folder (meta.json + weights)")],
    data: Annotated[
        Path, typer.Option("--data", help="the dataset the run was trained on (needs a train split)")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="folder for audit.json, audit.md and the evidence images")
    ],
    method: Annotated[
        str, typer.Option("--method", help="explanation method (a cheap one: hirescam, gradcam)")
    ] = "hirescam",
    per_class: Annotated[
        int, typer.Option("--per-class", min=6, help="train images explained per class")
    ] = 48,  # AuditConfig.per_class (core imports torch; tests/test_audit.py checks they agree)
    recipients: Annotated[
        int,
        typer.Option(
            "--recipients", min=1, help="other-class held-out (test, valid) images to paste each suspect onto"
        ),
    ] = 200,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold", min=0, max=1, help="flagged iff the flip rate's 95% lower bound is above"
        ),
    ] = 0.02,
    alpha: Annotated[
        float,
        typer.Option(
            "--alpha",
            min=0,
            max=1,
            help="an off-object suspect that is no mark must also flip more images than the control does "
            "(paired sign test at this level)",
        ),
    ] = 0.05,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing audit.json")] = False,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Find classes whose evidence sits on something other than the bird (background, a mark, a border)."""
    from birdlens.data import load_manifest
    from birdlens.explain.audit.core import AUDIT_JSON, AuditConfig, audit_run
    from birdlens.explain.audit.report import audit_markdown
    from birdlens.explain.base import list_methods, method_class
    from birdlens.runs.layout import CheckpointError
    from birdlens.runs.trained import load_trained
    from birdlens.utils.atomic import write_text
    from birdlens.utils.device import resolve_for_cli

    if (out / AUDIT_JSON).exists() and not force:
        raise _fail(f"{out / AUDIT_JSON} exists; choose another --out or pass --force")
    try:
        method_class(method)
    except (KeyError, ValueError):
        raise _fail(
            f"--method {method!r} is not a method; choose one of {', '.join(list_methods())}"
        ) from None
    dev, _ = resolve_for_cli(device)
    try:
        trained = load_trained(run, device=dev)
    except (FileNotFoundError, KeyError, ValueError, CheckpointError) as e:
        raise _fail(f"cannot load the run {run}: {e}") from None
    try:
        manifest = load_manifest(data)
    except (FileNotFoundError, ValueError) as e:
        raise _fail(f"cannot read the data {data}: {e}") from None
    cfg = AuditConfig(
        method=method,
        per_class=per_class,
        recipients=recipients,
        threshold=threshold,
        alpha=alpha,
        seed=seed,
    )
    try:
        result = audit_run(trained, manifest, out, cfg, quiet=quiet)
    except ValueError as e:
        raise _fail(str(e)) from None
    write_text(out / "audit.md", audit_markdown(result))
    flagged = result["flagged"]
    typer.echo(
        f"{len(flagged)} of {len(result['classes'])} classes flagged"
        + (f" ({', '.join(flagged)})" if flagged else "")
        + f"; wrote {out / AUDIT_JSON} and {out / 'audit.md'}"
    )


def register(app: typer.Typer) -> None:
    """Attach ``birdlens audit`` to the top-level app."""
    app.command("audit")(audit)
