"""The `oncofed` command: assembles each package's command modules; no logic and no heavy import lives here.

Each module registers its commands on its own `app` and imports torch, MONAI, Flower, matplotlib,
cryptography and the DICOM/NIfTI readers inside the command bodies only, so `oncofed --help` starts in a
fraction of a second (bench/cli_start.py measures it). Exit codes: models/shared/exit_codes.py.
"""

import typer

from data_prep import cli as data_prep_commands
from deploy.coordinator import cli as coordinator_cli
from deploy.simulation import cli as simulate_cli
from deploy.site import approval_cli
from deploy.site import cli as site_cli
from server_app import cli as server_app_commands
from site_app import cli as site_app_commands
from site_app.tools import export_cli

# Locals in a crash report could hold file names or case ids: never print them. Help texts are markdown
# (typer's default, rich markup, eats "[series]" and keeps docstrings' line breaks): write `<x>` in backticks.
app = typer.Typer(
    name="oncofed",
    help="Federated tumor segmentation across hospitals.",
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_prep_commands.app)  # synth
app.add_typer(simulate_cli.app)  # simulate
app.add_typer(coordinator_cli.app)  # provision, coordinator start, run
app.add_typer(server_app_commands.app)  # report
app.add_typer(export_cli.app)  # export

site = typer.Typer(help="Commands run at a hospital site.", no_args_is_help=True)
site.add_typer(site_cli.app)  # check, start
site.add_typer(site_app_commands.app)  # report, predict
site.add_typer(approval_cli.app)  # keygen, approve, apps, revoke-app
app.add_typer(site, name="site")

if __name__ == "__main__":
    app()
