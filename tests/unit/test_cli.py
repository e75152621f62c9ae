"""The command layer: every group's help, one exit-code table (the README's matches the code), a start-up that
imports nothing heavy, and the exit code each kind of failure gives."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.shared.exit_codes import ExitCode, fail
from oncofed_cli import app

README = Path(__file__).resolve().parents[2] / "README.md"
HEAVY = ("torch", "flwr", "monai", "matplotlib", "cryptography", "highdicom", "pydicom", "nibabel")

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "listed"),
    [
        ([], ["synth", "simulate", "provision", "run", "coordinator", "report", "export", "site"]),
        (
            ["site"],
            ["check", "setup", "start", "report", "predict", "keygen", "approve", "apps", "revoke-app"],
        ),
        (["coordinator"], ["start", "status", "revoke"]),
    ],
)
def test_each_group_lists_its_commands(args, listed):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == ExitCode.OK, result.output
    assert f"Usage: oncofed {' '.join(args)}".rstrip() in " ".join(result.output.split())
    commands = re.findall(r"^│ (\S+) ", result.output.split("─ Commands ─")[1], flags=re.MULTILINE)
    assert commands == listed


@pytest.mark.parametrize(
    "command",
    [
        ["synth"],
        ["simulate"],
        ["provision"],
        ["run"],
        ["report"],
        ["export"],
        ["coordinator", "start"],
        ["coordinator", "revoke"],
        ["coordinator", "status"],
        ["site", "check"],
        ["site", "start"],
        ["site", "report"],
        ["site", "predict"],
        ["site", "keygen"],
        ["site", "approve"],
        ["site", "apps"],
        ["site", "revoke-app"],
    ],
)
def test_each_command_has_help(command):
    result = runner.invoke(app, [*command, "-h"])
    assert result.exit_code == ExitCode.OK, result.output
    assert f"Usage: oncofed {' '.join(command)} [OPTIONS]" in result.output


def test_help_texts_keep_brackets_and_placeholders():
    """Help is markdown: TOML tables and `<placeholders>` must survive rendering."""
    check = runner.invoke(app, ["site", "check", "--help"], env={"COLUMNS": "200"}).output
    assert "[series], [labels], [limits]" in check
    assert "sites/<site>/" in runner.invoke(app, ["provision", "--help"], env={"COLUMNS": "200"}).output


def test_help_names_the_synthetic_presets_and_the_site_limit():
    """`synth`'s help cannot import data_prep.synth (numpy, nibabel): it names them itself, and must agree."""
    from data_prep.synth.profiles import MAX_SITES, PRESETS

    help_text = " ".join(runner.invoke(app, ["synth", "--help"], env={"COLUMNS": "200"}).output.split())
    assert f"1-{MAX_SITES}" in help_text
    assert re.search(r" \| ".join(f"{preset} [^|]*" for preset in PRESETS).rstrip(), help_text)


def test_help_names_the_model_presets():
    from models.presets import MODEL_PRESETS

    for command in ("simulate", "run"):
        help_text = " ".join(runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output.split())
        assert f"Model preset: {' | '.join(MODEL_PRESETS)}." in help_text, command


def test_importing_the_cli_loads_nothing_heavy():
    code = "import sys, oncofed_cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(loaded.split()) & set(HEAVY) == set()


def readme_exit_codes() -> dict[int, str]:
    """code → name from the table of README's "Exit codes" section."""
    section = README.read_text(encoding="utf-8").split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", section, flags=re.MULTILINE)
    assert len(rows) == len({code for code, _ in rows}), "a code documented twice"
    return {int(code): name for code, name in rows}


def test_the_exit_code_table_is_unique_and_documented():
    codes = {member.value: member.name for member in ExitCode}
    assert len(codes) == len(ExitCode.__members__)  # no two names share a code
    assert readme_exit_codes() == codes
    assert (ExitCode.OK, ExitCode.USAGE, ExitCode.INTERRUPTED) == (0, 2, 130)  # fixed by convention


def test_fail_prints_one_line_as_written_and_gives_the_code(capsys):
    exit_ = fail("site.toml [labels] is wrong", ExitCode.BAD_INPUT)
    assert exit_.exit_code == ExitCode.BAD_INPUT
    assert capsys.readouterr().err == "error: site.toml [labels] is wrong\n"
    with pytest.raises(ValueError):
        fail("nothing failed", ExitCode.OK)


def one_error(result, code: ExitCode) -> str:
    """The single `error:` line of a command that exited with `code`."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["synth", "--out", "{tmp}/fed", "--preset", "huge"], "huge"),
        (["synth", "--out", "{tmp}/fed", "--seed", "-1"], "--seed"),
        (["simulate", "--data", "{tmp}/nowhere", "--out", "{tmp}/run"], "nowhere"),
        (["simulate", "--data", "{tmp}", "--out", "{tmp}/run", "--preset", "huge"], "huge"),
        (["provision", "{tmp}/missing.toml", "--out", "{tmp}/kits"], "missing.toml"),
        (["report", "{tmp}/nowhere"], "nowhere"),
        (["site", "report", "--work", "{tmp}/nowhere"], "nowhere"),
        (["site", "check", "--data", "{tmp}/nowhere", "--work", "{tmp}/work"], "nowhere"),
        (["coordinator", "start", "--kit", "{tmp}"], str(Path("{tmp}"))),
        (["coordinator", "status", "--kit", "{tmp}"], str(Path("{tmp}"))),
        (["simulate", "--resume", "{tmp}"], "not the run folder of a simulation"),
        (["simulate", "--data", "{tmp}", "--out", "{tmp}/run", "--run-config", "seed=4"], "--seed"),
    ],
)
def test_a_bad_input_is_bad_input(tmp_path, args, named):
    result = runner.invoke(app, [arg.format(tmp=tmp_path) for arg in args])
    assert named.format(tmp=tmp_path) in one_error(result, ExitCode.BAD_INPUT)
    assert not (tmp_path / "fed").exists() and not (tmp_path / "run").exists()


def test_no_usable_case_is_no_usable_data(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    result = runner.invoke(
        app, ["site", "check", "--data", str(tmp_path / "data"), "--work", str(tmp_path / "w")]
    )
    assert "no usable case" in one_error(result, ExitCode.NO_USABLE_DATA)
    assert "notes.txt" in result.stdout  # the report still says why


def test_a_site_without_cases_is_no_usable_data_for_simulate(tmp_path):
    (tmp_path / "fed" / "hospital-a").mkdir(parents=True)
    result = runner.invoke(app, ["simulate", "--data", str(tmp_path / "fed"), "--out", str(tmp_path / "run")])
    assert "hospital-a" in one_error(result, ExitCode.NO_USABLE_DATA)
    assert not (tmp_path / "run").exists()


def test_a_folder_without_a_validated_round_is_no_usable_data_for_report(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert "no validation results" in one_error(result, ExitCode.NO_USABLE_DATA)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["synth", "--out", "x", "--bogus"],
        ["site", "check", "--format", "xml", "--data", "x", "--work", "y"],
        ["site", "check", "--data", "x"],  # neither --kit nor --data with --work
        ["simulate", "--resume", "x", "--out", "y"],  # a resumed run keeps its folder and data
        ["simulate", "--rounds", "2"],  # neither --data with --out nor --resume
        ["run", "--kit", "x", "--resume", "y", "--preset", "tiny"],  # a resumed run keeps its model
        ["nonsense"],
    ],
)
def test_a_usage_error_is_usage(args):
    result = runner.invoke(app, args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "Usage: oncofed" in result.output
