"""The release FAB: the Flower app bundle a federation runs, built once by `oncofed provision`, approved by hash.

Flower builds a FAB deterministically (flwr/cli/build.py `build_fab_from_files`: fixed zip timestamps, sorted
paths, a normalised pyproject.toml), so the same source gives the same SHA-256: a site can rebuild the reviewed
source with `flwr build` and compare. `flwr run` only takes an app folder and builds the FAB itself, so
submitting a given FAB means unpacking it into a private folder and checking that the rebuild there has the
FAB's own hash before `flwr run` is pointed at it (the sites' gates check the hash again).
"""

import hashlib
import io
import os
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from flwr.cli.build import build_fab_from_files, get_fab_filename
from flwr.cli.utils import build_pathspec, load_gitignore_patterns
from flwr.common.config import flatten_dict
from flwr.supercore.constant import APP_PUBLISH_EXCLUDE_PATTERNS

from models.shared.atomic import atomic_write_bytes

RELEASE_DIR = "release"
"""Kit folder holding the release FAB (coordinator and site kits)."""
CONTENT_INDEX = ".info/CONTENT"
"""Flower's per-file index inside a FAB: `path,sha256,size in bits` per line."""


class FabError(ValueError):
    """A file is not a usable FAB; the message names the file and what is wrong."""


@dataclass(frozen=True)
class FabFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class FabInfo:
    """What a site reviews before approving an app: who published it, which version, its hash and its files."""

    sha256: str
    publisher: str
    name: str
    version: str
    files: tuple[FabFile, ...]
    config_keys: frozenset[str]
    """The run settings the app declares ([tool.flwr.app.config])."""

    @property
    def file_name(self) -> str:
        """Flower's name for it: <publisher>.<name>.<version>.<hash prefix>.fab."""
        return get_fab_filename(
            {
                "tool": {"flwr": {"app": {"publisher": self.publisher}}},
                "project": {"name": self.name, "version": self.version},
            },
            self.sha256,
        )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_fab(source: Path) -> bytes:
    """The FAB of the Flower app in `source` (its pyproject.toml's [tool.flwr.app], fab-include), as Flower builds it."""
    if not (source / "pyproject.toml").is_file():
        raise FabError(f"{source} holds no pyproject.toml: not a Flower app folder")
    try:
        return build_fab_from_files(app_files(source))[0]
    except ValueError as error:
        raise FabError(f"building the app in {source} failed: {error}") from None


def app_files(source: Path) -> dict[str, Path]:
    """The files Flower's `build_fab_from_disk` collects from `source` (flwr/cli/utils.py `collect_files`), less
    the folders whose every file its filter drops anyway: those .gitignore or Flower's exclude patterns name
    (.venv alone holds tens of thousands of files; walking them made each build take seconds). The FAB is the
    same, byte for byte (tests/unit/test_provision.py compares it with Flower's own build)."""
    root = source.expanduser().resolve()
    gitignore = load_gitignore_patterns(root / ".gitignore")
    if any(pattern.lstrip().startswith("!") for pattern in gitignore):  # a negation may re-include: walk all
        gitignore = []
    ignored, excluded = build_pathspec(gitignore), build_pathspec(APP_PUBLISH_EXCLUDE_PATTERNS)
    files: dict[str, Path] = {}
    for folder, subfolders, names in os.walk(root, followlinks=False):
        relative = Path(folder).relative_to(root)
        subfolders[:] = [
            name
            for name in subfolders
            if not ignored.match_file(f"{(relative / name).as_posix()}/")
            and not excluded.match_file(f"{(relative / name).as_posix()}/any")
        ]
        for name in names:
            path = Path(folder) / name
            if path.is_symlink() or not path.resolve().is_relative_to(root):
                continue
            files[path.relative_to(root).as_posix()] = path
    return files


def inspect_fab(data: bytes, origin: str) -> FabInfo:
    """Read a FAB's metadata and file list; `origin` names it in errors (a path)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
        pyproject = tomllib.loads(archive.read("pyproject.toml").decode("utf-8"))
        index = archive.read(CONTENT_INDEX).decode("utf-8") if CONTENT_INDEX in names else ""
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise FabError(f"{origin} is not a Flower app bundle (FAB): {error}") from None
    try:
        project, app = pyproject["project"], pyproject["tool"]["flwr"]["app"]
        publisher, name, version = str(app["publisher"]), str(project["name"]), str(project["version"])
    except (KeyError, TypeError):
        raise FabError(
            f"{origin}: its pyproject.toml lacks [project] name/version or [tool.flwr.app] publisher"
        ) from None
    files = []
    for line in index.splitlines():
        path, digest, bits = line.rsplit(",", 2)
        files.append(FabFile(path=path, size=int(bits) // 8, sha256=digest))
    return FabInfo(
        sha256=sha256_hex(data),
        publisher=publisher,
        name=name,
        version=version,
        files=tuple(files),
        config_keys=frozenset(flatten_dict(app.get("config", {}))),
    )


def read_fab(path: Path) -> tuple[bytes, FabInfo]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise FabError(f"{path} cannot be read ({error.strerror})") from None
    return data, inspect_fab(data, str(path))


def write_release(kit_root: Path, data: bytes) -> Path:
    """Put the FAB into the kit's release/ folder under Flower's file name; returns its path."""
    info = inspect_fab(data, "the release FAB")
    target = kit_root / RELEASE_DIR / info.file_name
    atomic_write_bytes(target, data)
    return target


def unpack_for_submission(fab: Path, folder: Path) -> FabInfo:
    """Unpack `fab` into the empty private `folder` so that `flwr run folder` submits exactly this FAB.

    Raises FabError when a member path would leave the folder, or when Flower's rebuild of the unpacked files
    does not reproduce the FAB's hash (then `flwr run` would submit other bytes than the ones approved).
    """
    data, info = read_fab(fab)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in archive.namelist():
            parts = PurePosixPath(member).parts
            if PurePosixPath(member).is_absolute() or ".." in parts:
                raise FabError(f"{fab}: member {member!r} would be written outside the unpack folder")
        archive.extractall(folder)
    rebuilt = sha256_hex(build_fab(folder))
    if rebuilt != info.sha256:
        raise FabError(
            f"{fab} (sha256 {info.sha256}) is not a FAB as Flower {_flwr_version()} builds it: rebuilding its "
            f"files gives sha256 {rebuilt}. Build releases with `flwr build` or `oncofed provision`"
        )
    return info


def _flwr_version() -> str:
    from importlib.metadata import version

    return version("flwr")
