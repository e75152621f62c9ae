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


def _append_import(module_file: Path, imported: str, why: str) -> None:
    with open(module_file, "a", encoding="utf-8") as module:
        module.write(f"\nimport {imported}  # noqa: E402, F401 - {why}\n")


def test_a_forbidden_import_breaks_the_contract_that_forbids_it(tmp_path):
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    _append_import(
        tmp_path / "server_app" / "run_record" / "pooled.py",
        "site_app.disclosure.validation_replies",
        "the coordinator reaching into a site",
    )
    _append_import(
        tmp_path / "models" / "shared" / "wire.py", "data_prep.inventory", "the leaf importing an upper layer"
    )
    _append_import(
        tmp_path / "deploy" / "site" / "launcher.py",
        "deploy.coordinator.status",
        "site code on the coordinator",
    )
    _append_import(
        tmp_path / "deploy" / "kits" / "contents.py", "deploy.site.preflight", "a kit depending on a side"
    )

    result = lint_imports(tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "server_app imports only models (never site_app, data_prep or deploy) BROKEN" in output
    assert "models imports none of our packages BROKEN" in output
    assert "the coordinator's deploy code and the site's never import each other BROKEN" in output
    assert "deploy.kits and deploy's shared modules import neither side nor the simulation BROKEN" in output
    assert "server_app.run_record.pooled -> site_app.disclosure.validation_replies" in output
    assert "models.shared.wire -> data_prep.inventory" in output
    assert "deploy.site.launcher -> deploy.coordinator.status" in output
    assert "deploy.kits.contents -> deploy.site.preflight" in output
    # deploy.coordinator.status reads run folders (server_app), so the site's reach breaks that contract too; the
    # other two contracts still hold: the failures are the injected imports
    assert "deploy.site never imports the coordinator's app (server_app) BROKEN" in output
    assert "5 broken" in output
