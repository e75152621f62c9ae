"""One real tiny federation run, shared by the privacy, report and site-report tests (run once per session).

Two synthetic sites with demo-like case counts on the tiny grid (hospital-a: 26 NIfTI cases, hospital-b: 5 DICOM
+ DICOM-SEG cases), one round, through the project's own launcher (deploy.simulation.launch.run_simulation) with the
site's ClientApp wrapped so that every Message a site sends is captured (capturing_clientapp.py). The sites keep
the default disclosure policy (minimum of 5 validation and 5 training cases, their own split with 20 % for
validation; no run setting chooses it and the run's seed is not used): hospital-a reports on 5 validation
cases and trains on 21; hospital-b has 1 validation and 4 training cases, so it suppresses its numbers and
declines to train. Each site's work folder gets a fixed secret before the run, so the run is repeatable.
"""

import dataclasses
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from synthetic_site import add_nifti_cases, fix_site_secret
from wire_messages import read_sent

from data_prep.synth.federation import write_federation
from deploy.flower_env import toml_value
from deploy.simulation.launch import failure_context, run_simulation
from deploy.simulation.plan import plan_simulation

REPO = Path(__file__).resolve().parents[2]
SITES = ("hospital-a", "hospital-b")
REPORTING, SUPPRESSED = "hospital-a", "hospital-b"
MIN_REPORT_CASES = 5
REPORTING_CASES = 26
"""hospital-a: 6 tiny cases from `synth`, 20 more from the same generator (20 % of 26 = 5 validation cases)."""
DATA_SEED = 3


@dataclass(frozen=True)
class CapturedRun:
    data: Path
    run_dir: Path
    captured: dict[str, list[tuple[str, bytes]]]
    """site → [(file name, serialized Message)] of everything the site sent."""
    output: str

    def work(self, site: str) -> Path:
        return self.run_dir / "sites" / site

    def messages(self, site: str):
        return [(name, read_sent(raw)) for name, raw in self.captured[site]]


MATRIX_SITES = ("hospital-a", "hospital-b", "hospital-c")
MATRIX_CONSENTING = ("hospital-a", "hospital-c")
"""The cross-site matrix run: three NIfTI sites of MATRIX_CASES cases each, all training a local-only baseline;
hospital-b does not consent to share it."""
MATRIX_CASES = 20
MATRIX_MIN_REPORT_CASES = 3

_RUN: CapturedRun | None = None
_MATRIX_RUN: CapturedRun | None = None
_OPTION_RUNS: dict[str, CapturedRun] = {}


def captured_run(tmp_path_factory) -> CapturedRun:
    global _RUN
    if _RUN is None:
        _RUN = _run(tmp_path_factory.mktemp("captured-run"))
    return _RUN


def option_run(tmp_path_factory, name: str, overrides: dict, rounds: int = 1) -> CapturedRun:
    """The same federation and settings as captured_run with more run settings (`overrides`), run once per
    session under `name`; the same data (DATA_SEED) and site secrets, so runs differ only by their settings."""
    if name not in _OPTION_RUNS:
        _OPTION_RUNS[name] = _run(tmp_path_factory.mktemp(f"option-run-{name}"), overrides, rounds)
    return _OPTION_RUNS[name]


def matrix_run(tmp_path_factory) -> CapturedRun:
    """One round with local-only baselines on three NIfTI sites (4 validation, 16 training cases each), two of
    which consent to share their local-only model; every reply captured."""
    global _MATRIX_RUN
    if _MATRIX_RUN is None:
        overrides = {
            "local-baseline": True,
            "sim-share-local-model-for-evaluation": ",".join(MATRIX_CONSENTING),
            "sim-min-report-cases": MATRIX_MIN_REPORT_CASES,
        }
        _MATRIX_RUN = _run(tmp_path_factory.mktemp("matrix-run"), overrides, 1, MATRIX_SITES, _matrix_data)
    return _MATRIX_RUN


def _matrix_data(data: Path) -> None:
    for site in MATRIX_SITES:
        add_nifti_cases(data / site, 0, MATRIX_CASES, seed=DATA_SEED, name=site)


def capture_app(folder: Path, run_config: dict, module: str = "capturing_clientapp") -> Path:
    """A Flower app folder whose ClientApp is a capturing wrapper (tests/support/<module>.py); same ServerApp,
    same run config keys."""
    folder.mkdir()
    shutil.copy(REPO / "tests" / "support" / f"{module}.py", folder / f"{module}.py")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    config = {**project["tool"]["flwr"]["app"]["config"], **run_config}
    lines = [
        "[project]",
        'name = "oncofed-capture"',
        'version = "0.1.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "oncofed"',
        f'fab-include = ["{module}.py"]',
        "",
        "[tool.flwr.app.components]",
        'serverapp = "server_app.app:app"',
        f'clientapp = "{module}:app"',
        "",
        "[tool.flwr.app.config]",
        *(f"{key} = {toml_value(value)}" for key, value in config.items()),
    ]
    (folder / "pyproject.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _run(
    root: Path,
    overrides: dict | None = None,
    rounds: int = 1,
    sites: tuple[str, ...] = SITES,
    make_data=None,
) -> CapturedRun:
    data, run_dir, capture = root / "data", root / "run", root / "captured"
    if make_data is None:
        write_federation(data, n_sites=len(sites), seed=DATA_SEED, preset="tiny")
        add_nifti_cases(data / REPORTING, 6, REPORTING_CASES - 6, seed=DATA_SEED, name=REPORTING)
    else:
        make_data(data)
    plan = plan_simulation(data, run_dir, rounds=rounds, preset="tiny", seed=1)
    run_config = {
        **plan.run_config,
        "local-epochs": 1,
        "samples-per-case": 1,
        "sim-min-report-cases": MIN_REPORT_CASES,
        "eval-regions": "brats",
        "capture-dir": str(capture),
        **(overrides or {}),
    }
    for index, site in enumerate(sites):
        fix_site_secret(run_dir / "sites" / site, 11 + index)
    plan = dataclasses.replace(plan, app_dir=capture_app(root / "app", run_config), run_config=run_config)
    lines: list[str] = []
    code = run_simulation(plan, lines.append)
    assert code == 0, f"flwr run exit code {code}\n{failure_context(run_dir)}"
    captured = {site: [] for site in sites}
    for path in sorted(capture.iterdir()):
        captured[sites[int(path.name.split("-")[0])]].append((path.name, path.read_bytes()))
    return CapturedRun(data=data, run_dir=run_dir, captured=captured, output="\n".join(lines))
