"""Where Flower's commands and our Flower app are, and the environment every Flower process we start runs with:
our own FLWR_HOME, nothing phoned home, nothing installed at run time (otherwise the SuperLink `uv sync`s torch
with CUDA from the index), and a SuperExec that looks for work five times a second instead of once."""

import os
import shutil
import sys
from pathlib import Path

from models.shared.atomic import atomic_write_text

QUIET_FLOWER = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "PYTHONUNBUFFERED": "1",
}

PROMPT_FLOWER = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2"}
"""A SuperExec (a site's, which starts each message's ClientApp, and the SuperLink's, which starts the ServerApp)
asks its Runtime API for a task every this many seconds (flwr 1.42: flwr/supercore/superexec/run_superexec.py,
`_get_task_poll_interval`, default 1.0): every message waited half a second on average before its ClientApp
started. Each poll is one loopback request, logged only at Flower's DEBUG level."""


def flower_executable(name: str) -> str:
    """The Flower command installed beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(
            f"`{name}` not found; install the project (`make install`) into this environment"
        )
    return found


def app_directory() -> Path:
    """The Flower app (the folder with pyproject.toml's [tool.flwr.app]): this source tree."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(
            f"no pyproject.toml in {root}: OncoFed builds its Flower app (simulate, provision) from a source "
            "checkout installed with `pip install -e .`; `oncofed run` needs only the kit's release app"
        )
    return root


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Flower starts its helpers (flower-superexec, flwr-serverapp, …) by name: this Python's scripts come first."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {
        **os.environ,
        **QUIET_FLOWER,
        **PROMPT_FLOWER,
        "FLWR_HOME": str(flwr_home.resolve()),
        "PATH": path,
    }


def toml_value(value: bool | float | str) -> str:
    """A TOML literal for a run-config value (JSON string escapes are valid TOML basic strings)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


def write_connection(flwr_home: Path, name: str, address: str, root_certificates: Path | None = None) -> None:
    """$FLWR_HOME/config.toml with one SuperLink connection, made the default."""
    lines = [
        "[superlink]",
        f"default = {toml_value(name)}",
        "",
        f"[superlink.{name}]",
        f"address = {toml_value(address)}",
    ]
    if root_certificates is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {toml_value(str(root_certificates.resolve()))}")
    atomic_write_text(flwr_home / "config.toml", "\n".join(lines) + "\n")
