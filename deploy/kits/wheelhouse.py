"""A site kit's hashed lock and wheelhouse: exactly the files a site installs, so a hospital without internet
access installs with `pip install --no-index --find-links wheels --require-hashes -r requirements.lock`.

The lock names every runtime dependency of the oncofed wheel (its Requires-Dist, followed through the installed
distributions' own requirements and extras) at the version installed here (the versions the tests ran with, the
CPU build of torch included), with the SHA-256 of the wheel file for this platform, and the oncofed wheel itself
by its path in the kit. The wheels come from a cache outside the kits (`--wheel-cache`, default
~/.cache/oncofed/wheels): only files missing there are fetched with `pip download`, so provisioning more kits,
and the tests, download each file once per machine.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import sys_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from deploy.kits.site_package import TORCH_CPU_INDEX, wheel_requirements
from models.shared.atomic import atomic_write_text

LOCK_FILE = "requirements.lock"
WHEELS_DIR = "wheels"
HASH_MEMO = "sha256.json"
"""In the cache: file name -> [size, mtime_ns, sha256], so a provisioning hashes each cached file once."""


class WheelhouseError(RuntimeError):
    """A wheel the site needs could not be found or fetched; the message names it and the fix."""


@dataclass(frozen=True)
class Pin:
    name: str
    """Canonical (PEP 503) name."""
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class WheelSource:
    """Where provisioning takes the site kits' wheels from, and whether they go into the kits."""

    cache: Path
    wheelhouse: bool = False
    """True: every new site kit gets wheels/ (an offline install); False: only the hashed lock."""


@dataclass(frozen=True)
class LockedWheel:
    pin: Pin
    path: Path
    sha256: str


def default_wheel_cache() -> Path:
    """~/.cache/oncofed/wheels (XDG_CACHE_HOME respected): outside every kit, shared by all provisionings."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oncofed" / "wheels"


def runtime_pins(wheel: Path) -> list[Pin]:
    """Every distribution the wheel needs at run time (extras it asks for included, optional extras of the
    wheel itself left out), each at the version installed in this environment; sorted by name."""
    found: dict[str, tuple[str, set[str]]] = {}
    queue = [(Requirement(text), "") for text in wheel_requirements(wheel)]
    while queue:
        requirement, extra = queue.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        seen = found.get(name)
        if seen is not None and set(requirement.extras) <= seen[1]:
            continue
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            raise WheelhouseError(
                f"{requirement.name} (needed by {wheel.name}) is not installed here; run `make install` "
                "before provisioning"
            ) from None
        extras = (seen[1] if seen else set()) | set(requirement.extras)
        found[name] = (dist.version, extras)
        for text in dist.requires or []:
            queue += [(Requirement(text), context) for context in ("", *sorted(extras))]
    return [Pin(name, found[name][0]) for name in sorted(found)]


def locked_wheels(pins: list[Pin], cache: Path) -> list[LockedWheel]:
    """The wheel of each pin for this platform, from `cache`; missing ones are fetched into it first."""
    cache.mkdir(parents=True, exist_ok=True)
    pins = [Pin(pin.name, str(Version(pin.version))) for pin in pins]  # the form wheel file names parse to
    missing = [pin for pin in pins if pin not in _cached_wheels(cache)]
    if missing:
        _download(missing, cache)
    cached = _cached_wheels(cache)
    still = [pin.requirement for pin in pins if pin not in cached]
    if still:
        raise WheelhouseError(
            f"no wheel for this platform of {', '.join(still)} in {cache} after pip download"
        )
    memo = _read_memo(cache)
    locked = [LockedWheel(pin, cached[pin], _sha256(cached[pin], memo)) for pin in pins]
    atomic_write_text(cache / HASH_MEMO, json.dumps(memo, indent=0, sort_keys=True))
    return locked


def lock_text(wheels: list[LockedWheel], package: Path, package_in_kit: str) -> str:
    """requirements.lock: one `name==version --hash=sha256:…` per dependency, then the oncofed wheel by its
    path relative to the kit (pip reads it from the folder the command runs in: the kit)."""
    offline = f"pip install --no-index --find-links {WHEELS_DIR} --require-hashes -r {LOCK_FILE}"
    online = f"pip install --require-hashes --extra-index-url {TORCH_CPU_INDEX} -r {LOCK_FILE}"
    lines = [
        "# Every wheel this site installs, with its SHA-256 (written by `oncofed provision`; do not edit).",
        f"# In the kit folder, offline:  {offline}",
        f"# From an index instead:       {online}",
    ]
    for wheel in wheels:
        lines.append(f"{wheel.pin.requirement} \\\n    --hash=sha256:{wheel.sha256}")
    lines.append(f"./{package_in_kit} \\\n    --hash=sha256:{file_sha256(package)}")
    return "\n".join(lines) + "\n"


def copy_wheels(wheels: list[LockedWheel], folder: Path) -> int:
    """Copy the wheels into a kit's wheels/ (copies, never links: the kit travels, the cache stays); total bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for wheel in wheels:
        shutil.copyfile(wheel.path, folder / wheel.path.name)
        total += wheel.path.stat().st_size
    return total


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_wheels(cache: Path) -> dict[Pin, Path]:
    """For each pin in `cache`, the wheel that installs on this interpreter and platform (the most specific
    tag first)."""
    supported = {str(tag): rank for rank, tag in enumerate(sys_tags())}
    best: dict[Pin, tuple[int, Path]] = {}
    for path in cache.glob("*.whl"):
        try:
            name, version, _, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        ranks = [supported[str(tag)] for tag in tags if str(tag) in supported]
        pin = Pin(name, str(version))
        if ranks and (pin not in best or min(ranks) < best[pin][0]):
            best[pin] = (min(ranks), path)
    return {pin: path for pin, (_, path) in best.items()}


def _download(pins: list[Pin], cache: Path) -> None:
    """`pip download` of binary wheels only, with the index pip is configured with; a local build (torch's
    `+cpu`) comes from the PyTorch CPU index."""
    plain = [pin.requirement for pin in pins if "+" not in pin.version]
    local = [pin.requirement for pin in pins if "+" in pin.version]
    for requirements, extra in ((plain, []), (local, ["--extra-index-url", TORCH_CPU_INDEX])):
        if not requirements:
            continue
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
        result = subprocess.run(
            [*command, *extra, "--dest", str(cache), *requirements],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise WheelhouseError(
                f"pip download of {len(requirements)} wheel(s) into {cache} failed ({last}); this needs the "
                "package index once per machine: check the network or pip's index settings"
            )


def _read_memo(cache: Path) -> dict[str, list]:
    try:
        return json.loads((cache / HASH_MEMO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _sha256(path: Path, memo: dict[str, list]) -> str:
    stat = path.stat()
    known = memo.get(path.name)
    if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
        return known[2]
    digest = file_sha256(path)
    memo[path.name] = [stat.st_size, stat.st_mtime_ns, digest]
    return digest
