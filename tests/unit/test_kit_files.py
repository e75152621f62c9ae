"""The kits' compose files, Dockerfiles, systemd units and start scripts parse, reference files that exist in the
kit, and pin every version (no Docker engine here: we check what `docker compose build` would read)."""

import configparser
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.kits.federation_spec import read_spec
from deploy.kits.provision import provision
from deploy.kits.site_keys import generate_site_keys

PINNED = re.compile(r"^[A-Za-z0-9._-]+(\[[A-Za-z0-9,._-]+\])?==[0-9][A-Za-z0-9.+!-]*$")


@pytest.fixture(scope="module")
def kits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kit-files")
    generate_site_keys(root / "hospital-a-keys")
    (root / "spec.toml").write_text(
        'federation = "files"\n\n[coordinator]\naddresses = ["fl.example.org"]\nport = 8443\n\n'
        '[sites.hospital-a]\npublic-key = "hospital-a-keys/site.pub"\n'
    )
    provision(read_spec(root / "spec.toml"), root / "out")
    return root / "out"


def kit_dirs(kits: Path) -> list[Path]:
    return [kits / "coordinator", kits / "sites" / "hospital-a"]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            joined.append(pending.strip())
            pending = ""
    assert not pending, f"{path}: unterminated continuation"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def dockerignore_allows(kit: Path, relative: str) -> bool:
    """Our .dockerignore excludes everything, then re-includes patterns with `!`."""
    patterns = [p for p in (kit / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    allowed = False
    for pattern in patterns:
        negated, body = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
        if body == "*" or relative == body or relative.startswith(body + "/"):
            allowed = negated
    return allowed


@pytest.mark.parametrize("which", [0, 1], ids=["coordinator", "site"])
def test_compose_file(kits, which):
    kit = kit_dirs(kits)[which]
    compose = yaml.safe_load((kit / "compose.yaml").read_text())
    (service,) = compose["services"].values()
    assert (kit / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    tag = service["image"].rsplit(":", 1)[1]
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), service["image"]
    assert service["command"][:2] == ["coordinator" if which == 0 else "site", "start"]
    for volume in service["volumes"]:
        source = volume[: volume.index("}") + 1] if volume.startswith("${") else volume.split(":", 1)[0]
        if source.startswith(
            "${"
        ):  # a host folder the operator must name: compose refuses to start without it
            assert re.fullmatch(r"\$\{ONCOFED_[A-Z_]+:\?[^}]+\}", source), volume
        else:
            assert (kit / source).exists(), volume
    assert re.fullmatch(r"\$\{ONCOFED_UID:-10001\}:\$\{ONCOFED_GID:-10001\}", service["user"])
    if which == 1:
        assert "ports" not in service  # a site only connects out
        assert any(v.startswith("${ONCOFED_KEY_DIR:?") and v.endswith(":ro") for v in service["volumes"])
    else:
        assert service["ports"] == ["8443:8443"]  # the proxy only: the SuperLink stays on 127.0.0.1


@pytest.mark.parametrize("which", [0, 1], ids=["coordinator", "site"])
def test_dockerfile(kits, which):
    kit = kit_dirs(kits)[which]
    instructions = dockerfile_instructions(kit / "Dockerfile")
    assert instructions[0][0] == "FROM"
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-bookworm", instructions[0][1]), instructions[0]
    for instruction, arguments in instructions:
        if instruction == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                assert (kit / source).is_file(), f"COPY {source}: not in the kit"
                assert dockerignore_allows(kit, source), f"COPY {source}: excluded by .dockerignore"
        if instruction == "RUN" and "pip install" in arguments:
            words = shlex.split(arguments)
            for word in words[words.index("install") + 1 :]:
                if word.startswith(("-", "http", "/opt/oncofed/")):
                    continue
                assert PINNED.match(word), f"unpinned: {word}"
    for secret in ("keys/site.key", "certs/server.key", "state/superlink.db", "revoked-sites.toml"):
        assert not dockerignore_allows(kit, secret)
    installs_nginx = any(i == "RUN" and "nginx-light" in a for i, a in instructions)
    assert installs_nginx == (which == 0)  # `coordinator start` runs nginx in the container
    requirements = [
        line
        for line in (kit / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert requirements and all(PINNED.match(line) for line in requirements), requirements
    assert any(line.startswith("flwr") and "==1.42" in line for line in requirements)


@pytest.mark.parametrize(("which", "unit"), [(0, "oncofed-coordinator.service"), (1, "oncofed-site.service")])
def test_systemd_unit(kits, which, unit):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(kit_dirs(kits)[which] / unit)
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    command = shlex.split(parser["Service"]["ExecStart"])
    assert command[0].endswith("/bin/oncofed") and command[1:3] == [
        "coordinator" if which == 0 else "site",
        "start",
    ]
    assert command[3] == "--kit" and Path(command[4]).is_absolute()
    assert parser["Service"]["KillMode"] == "mixed" and parser["Service"]["Restart"] == "on-failure"


@pytest.mark.parametrize("which", [0, 1], ids=["coordinator", "site"])
def test_start_script(kits, which):
    script = kit_dirs(kits)[which] / "start.sh"
    assert script.stat().st_mode & 0o111
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert ("coordinator" if which == 0 else "site") + ' start --kit "$KIT"' in script.read_text()


def test_readmes_name_the_kit(kits):
    site_readme = (kits / "sites" / "hospital-a" / "README.md").read_text()
    assert "hospital-a" in site_readme and "oncofed site check --kit" in site_readme
    assert "@@{" not in site_readme
    assert "fl.example.org:8443" in site_readme
    assert "oncofed site approve" in site_readme and "approved-apps.toml" in site_readme
    assert "Test federation" not in site_readme
    coordinator_readme = (kits / "coordinator" / "README.md").read_text()
    assert "@@{" not in coordinator_readme
    for step in ("--add-site NAME --public-key FILE", "oncofed coordinator revoke", "--fab FILE", "offline"):
        assert step in coordinator_readme


def test_site_install_script_parses_and_the_readme_starts_with_the_three_commands(kits):
    kit = kits / "sites" / "hospital-a"
    script = kit / "install.sh"
    assert script.stat().st_mode & 0o111
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert "@@{" not in script.read_text()
    readme = (kit / "README.md").read_text()
    first = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert readme.index("```bash") < readme.index("\n## ")
    assert first == [
        "./install.sh",
        "sudo -u oncofed /opt/oncofed/venv/bin/oncofed site setup --kit /opt/oncofed/kit",
        "systemctl enable --now oncofed-site",
    ]
    assert "install.sh --keygen-only" in readme and "ssh-keygen -t ecdsa -b 384" in readme
    assert "oncofed site keygen --out /opt/oncofed/keys" not in readme  # needs oncofed, installed only later
