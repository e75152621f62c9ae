"""Command-line options that choose the model a site's tool uses (`site predict`, `export`): a file, or the site's
own work folder, where its personalized model is preferred (site_app.tools.model_choice).

Typer reads options from annotations: one annotation here is one option, with one help text, wherever it is used.
"""

from pathlib import Path
from typing import Annotated

import typer

ModelOption = Annotated[
    Path | None,
    typer.Option("--model", help="A checkpoint (.pt, e.g. a run's models/final.pt) or a bundle folder."),
]
WorkOption = Annotated[
    Path | None,
    typer.Option(
        "--work",
        help="Instead of --model, at a site: its work folder; its personalized model when it has one for the"
        " global model it last validated, else that global model.",
    ),
]
GlobalModelOption = Annotated[
    bool, typer.Option("--global-model", help="With --work: the global model, not the personalized one.")
]
