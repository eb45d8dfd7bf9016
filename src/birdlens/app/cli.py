"""``birdlens serve``: the local web page and JSON API for one trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from birdlens.utils.device import DEVICE_HELP


def serve(
    run: Annotated[
        Path,
        typer.Option(
            "--run",
            help="training run directory (meta.json + best.safetensors)",
            exists=True,
            file_okay=False,
            dir_okay=True,
        ),
    ],
    host: Annotated[
        str, typer.Option("--host", help="interface to bind; the default is this machine only")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    examples: Annotated[
        Path | None,
        typer.Option(
            "--examples", help="folder of example photos (<species>/*.jpg); default: the run's test split"
        ),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", min=0.01, help="larger uploads get 413")
    ] = 10.0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="seconds one explanation may run")
    ] = 120.0,
    max_samples: Annotated[
        int,
        typer.Option("--max-samples", min=10, help="cap on LIME num_samples and SHAP max_evals per request"),
    ] = 2000,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="torch CPU threads (default: torch's)")
    ] = None,
    which: Annotated[str, typer.Option("--which", help="best or last weights")] = "best",
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
) -> None:
    """Serve a page where a person uploads a bird photo and sees the top species and the evidence."""
    import torch
    import uvicorn

    from birdlens.app.budget import Budget
    from birdlens.app.server import create_app_from_run
    from birdlens.utils.device import resolve_for_cli

    dev, _ = resolve_for_cli(device)
    if threads is not None:
        torch.set_num_threads(threads)
    budget = Budget(lime_max_samples=max_samples, shap_max_evals=max_samples, timeout_s=timeout)
    from birdlens.runs.layout import RunDirError

    try:
        app = create_app_from_run(
            run,
            examples_dir=examples,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            budget=budget,
            which=which,
            device=dev,
        )
    except RunDirError as e:  # a damaged best.safetensors or meta.json: the message names it
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(
            f"warning: binding {host}: the page is reachable from other machines", fg="yellow", err=True
        )
    typer.echo(f"birdlens serve: {run} on http://{host}:{port}/  (Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="info")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
