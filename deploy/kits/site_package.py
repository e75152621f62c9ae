"""The installable OncoFed package that travels in every kit, and the exact versions it was tested with.

Every member of a federation must run the same code and the same Flower: provisioning builds one wheel from
this source tree, puts it in each kit, and pins its dependencies to the versions installed here.
"""

import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from email.parser import Parser
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from deploy.flower_env import app_directory
from models.shared.atomic import atomic_path

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def build_wheel(dest: Path) -> Path:
    """Build the oncofed wheel into `dest` from a copy of the source tree (the checkout stays untouched)."""
    source = app_directory()
    setuptools = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    with tempfile.TemporaryDirectory(prefix="oncofed-wheel-") as tmp:
        staged = Path(tmp) / "src"
        staged.mkdir()
        for name in ("pyproject.toml", "README.md", *(f"{module}.py" for module in setuptools["py-modules"])):
            shutil.copy2(source / name, staged / name)
        for package in {p.split(".")[0] for p in setuptools["packages"]}:
            shutil.copytree(
                source / package, staged / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        out = Path(tmp) / "wheel"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--quiet",
                "--wheel-dir",
                str(out),
                str(staged),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = sorted(out.glob("oncofed-*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise RuntimeError(f"building the oncofed wheel from {source} failed:\n{result.stderr[-2000:]}")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / wheels[0].name
        with atomic_path(target) as partial:  # an interrupted copy never passes for a built wheel
            shutil.copyfile(wheels[0], partial)
    return target


def pinned_requirements(wheel: Path) -> list[str]:
    """`name==version` for each runtime dependency the wheel declares, at the version installed here."""
    pins = []
    for requirement in wheel_requirements(wheel):
        if "extra ==" in requirement:
            continue  # optional extras (dev tools) are not part of a site
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?", requirement)
        name, extras = match.group(1), match.group(2) or ""
        try:
            installed = version(name)
        except PackageNotFoundError:
            raise RuntimeError(
                f"{name} (required by {wheel.name}) is not installed here; "
                "run `make install` before provisioning"
            ) from None
        pins.append(
            f"{name}{extras}=={installed.split('+')[0]}"
        )  # 2.13.0+cpu: the build comes from the index
    return pins


def wheel_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines, as written in its METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        metadata_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode("utf-8"))
    return list(metadata.get_all("Requires-Dist") or [])


def requirements_text(wheel: Path) -> str:
    header = (
        f"# The versions {wheel.name} was tested with; install torch from {TORCH_CPU_INDEX} first "
        "(CPU build) or from the CUDA index for GPU sites."
    )
    return "\n".join([header, *pinned_requirements(wheel)]) + "\n"
