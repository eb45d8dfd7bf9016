"""The ``birdlens`` command. Thin on purpose: it parses arguments and calls the modules that do the work.

Each area owns its commands in its own ``cli.py`` (``birdlens.data.cli``, ``birdlens.train.cli``, ...) and is
registered below, so this file stays a table of contents.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="birdlens",
    help="Interpretable image classification: data -> augment -> train -> evaluate -> explain -> report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _main() -> None:
    """birdlens: point it at a folder of labelled photos; get a model, its explanations and a report."""


@app.command()
def version() -> None:
    """Print the birdlens version."""
    from birdlens import __version__

    typer.echo(__version__)


# ---- registrations (one line per area; keep sorted by pipeline order) ---------------------------------
# BEGIN REGISTRATIONS
from birdlens.data.cli import register as _r_data  # noqa: E402

_r_data(app)
from birdlens.augment.gan.cli import register as _r_gan  # noqa: E402

_r_gan(app)
from birdlens.train.cli import register as _r_train  # noqa: E402

_r_train(app)
from birdlens.evaluate.cli import register as _r_evaluate  # noqa: E402

_r_evaluate(app)
from birdlens.explain.cli import register as _r_explain  # noqa: E402

_r_explain(app)
from birdlens.explain.metrics.cli import register as _r_xeval  # noqa: E402

_r_xeval(app)
from birdlens.explain.audit.cli import register as _r_audit  # noqa: E402

_r_audit(app)
from birdlens.study.cli import register as _r_study  # noqa: E402

_r_study(app)
from birdlens.app.cli import register as _r_app  # noqa: E402

_r_app(app)
# END REGISTRATIONS


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
