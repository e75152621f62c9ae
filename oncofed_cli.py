"""The `oncofed` command: assembles each package's commands; no logic lives here."""

import typer

from data_prep.cli import synth
from deploy.cli import simulate
from deploy.kit_commands import coordinator_start, provision_command, run, site_check, site_start
from deploy.status_cli import coordinator_status
from server_app.report_command import report
from site_app.site_report_command import site_report

# Locals in a crash report could hold file names or case ids: never print them.
app = typer.Typer(
    name="oncofed",
    help="Federated tumor segmentation across hospitals.",
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
)
app.command("synth")(synth)
app.command("simulate")(simulate)
app.command("provision")(provision_command)
app.command("run")(run)
app.command("report")(report)

coordinator = typer.Typer(
    help="The coordinator (Flower SuperLink), from its kit.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
coordinator.command("start")(coordinator_start)
coordinator.command("status")(coordinator_status)
app.add_typer(coordinator, name="coordinator")

site = typer.Typer(
    help="Commands run at a hospital site.", no_args_is_help=True, pretty_exceptions_show_locals=False
)
site.command("check", no_args_is_help=True)(site_check)
site.command("start")(site_start)
site.command("report")(site_report)
app.add_typer(site, name="site")

if __name__ == "__main__":
    app()
