"""`oncofed synth`: write a synthetic multi-site federation for demos, tests and benchmarks.

Progress and errors go to stderr; the written site folders are printed to stdout, one per line. The synthetic
data modules (numpy, nibabel, pydicom, highdicom) load when the command runs, never when `oncofed` starts; so
the help names the presets and the site limit itself (tests/unit/test_cli.py checks them against
data_prep/synth/profiles.py).
"""

from pathlib import Path
from typing import Annotated

import typer

from models.shared.exit_codes import ExitCode, fail

app = typer.Typer()


@app.command("synth", no_args_is_help=True)
def synth(
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the site folders into (created if missing).")
    ],
    sites: Annotated[
        int | None,
        typer.Option(
            "--sites",
            help="Number of sites, 1-26 (hospital-a … hospital-z); the second exports DICOM. Default: the"
            " preset's (tiny 2, demo 3, bench 4, anatomy 3, consortium 6).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same federation.")] = 0,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="Size of the federation: tiny (tests, seconds) | demo (3 sites) | bench (4 sites) | anatomy"
            " (the MNI152 brain with grown gliomas, 10 cases per site, ~2 mm, DICOM as MR) | consortium (6 sites"
            " of 40, 16, 8, 5, 4 and 3 cases, one with small multifocal tumors, DICOM as MR).",
        ),
    ] = "tiny",
) -> None:
    """Write a synthetic multi-hospital federation, one folder per site.

    Sites differ like real hospitals (non-IID): NIfTI or DICOM CT/MR + DICOM-SEG, orientation, spacing,
    intensities, number of cases. Same seed, same bytes.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from data_prep.synth.federation import write_federation
    from data_prep.synth.profiles import default_sites, site_profiles
    from models.shared.terminal import make_console

    if seed < 0:
        raise fail(f"--seed must be >= 0, got {seed}", ExitCode.BAD_INPUT)
    try:
        sites = default_sites(preset) if sites is None else sites
        profiles = site_profiles(preset, sites, seed)
    except ValueError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    err = make_console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
            total = sum(p.n_cases for p in profiles)
            task = progress.add_task(f"writing {sites} site(s), preset {preset}", total=total)
            site_dirs = write_federation(out, sites, seed, preset, lambda: progress.advance(task))
    except FileExistsError as error:  # a site folder under --out is not empty: nothing is overwritten
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    for profile, site_dir in zip(profiles, site_dirs):
        spacing = "x".join(f"{s:g}" for s in profile.spacing_mm)
        err.print(
            f"{profile.name}: {profile.n_cases} cases, {profile.image_format}, {profile.orientation}, "
            f"{spacing} mm",
            highlight=False,
        )
        typer.echo(site_dir)
