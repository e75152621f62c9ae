"""`oncofed export --model MODEL --out DIR` (or `--work WORK` at a site: its personalized model by default,
site_app/tools/model_choice.py): a model as a MONAI bundle (site_app/tools/bundle_export.py's `export_model`).
Torch and MONAI load when the command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import typer

from models.shared.exit_codes import reports_errors
from site_app.tools.model_options import GlobalModelOption, ModelOption, WorkOption

app = typer.Typer()


@app.command("export", no_args_is_help=True)
@reports_errors
def export(
    out: Annotated[
        Path, typer.Option("--out", help="The bundle folder to write (must not exist, or be empty).")
    ],
    model: ModelOption = None,
    work: WorkOption = None,
    global_model: GlobalModelOption = False,
) -> None:
    """Export a model as a MONAI bundle: configs, weights, TorchScript, loadable with monai.bundle offline."""
    from site_app.tools.bundle_export import export_model

    export_model(model, work, global_model, out)
