"""`oncofed export --model MODEL --out DIR`: a model as a MONAI bundle (site_app/tools/bundle_export.py).

Torch and MONAI load when the command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import typer

from models.shared.exit_codes import ExitCode, fail

app = typer.Typer()


@app.command("export", no_args_is_help=True)
def export(
    model: Annotated[
        Path,
        typer.Option("--model", help="A checkpoint (.pt, e.g. a run's models/final.pt) or a bundle folder."),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="The bundle folder to write (must not exist, or be empty).")
    ],
) -> None:
    """Export a model as a MONAI bundle: configs, weights, TorchScript, loadable with monai.bundle offline."""
    from models.model_source import ModelSourceError, load_model_source
    from models.shared.terminal import make_console
    from site_app.tools.bundle_export import export_bundle

    try:
        source = load_model_source(model)
        folder = export_bundle(source, out)
    except (ModelSourceError, FileExistsError) as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    make_console(stderr=True).print(
        f"Bundle written: {folder} (model {source.sha256}); run it with\n  python -m monai.bundle run"
        f" --config_file {folder}/configs/inference.json --bundle_root {folder} --dataset_dir IMAGES"
        " --output_dir LABELS",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
