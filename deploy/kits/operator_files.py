"""The operator-facing files of a kit (start script, systemd unit, compose file, Dockerfile, README, site.toml),
rendered from deploy/templates/ with `@@{name}` placeholders (so `$VAR` in shell and compose stays as written)."""

import string
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from deploy.flower_env import toml_value
from deploy.kits.contents import (
    APPROVED_APPS_FILE,
    CONNECTION,
    DEFAULT_RUNTIME_PORT,
    PLACEHOLDER,
    REVOKED_FILE,
    SITE_FILE,
    CoordinatorKit,
)
from deploy.kits.release_fab import RELEASE_DIR, FabInfo
from deploy.kits.site_package import TORCH_CPU_INDEX
from deploy.kits.wheelhouse import LOCK_FILE, WHEELS_DIR
from models.shared.atomic import atomic_write_bytes
from models.shared.node_config import (
    DEFAULT_MIN_LESION_MM3,
    DEFAULT_MIN_POSITION_CASES,
    DEFAULT_MIN_REPORT_CASES,
    DEFAULT_MIN_TRAIN_CASES,
    DEFAULT_VALIDATION_FRACTION,
)
from site_app.settings.limits import DEFAULT_LIMITS

TEMPLATES = Path(__file__).parent / "templates"
INSTALL_ROOT = "/opt/oncofed"
"""Where the README and systemd units expect the kit (`kit/`) and the Python environment (`venv/`)."""
BASE_IMAGE = (
    f"python:{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}-slim-bookworm"
)
"""The Python this provisioning ran (and was tested) with, pinned to the patch release."""
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
"""The Python a site installs with: the kit's wheels are built for it."""


class _KitTemplate(string.Template):
    delimiter = "@@"


def render(template: str, **values: object) -> str:
    return _KitTemplate((TEMPLATES / template).read_text(encoding="utf-8")).substitute(values)


@dataclass(frozen=True)
class Release:
    """What every kit of one provisioning installs: the wheel and the Flower it was made for."""

    wheel: Path
    flwr_version: str

    def values(self, federation: str) -> dict[str, str]:
        return {
            "federation": federation,
            "flwr_version": self.flwr_version,
            "wheel": self.wheel.name,
            "oncofed_version": version("oncofed"),
            "install_root": INSTALL_ROOT,
            "base_image": BASE_IMAGE,
            "torch_index": TORCH_CPU_INDEX,
            "torch_version": version("torch").split("+")[0],
            "python_version": PYTHON_VERSION,
            "lock_file": LOCK_FILE,
        }


def write_kit_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        atomic_write_bytes(root / name, text.encode("utf-8"), mode=0o755 if name.endswith(".sh") else 0o644)


SITE_UID = 10001
"""The uid the kits' images run as (Dockerfile `useradd --uid`); compose files default to it."""
TEST_KEY_NOTE = (
    "**Test federation:** the coordinator generated this site's key pair (`oncofed provision "
    "--generate-site-keys`) and it is in this kit (`@@{key}`). Anyone who had this kit can act as the site: "
    "never use such a kit with real data."
)


def coordinator_files(release: Release, kit: CoordinatorKit) -> dict[str, str]:
    values = {
        **release.values(kit.federation),
        "port": kit.port,
        "superlink_port": kit.superlink_port,
        "names": ", ".join(kit.addresses),
        "connection": CONNECTION,
        "role": "coordinator",
        "release_fab": kit.release_fab,
        "release_sha256": kit.release_sha256,
        "revoked_file": REVOKED_FILE,
        "uid": SITE_UID,
        "system_install": (
            "# nginx: `oncofed coordinator start` runs it as the public face of the SuperLink (see proxy/nginx.conf).\n"
            "RUN apt-get update && apt-get install -y --no-install-recommends nginx-light && rm -rf /var/lib/apt/lists/*"
        ),
    }
    return {
        "start.sh": render("coordinator-start.sh", **values),
        "oncofed-coordinator.service": render("coordinator.service", **values),
        "compose.yaml": render("coordinator-compose.yaml", **values),
        "Dockerfile": render("Dockerfile", **values),
        ".dockerignore": render("dockerignore"),
        "README.md": render("coordinator-README.md", **values),
    }


def site_files(
    release: Release,
    federation: str,
    site: str,
    coordinator: str,
    names: list[str],
    key_fingerprint: str,
    fab: FabInfo,
    test_key: str | None = None,
) -> dict[str, str]:
    """`test_key`: where a generated test key is in the kit (--generate-site-keys), else None."""
    values = {
        **release.values(federation),
        "site": site,
        "coordinator": coordinator,
        "names": ", ".join(names),
        "key_fingerprint": key_fingerprint,
        "role": "site",
        "release_file": f"{RELEASE_DIR}/{fab.file_name}",
        "release_sha256": fab.sha256,
        "approved_apps": APPROVED_APPS_FILE,
        "uid": SITE_UID,
        "system_install": "",
        "test_key_note": TEST_KEY_NOTE.replace("@@{key}", test_key) if test_key else "",
        "min_report_cases": DEFAULT_MIN_REPORT_CASES,
        "min_position_cases": DEFAULT_MIN_POSITION_CASES,
        "min_train_cases": DEFAULT_MIN_TRAIN_CASES,
        "validation_fraction": DEFAULT_VALIDATION_FRACTION,
        "min_lesion_mm3": DEFAULT_MIN_LESION_MM3,
        "policy_defaults": f"min-report-cases {DEFAULT_MIN_REPORT_CASES}, min-position-cases"
        f" {DEFAULT_MIN_POSITION_CASES}, min-train-cases {DEFAULT_MIN_TRAIN_CASES}",
    }
    private_key = (
        test_key or f"{PLACEHOLDER}: absolute path of this site's site.key (made with `oncofed site keygen`)"
    )
    return {
        SITE_FILE: render(
            "site.toml",
            **values,
            site_toml=toml_value(site),
            coordinator_toml=toml_value(coordinator),
            runtime_port=DEFAULT_RUNTIME_PORT,
            private_key_toml=toml_value(private_key),
            limit_defaults=", ".join(f"{key} = {toml_value(value)}" for key, value in DEFAULT_LIMITS.items()),
        ),
        "start.sh": render("site-start.sh", **values),
        "install.sh": render(
            "site-install.sh",
            **values,
            python_tuple=f"{sys.version_info.major}, {sys.version_info.minor}",
            wheels_dir=WHEELS_DIR,
        ),
        "oncofed-site.service": render("site.service", **values),
        "compose.yaml": render("site-compose.yaml", **values),
        "Dockerfile": render("Dockerfile", **values),
        ".dockerignore": render("dockerignore"),
        "README.md": render("site-README.md", **values),
    }
