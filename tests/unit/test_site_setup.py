"""`oncofed site setup`: the flags (or, without a terminal, the install layout's defaults) go into site.toml with
every other line kept, every `site check` test runs, and the first cases and the excluded ones are shown. No
coordinator runs here, so its check is the one that fails (the whole path, connected, is in test_deployment.py)."""

import shutil
import stat
import tomllib
from pathlib import Path

import pytest
from federation_kits import write_spec
from typer.testing import CliRunner

from data_prep.synth.federation import write_federation
from deploy.kits.contents import SITE_FILE
from deploy.kits.federation_spec import read_spec
from deploy.kits.provision import TEST_KEY_PATH, provision
from deploy.processes import free_port
from models.shared.exit_codes import ExitCode
from oncofed_cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("setup")
    write_spec(root / "spec.toml", "setup-test", ["hospital-a"], free_port())
    provision(read_spec(root / "spec.toml"), root / "kits", generate_site_keys=True)
    write_federation(root / "data", n_sites=1, seed=3, preset="tiny")
    return root


@pytest.fixture
def kit(federation, tmp_path) -> Path:
    """A fresh copy of the site kit, as install.sh lays it out: PREFIX/kit beside PREFIX/keys and PREFIX/work."""
    prefix = tmp_path / "opt-oncofed"
    shutil.copytree(federation / "kits" / "sites" / "hospital-a", prefix / "kit")
    (prefix / "keys").mkdir(mode=0o700)
    shutil.copy2(prefix / "kit" / TEST_KEY_PATH, prefix / "keys" / "site.key")
    return prefix / "kit"


def setup(kit: Path, *args: str):
    return runner.invoke(app, ["site", "setup", "--kit", str(kit), *args], env={"COLUMNS": "200"})


def test_flags_go_into_site_toml_and_every_check_runs(kit, federation, tmp_path):
    data, work = federation / "data" / "hospital-a", tmp_path / "elsewhere" / "work"
    before = (kit / SITE_FILE).read_text()
    result = setup(
        kit, "--data", str(data), "--key", str(kit.parent / "keys" / "site.key"), "--work", str(work)
    )

    written = tomllib.loads((kit / SITE_FILE).read_text())
    assert (written["data-path"], written["work-path"]) == (str(data), str(work))
    assert written["private-key"] == str(kit.parent / "keys" / "site.key")
    changed = [
        (old, new)
        for old, new in zip(before.splitlines(), (kit / SITE_FILE).read_text().splitlines(), strict=True)
        if old != new
    ]
    assert [old.split(" =")[0] for old, _ in changed] == ["data-path", "work-path", "private-key"]
    assert stat.S_IMODE(work.stat().st_mode) == 0o700

    output = result.output
    for check in ("kit files", "site key", "approved apps", "flwr version", "data folder", "coordinator"):
        assert check in output
    assert "6 cases found: 6 usable, 0 excluded" in output and "hospital-a-001: usable" in output
    assert result.exit_code == ExitCode.BAD_INPUT  # only the coordinator is not there
    assert "1 check(s) of the site failed (coordinator)" in output


def test_without_a_terminal_key_and_work_keep_site_toml_or_follow_the_install_layout(kit, federation):
    """The test kit's site.toml names its key (relative to the kit): kept; work-path is a placeholder: the
    layout's PREFIX/work."""
    result = setup(kit, "--data", str(federation / "data" / "hospital-a"))
    written = tomllib.loads((kit / SITE_FILE).read_text())
    assert written["private-key"] == str(kit / TEST_KEY_PATH)
    assert written["work-path"] == str(kit.parent / "work")
    assert "(coordinator)" in result.output  # the site key check passed: it is the kit's key


def test_data_is_asked_for_or_named(kit, federation, tmp_path):
    result = setup(kit)
    assert result.exit_code == ExitCode.BAD_INPUT and "give --data (no terminal to ask on)" in result.output
    result = setup(kit, "--data", str(tmp_path / "missing"))
    assert result.exit_code == ExitCode.BAD_INPUT and "is not a folder" in result.output
    data = federation / "data" / "hospital-a"
    result = setup(kit, "--data", str(data), "--work", str(data / "work"))
    assert result.exit_code == ExitCode.BAD_INPUT and "inside the data folder" in result.output
    assert "CHANGE-ME" in (kit / SITE_FILE).read_text()  # nothing written before the answers are sound


def test_excluded_cases_are_shown_with_their_reason(kit, federation, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(federation / "data" / "hospital-a", data)
    label = min((data / "labelsTr").iterdir())
    label.write_bytes(b"not a NIfTI file")
    result = setup(kit, "--data", str(data))
    assert "5 usable, 1 excluded" in result.output, result.output
    case = label.name.removesuffix(".nii.gz")
    assert "Excluded, and why:" in result.output and f"  {case}: " in result.output
