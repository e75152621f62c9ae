"""What `oncofed simulate` (and the benchmarks) will run, checked before any process starts.

Every problem is one sentence naming the folder or option: a bad input is a ValueError (SiteDataError for a
missing data folder), a federation without enough cases is NotEnoughCases.
"""

from pathlib import Path

from data_prep.discovery import discover_cases
from data_prep.errors import SiteDataError
from deploy.flower_env import app_directory
from deploy.simulate import SimulationPlan
from models.presets import get_preset
from server_app.run_folder import METRICS_FILE
from site_app.site_config import site_folders

MIN_SITE_CASES = 2
"""A simulated site trains on some cases and validates on others: at least one of each."""


class NotEnoughCases(SiteDataError):
    """The data folder holds no site, or a site with fewer than MIN_SITE_CASES cases: nothing to run on."""


SIMULATION_KEYS = {"seed", "min-sites", "sim-data", "sim-work"}
"""Run settings `simulate` chooses itself (from --seed and the data folder), besides those `run` chooses."""


def plan_simulation(
    data: Path, out: Path, rounds: int, preset: str, seed: int, overrides: str = ""
) -> SimulationPlan:
    """`rounds` rounds of the `preset` model on the site folders under `data`, into the new folder `out`.

    `overrides`: more run settings as `key=value` pairs (--run-config), e.g. 'strategy="fedprox" local-norm=true',
    checked like `oncofed run`'s (deploy.federated_run.run_config_overrides)."""
    from deploy.federated_run import RESERVED_KEYS, run_config_overrides

    get_preset(preset)  # ValueError naming the valid presets
    extra = run_config_overrides(overrides, RESERVED_KEYS | SIMULATION_KEYS)
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    if (out / METRICS_FILE).exists():
        raise ValueError(f"run folder {out} already holds a run; choose a new --out")
    sites = site_folders(data)  # SiteDataError if `data` is not a folder
    if not sites:
        raise NotEnoughCases(
            f"federation data folder {data} holds no site folders (one sub-folder per site expected)"
        )
    for site in sites:
        try:
            n_cases = len(discover_cases(site))
        except SiteDataError as error:  # discover_cases: no case at all, with what it looked for
            raise NotEnoughCases(str(error)) from None
        if n_cases < MIN_SITE_CASES:
            raise NotEnoughCases(
                f"site folder {site} has {n_cases} case; at least {MIN_SITE_CASES} are needed "
                "(train + validate)"
            )
    run_dir = out.resolve()
    return SimulationPlan(
        app_dir=app_directory(),
        run_dir=run_dir,
        n_sites=len(sites),
        run_config={
            "num-server-rounds": rounds,
            "model-preset": preset,
            "seed": seed,
            "min-sites": len(sites),
            "run-dir": str(run_dir),
            "sim-data": str(data.resolve()),
            "sim-work": str(run_dir / "sites"),
            **extra,
        },
    )
