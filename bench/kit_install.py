"""How long a site kit takes to install offline (its wheels/, `--wheelhouse`) against the same kit from the package
index, each into a fresh prefix with the kit's own install.sh, and how big the kit is.

One federation with one site is provisioned with `--wheelhouse` (wheels from the shared wheel cache); the online
kit is the same kit without wheels/, so both installs take the same lock through the same script. Offline runs in
a network namespace of its own (`unshare -n`) with no pip configuration; online uses pip as this machine is set up
(its index, mirrors and find-links), with `--torch-index none` (the CPU torch comes from pip's configured sources
here) and pip's download cache off. The pairs alternate which install goes first. Headline:
`RATIO kit_install_offline_s_over_online` (median over pairs); below 1 means the offline install is faster.
"""

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import markdown_table, out_folder, parse, parser, report

from deploy.kits.site_keys import generate_site_keys
from deploy.kits.wheelhouse import WHEELS_DIR
from deploy.processes import free_port

ONCOFED = Path(sys.executable).parent / "oncofed"
OFFLINE = ["unshare", "-n"]
SITE = "hospital-a"


def clean_env() -> dict[str, str]:
    """No pip settings from the environment and no code from this checkout on the path."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}


def provision_kit(root: Path) -> Path:
    """A one-site federation provisioned with --wheelhouse; its site kit."""
    key = generate_site_keys(root / "hospital-keys", comment=SITE)
    (root / "spec.toml").write_text(
        f'federation = "bench-kit"\n\n[coordinator]\naddresses = ["localhost"]\nport = {free_port()}\n\n'
        f'[sites.{SITE}]\npublic-key = "{key.public}"\n'
    )
    command = [
        str(ONCOFED),
        "provision",
        str(root / "spec.toml"),
        "--out",
        str(root / "kits"),
        "--wheelhouse",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: provision failed: {done.stderr.strip()}")
    return root / "kits" / "sites" / SITE


def kit_size(kit: Path) -> tuple[int, int]:
    """(bytes, wheel files) of a kit folder."""
    files = [path for path in kit.rglob("*") if path.is_file()]
    return sum(path.stat().st_size for path in files), sum(path.suffix == ".whl" for path in files)


def timed_install(kit: Path, prefix: Path, offline: bool) -> float:
    """Seconds for the kit's install.sh into a fresh `prefix` (no user, no systemd unit)."""
    command = ["sh", str(kit / "install.sh"), "--prefix", str(prefix), "--no-user", "--no-systemd"]
    env = {**clean_env(), "PIP_NO_CACHE_DIR": "1"}
    if offline:
        command, env = [*OFFLINE, *command], {**env, "PIP_CONFIG_FILE": os.devnull}
    else:
        command += ["--torch-index", "none"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"error: install.sh ({'offline' if offline else 'online'}) failed: {done.stderr.strip()}"
        )
    shutil.rmtree(prefix)
    return seconds


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--pairs", type=int, default=1, help="offline/online install pairs (minutes each)")
    args = parse(options)
    started = time.monotonic()
    root = out_folder(args.out, "kit-install")
    offline_kit = provision_kit(root)
    online_kit = root / "online-kit"
    shutil.copytree(offline_kit, online_kit, ignore=shutil.ignore_patterns(WHEELS_DIR))
    size, wheels = kit_size(offline_kit)
    online_size, _ = kit_size(online_kit)

    rows, ratios = [], []
    for pair in range(args.pairs):
        order = (True, False) if pair % 2 == 0 else (False, True)
        seconds = {
            offline: timed_install(offline_kit if offline else online_kit, root / "prefix", offline)
            for offline in order
        }
        ratios.append(seconds[True] / seconds[False])
        rows.append(
            [
                pair + 1,
                "offline first" if order[0] else "online first",
                seconds[True],
                seconds[False],
                ratios[-1],
            ]
        )
    table = markdown_table(["pair", "order", "offline s", "online s", "offline / online"], rows)
    notes = [
        (
            f"Kit with --wheelhouse: {size / 1e6:.1f} MB, {wheels} wheels (the oncofed wheel included); "
            f"without wheels/: {online_size / 1e6:.2f} MB."
        ),
        (
            "Offline: `unshare -n`, no pip configuration, from the kit's wheels/. Online: pip as this machine is "
            "set up (PyPI, a local mirror, find-links holding the CPU torch wheel), `--torch-index none`; "
            "PIP_NO_CACHE_DIR=1 for both. Each install creates its venv and checks `oncofed --help` runs."
        ),
    ]
    report(
        "kit_install",
        args.results,
        [table],
        {"kit_install_offline_s_over_online": statistics.median(ratios), "kit_size_mb": size / 1e6},
        notes,
        started,
    )


if __name__ == "__main__":
    main()
