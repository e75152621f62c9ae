"""Which app trained a run: the Flower app bundle (FAB) the run was started with, kept as RUN_DIR/app.json.

Flower hashes the FAB it installs for the ServerApp (SHA-256 of the FAB file, ``Run.fab_hash``); the same FAB is
what the sites install, so this hash names the code on both sides. The model card reports it.
"""

from pathlib import Path

from models.shared.atomic import atomic_write_json
from server_app.run_record.run_folder import read_json

APP_FILE = "app.json"


def write_app_identity(run_dir: Path, fab_id: str, fab_version: str, fab_hash: str) -> None:
    """Record the FAB's id, version and SHA-256 (empty strings where Flower gave none)."""
    atomic_write_json(
        run_dir / APP_FILE,
        {
            "fab_id": fab_id,
            "fab_version": fab_version,
            "fab_sha256": f"sha256:{fab_hash}" if fab_hash else "",
        },
    )


def read_app_identity(run_dir: Path) -> dict[str, str]:
    """The recorded identity, or {} for a run folder written before app.json existed."""
    return read_json(run_dir / APP_FILE)
