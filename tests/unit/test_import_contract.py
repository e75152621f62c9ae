"""Who may import whom (pyproject.toml's [tool.importlinter]): the repository keeps every contract, and a copy of
it with a forbidden import breaks the contract that forbids it, so the check can fail."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("server_app", "site_app", "models", "data_prep", "deploy")
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    """lint-imports with the pyproject.toml in `folder`, on the packages in `folder` (it puts `folder` first on
    the import path)."""
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo", str(folder / "pyproject.toml")],
        check=False,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_repository_keeps_every_import_contract():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_forbidden_import_breaks_the_contract_that_forbids_it(tmp_path):
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "server_app" / "pooled.py", "a", encoding="utf-8") as module:
        module.write(
            "\nimport site_app.disclosure  # noqa: E402, F401 - the coordinator reaching into a site\n"
        )
    with open(tmp_path / "models" / "wire.py", "a", encoding="utf-8") as module:
        module.write("\nimport data_prep.inventory  # noqa: E402, F401 - the leaf importing an upper layer\n")

    result = lint_imports(tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "server_app imports only models (never site_app, data_prep or deploy) BROKEN" in output
    assert "models imports none of our packages BROKEN" in output
    assert "server_app.pooled -> site_app.disclosure" in output
    assert "models.wire -> data_prep.inventory" in output
    assert "2 broken" in output  # the other contracts still hold: the failure is the injected imports
