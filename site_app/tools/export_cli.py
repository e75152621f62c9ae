"""`oncofed export --model MODEL --out DIR` (or `--work WORK` at a site: its personalized model by default,
site_app/tools/model_choice.py): a model as a MONAI bundle (site_app/tools/bundle_export.py's `export_model`).
Torch and MONAI load when the command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import typer

from models.shared.exit_codes import reports_errors

app = typer.Typer()


@app.command("export", no_args_is_help=True)
@reports_errors
def export(
    out: Annotated[
        Path, typer.Option("--out", help="The bundle folder to write (must not exist, or be empty).")
    ],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="A checkpoint (.pt, e.g. a run's models/final.pt) or a bundle folder."),
    ] = None,
    work: Annotated[
        Path | None,
        typer.Option(
            "--work",
            help="Instead of --model, at a site: its work folder; its personalized model when it has one for the"
            " global model it last validated, else that global model.",
        ),
    ] = None,
    global_model: Annotated[
        bool, typer.Option("--global-model", help="With --work: the global model, not the personalized one.")
    ] = False,
) -> None:
    """Export a model as a MONAI bundle: configs, weights, TorchScript, loadable with monai.bundle offline."""
    from site_app.tools.bundle_export import export_model

    export_model(model, work, global_model, out)
