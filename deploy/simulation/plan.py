"""What `oncofed simulate` (and the benchmarks) will run, checked before any process starts.

A simulation's quorum (`min-sites`) is a majority of its sites, and every site is named to the coordinator
(`expected-sites`), as `oncofed run` does for a kit. Every problem is one sentence naming the folder or option:
a bad input is a ValueError (SiteDataError for a missing data folder), a federation without enough cases is
NotEnoughCases.
"""

from pathlib import Path

from data_prep.discovery import discover_cases
from data_prep.errors import SiteDataError
from deploy.coordinator.run_submission import parse_overrides
from deploy.flower_env import app_directory
from deploy.simulation.launch import SimulationPlan
from models.presets import get_preset
from models.shared.run_config import (
    EXPECTED_SITES,
    INIT_MODEL,
    MIN_SITES,
    MODEL_PRESET,
    NUM_SERVER_ROUNDS,
    RESUME,
    RUN_DIR,
    SEED,
    SETTINGS_BY_KEY,
    SIM_DATA,
    SIM_WORK,
    majority,
)
from server_app.coordinator_settings import ServerRunSettings
from server_app.rounds.round_checkpoint import CHECKPOINT_FILE
from server_app.run_record.run_folder import COMPLETED, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, read_json
from site_app.settings.identity import site_folders

MIN_SITE_CASES = 2
"""A simulated site trains on some cases and validates on others: at least one of each."""


class NotEnoughCases(SiteDataError):
    """The data folder holds no site, or a site with fewer than MIN_SITE_CASES cases: nothing to run on."""


SIMULATION_RESERVED = (
    NUM_SERVER_ROUNDS.key,
    MODEL_PRESET.key,
    SEED.key,
    RUN_DIR.key,
    SIM_DATA.key,
    SIM_WORK.key,
    EXPECTED_SITES.key,
    RESUME.key,
    INIT_MODEL.key,
)
"""Settings `simulate` chooses from its options and its data folder; `--run-config` may set any other."""


def plan_simulation(
    data: Path, out: Path, rounds: int, preset: str, seed: int, overrides: str = ""
) -> SimulationPlan:
    """`rounds` rounds of the `preset` model on the site folders under `data`, into the new folder `out`;
    `overrides`: more run settings as `key=value` pairs (`local-epochs=1 sim-min-train-cases=1`)."""
    get_preset(preset)  # ValueError naming the valid presets
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    extra = parse_overrides(
        overrides, SETTINGS_BY_KEY, SIMULATION_RESERVED, "--rounds, --preset, --seed, --data and --out"
    )
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
    plan = SimulationPlan(
        app_dir=app_directory(),
        run_dir=run_dir,
        n_sites=len(sites),
        run_config={
            NUM_SERVER_ROUNDS.key: rounds,
            MODEL_PRESET.key: preset,
            SEED.key: seed,
            MIN_SITES.key: majority(len(sites)),
            EXPECTED_SITES.key: ",".join(site.name for site in sites),
            RUN_DIR.key: str(run_dir),
            SIM_DATA.key: str(data.resolve()),
            SIM_WORK.key: str(run_dir / "sites"),
            **extra,
        },
    )
    ServerRunSettings.from_run_config(plan.run_config)  # e.g. a quorum above the number of sites
    return plan


def plan_resumed_simulation(run_dir: Path) -> SimulationPlan:
    """Continue a simulation in its run folder after its checkpoint's round, with its saved settings; ValueError
    says why a folder cannot be resumed."""
    run_config = read_json(run_dir / CONFIG_FILE).get("run_config")
    if not run_config or not run_config.get(SIM_DATA.key):
        raise ValueError(
            f"--resume {run_dir}: not the run folder of a simulation (no {CONFIG_FILE} naming {SIM_DATA.key})"
        )
    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise ValueError(
            f"--resume {run_dir}: no round checkpoint ({CHECKPOINT_FILE}): the run stopped before its first "
            "round ended; start a new simulation instead"
        )
    if read_json(run_dir / SUMMARY_FILE).get("status") == COMPLETED:
        raise ValueError(f"--resume {run_dir}: the run completed all its rounds; nothing to resume")
    sites = [s for s in str(run_config.get(EXPECTED_SITES.key, "")).split(",") if s]
    return SimulationPlan(
        app_dir=app_directory(),
        run_dir=run_dir.resolve(),
        n_sites=len(sites) or len(site_folders(Path(run_config[SIM_DATA.key]))),
        run_config={**run_config, RESUME.key: True, INIT_MODEL.key: ""},
    )
