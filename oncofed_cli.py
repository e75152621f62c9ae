"""The `oncofed` command: assembles each package's commands; no logic lives here."""

import typer

from data_prep.cli import synth
from deploy.cli import simulate
from site_app.check_command import site_check

# Locals in a crash report could hold file names or case ids: never print them.
app = typer.Typer(name="oncofed", help="Federated tumor segmentation across hospitals.",
                  pretty_exceptions_show_locals=False, no_args_is_help=True, add_completion=False)
app.command("synth")(synth)
app.command("simulate")(simulate)

site = typer.Typer(help="Commands run at a hospital site.", no_args_is_help=True, pretty_exceptions_show_locals=False)
site.command("check", no_args_is_help=True)(site_check)
app.add_typer(site, name="site")

if __name__ == "__main__":
    app()
