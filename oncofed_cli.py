"""The `oncofed` command: assembles each package's commands; no logic lives here."""

import typer

from data_prep.cli import synth
from deploy.cli import simulate

# Locals in a crash report could hold file names or case ids: never print them.
app = typer.Typer(name="oncofed", help="Federated tumor segmentation across hospitals.",
                  pretty_exceptions_show_locals=False, no_args_is_help=True, add_completion=False)
app.command("synth")(synth)
app.command("simulate")(simulate)

if __name__ == "__main__":
    app()
