"""``oncofed synth``: write a synthetic multi-site federation for demos, tests and benchmarks.

The ``oncofed`` app registers ``synth`` itself (``app.command("synth")(synth)``); ``app`` here is the same
command in a stand-alone group, for tests.
Progress and errors go to stderr; the written site folders are printed to stdout, one per line.
"""

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from data_prep.synth.federation import write_federation
from data_prep.synth.profiles import MAX_SITES, PRESETS, site_profiles

EXIT_BAD_INPUT = 2
"""Exit code for invalid options (unknown preset, site count out of range, negative seed)."""

EXIT_OUTPUT_EXISTS = 3
"""Exit code when a site folder under --out already exists and is not empty."""


def synth(
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the site folders into (created if missing).")
    ],
    sites: Annotated[
        int, typer.Option("--sites", help=f"Number of sites, 1-{MAX_SITES}; the second exports DICOM.")
    ] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same federation.")] = 0,
    preset: Annotated[
        str, typer.Option("--preset", help=f"Size of the federation: {' | '.join(PRESETS)}.")
    ] = "tiny",
) -> None:
    """Write a synthetic federation: one folder per hospital (NIfTI or DICOM CT + DICOM-SEG), non-IID."""
    err = Console(stderr=True)
    if seed < 0:
        _abort(err, f"--seed must be >= 0, got {seed}", EXIT_BAD_INPUT)
    try:
        profiles = site_profiles(preset, sites, seed)
    except ValueError as e:
        _abort(err, str(e), EXIT_BAD_INPUT)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
            total = sum(p.n_cases for p in profiles)
            task = progress.add_task(f"writing {sites} site(s), preset {preset}", total=total)
            site_dirs = write_federation(out, sites, seed, preset, lambda: progress.advance(task))
    except FileExistsError as e:
        _abort(err, str(e), EXIT_OUTPUT_EXISTS)
    for profile, site_dir in zip(profiles, site_dirs):
        spacing = "x".join(f"{s:g}" for s in profile.spacing_mm)
        err.print(
            f"{profile.name}: {profile.n_cases} cases, {profile.image_format}, {profile.orientation}, {spacing} mm",
            highlight=False,
        )
        typer.echo(site_dir)


def _abort(console: Console, message: str, code: int) -> NoReturn:
    console.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(code)


app = typer.Typer(
    help="Synthetic data for OncoFed.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """Synthetic data for OncoFed."""


app.command("synth", no_args_is_help=True)(synth)
