"""Command-line options shared by the commands that start a federated run (`oncofed run`, `oncofed simulate`).

Typer reads options from annotations: one annotation here is one option, with one help text, wherever it is used.
"""

from typing import Annotated

import typer

TrackingUriOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking server for the run's records (run setting tracking-uri; default: an MLflow "
        "store in the run folder, or the resumed run's own).",
    ),
]
