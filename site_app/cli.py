"""`oncofed site report` and `oncofed site predict`: the site commands that need only the site's modules
(site_app, data_prep, models).

Each calls one function: site_app/tools/site_report.py's `report_site`, site_app/tools/predict_run.py's
`predict_studies`. `oncofed_cli` puts them in the `site` group, beside deploy's site_cli (`site start`, `site
check`). Torch, MONAI, highdicom and the readers load when a command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import typer

from models.shared.exit_codes import reports_errors
from site_app.tools.model_options import GlobalModelOption, ModelOption, WorkOption

app = typer.Typer()


@app.command("report", no_args_is_help=True)
@reports_errors
def site_report(
    work: Annotated[
        Path,
        typer.Option(
            help="The site's work folder (node config `work-path`); the report is "
            "written into WORKDIR/reports."
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            help="Model checkpoint to validate (default: the last global model "
            "this site validated, WORKDIR/models/global-latest.pt)."
        ),
    ] = None,
) -> None:
    """Validate this site's cases and write a site-local report.

    Per-case metrics and overlays, worst case first, into WORKDIR/reports only.
    """
    from site_app.tools.site_report import report_site

    report_site(work, model)


@app.command("predict", no_args_is_help=True)
@reports_errors
def site_predict(
    data: Annotated[Path, typer.Option("--data", help="The studies (DICOM and/or NIfTI); only read.")],
    out: Annotated[
        Path, typer.Option("--out", help="Where label maps, DICOM-SEGs and predictions.json are written.")
    ],
    model: ModelOption = None,
    work: WorkOption = None,
    global_model: GlobalModelOption = False,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="CSV with columns case_id,image[,label] (paths relative to --data)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="site.toml: series selection rules and limits.")
    ] = None,
) -> None:
    """Segment every study in the data folder with the model: NIfTI label maps, DICOM-SEGs, predictions.json.

    Studies are found as `site check` finds cases, without needing a label; the data folder is only read
    (site_app/tools/predict_run.py). Exit codes: OK when at least one study was written, NO_USABLE_DATA when none,
    BAD_INPUT for a model, folder, site.toml or manifest that cannot be used.
    """
    from site_app.tools.predict_run import predict_studies

    predict_studies(model, work, global_model, data, out, manifest, config)
