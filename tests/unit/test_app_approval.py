"""A site's allow-list of apps and the commands that change it (`site approve`, `site apps`, `site revoke-app`),
and what a FAB shows before it is approved; plus the checks that make `oncofed run` submit exactly a given FAB."""

import io
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.flower_env import app_directory
from deploy.kits.app_approval import (
    ApprovalError,
    approval_of,
    approve,
    read_allow_list,
    revoke,
    write_allow_list,
)
from deploy.kits.release_fab import (
    FabError,
    build_fab,
    inspect_fab,
    read_fab,
    sha256_hex,
    unpack_for_submission,
)
from models.shared.exit_codes import ExitCode
from oncofed_cli import app


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """The app of this source tree, as `oncofed provision` (and `flwr build`) builds it."""
    path = tmp_path_factory.mktemp("fab") / "release.fab"
    path.write_bytes(build_fab(app_directory()))
    return path


@pytest.fixture
def site_kit(tmp_path) -> Path:
    """What the approval commands need of a site kit: its manifest and its allow-list."""
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "kit.toml").write_text('kind = "site"\nsite-name = "hospital-a"\n')
    write_allow_list(kit / "approved-apps.toml", [])
    return kit


def site(runner: CliRunner, *args: str, stdin: str | None = None):
    """`oncofed site …`, as the operator runs it."""
    return runner.invoke(app, ["site", *args], input=stdin)


def changed(release: Path, tmp_path: Path) -> Path:
    """The same FAB with one file's content changed (a one-line edit), as a repacked zip."""
    source = zipfile.ZipFile(release)
    out = tmp_path / "changed.fab"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "site_app/app.py":
                data += b"\n# one more line\n"
            target.writestr(info, data)
    return out


def test_inspect_shows_publisher_version_hash_and_files(release):
    data, info = read_fab(release)
    assert info.sha256 == sha256_hex(data) and len(info.sha256) == 64
    assert (info.publisher, info.name, info.version) == ("oncofed", "oncofed", "0.1.0")
    paths = {file.path for file in info.files}
    assert {"site_app/app.py", "server_app/app.py", "models/presets.py"} <= paths
    assert all(file.size > 0 and len(file.sha256) == 64 for file in info.files)
    assert {"num-server-rounds", "local-epochs"} <= info.config_keys
    with pytest.raises(FabError, match="not a Flower app bundle"):
        inspect_fab(b"not a zip", "x.fab")


def test_allow_list_round_trip(tmp_path, release):
    path = tmp_path / "approved-apps.toml"
    assert read_allow_list(path) == []  # no file: nothing approved
    _, info = read_fab(release)
    assert approve(path, approval_of(info, "it@hospital-a", "reviewed")) is True
    assert approve(path, approval_of(info, "someone-else", "")) is False  # once is enough
    (app,) = read_allow_list(path)
    assert (app.sha256, app.approved_by, app.note) == (info.sha256, "it@hospital-a", "reviewed")
    with pytest.raises(ApprovalError, match="no approved app"):
        revoke(path, "0" * 64)
    with pytest.raises(ApprovalError, match="unique prefix of at least 8"):
        revoke(path, info.sha256[:4])
    assert revoke(path, info.sha256[:12]).sha256 == info.sha256
    assert read_allow_list(path) == []


def test_a_broken_allow_list_is_named(tmp_path):
    path = tmp_path / "approved-apps.toml"
    path.write_text('[[app]]\nsha256 = "abc"\n')
    with pytest.raises(ApprovalError, match=r"approved-apps.toml: \[\[app\]\] entry 1 has sha256 'abc'"):
        read_allow_list(path)
    path.write_text("[[app]\n")
    with pytest.raises(ApprovalError, match="not valid TOML"):
        read_allow_list(path)


def test_approve_shows_the_app_asks_and_adds_its_hash(site_kit, release):
    runner = CliRunner()
    _, info = read_fab(release)
    declined = site(runner, "approve", "--kit", str(site_kit), "--fab", str(release), stdin="n\n")
    assert declined.exit_code == ExitCode.REFUSED, declined.output  # nothing changed
    for shown in ("publisher: oncofed", "app: oncofed 0.1.0", f"sha256: {info.sha256}", "site_app/app.py"):
        assert shown in declined.output
    assert read_allow_list(site_kit / "approved-apps.toml") == []

    accepted = site(runner, "approve", "--kit", str(site_kit), "--fab", str(release), stdin="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert [a.sha256 for a in read_allow_list(site_kit / "approved-apps.toml")] == [info.sha256]

    listed = site(runner, "apps", "--kit", str(site_kit))
    assert listed.exit_code == 0 and info.sha256 in listed.output  # the full hash, for revoke-app

    removed = site(runner, "revoke-app", "--kit", str(site_kit), "--hash", info.sha256)
    assert removed.exit_code == 0 and read_allow_list(site_kit / "approved-apps.toml") == []
    listed = site(runner, "apps", "--kit", str(site_kit))
    assert "this site runs nothing" in listed.output


def test_approve_with_yes_and_bad_inputs(site_kit, release, tmp_path):
    runner = CliRunner()
    result = site(runner, "approve", "--kit", str(site_kit), "--fab", str(release), "--yes")
    assert result.exit_code == 0 and "Approved" in result.output
    result = site(runner, "approve", "--kit", str(site_kit), "--fab", str(tmp_path / "none.fab"), "--yes")
    assert result.exit_code == ExitCode.BAD_INPUT and "none.fab cannot be read" in result.output
    result = site(runner, "approve", "--kit", str(tmp_path), "--fab", str(release), "--yes")
    assert result.exit_code == ExitCode.BAD_INPUT and "is not a site kit" in result.output


def test_a_one_line_change_is_another_app(release, tmp_path):
    assert read_fab(changed(release, tmp_path))[1].sha256 != read_fab(release)[1].sha256


def test_submission_unpacks_exactly_the_fab(release, tmp_path):
    """`oncofed run` hands `flwr run` an unpacked folder whose rebuild is the FAB itself, byte for byte."""
    info = unpack_for_submission(release, tmp_path / "app")
    assert info.sha256 == sha256_hex(release.read_bytes()) == sha256_hex(build_fab(tmp_path / "app"))


def test_submission_refuses_a_fab_flower_would_rebuild_differently(release, tmp_path):
    """A repacked FAB (other zip metadata) would reach the sites as other bytes than the ones approved."""
    with pytest.raises(FabError, match="not a FAB as Flower .* builds it"):
        unpack_for_submission(changed(release, tmp_path), tmp_path / "app")


def test_submission_refuses_members_outside_the_folder(release, tmp_path):
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        for info in zipfile.ZipFile(release).infolist():
            archive.writestr(info, zipfile.ZipFile(release).read(info))
        archive.writestr("../outside.py", b"print('escaped')")
    (tmp_path / "evil.fab").write_bytes(evil.getvalue())
    with pytest.raises(FabError, match="outside the unpack folder"):
        unpack_for_submission(tmp_path / "evil.fab", tmp_path / "app")
    assert not (tmp_path / "outside.py").exists()
