"""The benchmarks keep working: each script's --quick mode on the tiny preset, results to a temporary file."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

HEADLINES = {
    "quality": {
        "fed_over_central",
        "fed_over_local_min",
        "global_over_local_min",
        "rerun_dice_delta",
        "max_round_drop",
        "fp16_bytes_over_fp32",
        "fp16_dice_delta",
        "dp_dice_delta",
    },
    "pipeline": {"cached_over_uncached"},
    "overhead": {
        "round_over_compute_sim",
        "round_over_compute_deploy",
        "round_over_serial_compute_deploy",
        "clientapp_start_share_deploy_cold",
        "run_over_serial_compute_deploy",
        "round_over_serial_compute_deploy_cold",
        "warm_over_cold_round_deploy",
    },
    "aggregation": {"aggregation_over_memcpy", "fedavg_over_memcpy"},
    "scale": {"scale_round_per_site_over_baseline", "scale_memory_over_baseline"},
    "cli_start": {"cli_help_over_typer_import"},
    "kit_install": {"kit_install_offline_s_over_online", "kit_size_mb"},
    "adversaries": {"poisoned_dice_drop", "unprotected_poisoned_dice_drop", "robust_over_fedavg_clean"},
    "stability": {"tiny_pooled_dice", "max_round_drop", "empty_site_rounds", "rerun_dice_delta"},
    "secagg": {"secagg_round_over_plain"},
    "server_lr": {"fedadam_best_over_fedavg", "fedyogi_best_over_fedavg", "fedadam_default_over_best"},
    "fed_variants": {"constant_lr_over_base", "best_variant_over_base"},
}
HAS_DATA = {
    "quality",
    "pipeline",
    "overhead",
    "scale",
    "adversaries",
    "stability",
    "secagg",
    "server_lr",
    "fed_variants",
}


def run_quick(script: str, tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """bench/<script>.py --quick with its output under tmp_path/out and results in tmp_path/RESULTS.md."""
    command = [
        sys.executable,
        str(BENCH / f"{script}.py"),
        "--quick",
        "--out",
        str(tmp_path / "out"),
        "--results",
        str(tmp_path / "RESULTS.md"),
        *options,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)


PLATEAU = {
    "fed_over_central",
    "fed_over_local_min",
    "global_over_local_min",
    "central_over_local_min",
    "max_round_drop",
}


@pytest.mark.slow
def test_quality_plateau_mode(tmp_path):
    """--plateau: the search's table, the seeded arms at the chosen budget, the headline ratios."""
    results = tmp_path / "RESULTS.md"
    done = run_quick(
        "quality",
        tmp_path,
        "--plateau",
        "--max-epochs",
        "4",
        "--budget-epochs",
        "2",
        "--seeds",
        "2",
        "--data-seed",
        "3",
        "--test-cases",
        "1",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ratios = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("RATIO ")}
    on_validation = {f"val_{name}" for name in PLATEAU - {"max_round_drop"}}
    assert PLATEAU <= ratios and on_validation <= ratios, done.stdout[-3000:]
    text = results.read_text()
    assert "| centralized epochs | pooled mean Dice |" in text and "| 4 |" in text
    assert "Model: `tiny` (UNet channels 8-16-32, 2 halvings" in text  # which model the figures are of
    assert "ran at 2 epochs (--budget-epochs), not at the plateau budget" in text
    assert "Data: `oncofed synth --preset tiny --sites 2 --seed 3`." in text  # which draw of the cases
    assert "| seed 0 | seed 1 | mean ± sd |" in text and "· personalized |" in text
    assert "centralized over local-only (what one model trained on every site's cases gains" in text
    # every model measured again on a held-out case of each site
    assert "| held-out pooled mean Dice | seed 0 | seed 1 |" in text
    assert "Held-out rows: every model again on 1 held-out cases per site" in text
    # two seeds × two federated configurations, each a run folder of its own
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 4


@pytest.mark.slow
def test_quality_quick_on_the_consortium(tmp_path):
    """--preset consortium: six sites of 40 to 3 cases all train and validate (the 3-case site on 1 validation
    case); the personalized arm gives every site a figure and fed_over_local_min is taken over it."""
    done = run_quick("quality", tmp_path, "--preset", "consortium")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ratios = {
        line.split()[1]: float(line.split()[2])
        for line in done.stdout.splitlines()
        if line.startswith("RATIO ")
    }
    assert HEADLINES["quality"] <= set(ratios) and ratios["fed_over_local_min"] > 0, done.stdout[-3000:]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "`oncofed synth --preset consortium --sites 6 --seed 0`" in text
    assert "hospital-a 32/8" in text and "hospital-f 2/1" in text  # train/validation cases per site
    per_site = [line for line in text.splitlines() if line.startswith("| hospital-")]
    assert {line.split()[1] for line in per_site} >= {f"hospital-{c}" for c in "abcdef"}


def flower_homes_under(root: Path) -> list[str]:
    """FLWR_HOME values below `root` in the environment of any running process: Flower processes left behind."""
    prefix = f"FLWR_HOME={root.resolve()}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            found += [item.decode(errors="replace") for item in environ if item.startswith(prefix)]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEADLINES))
def test_quick_mode(name, tmp_path):
    results = tmp_path / "RESULTS.md"
    done = run_quick(name, tmp_path, *(["--preset", "tiny"] if name in HAS_DATA else []))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    ratios = {
        line.split()[1]: float(line.split()[2])
        for line in done.stdout.splitlines()
        if line.startswith("RATIO ")
    }
    assert HEADLINES[name] <= set(ratios), done.stdout[-3000:]
    assert all(
        not math.isnan(v) and (v >= 0 or k.endswith(("_dice_delta", "_drop"))) for k, v in ratios.items()
    ), ratios
    text = results.read_text()
    assert f"## {name} — " in text and "- command: `" in text and "- machine: " in text and "cores" in text
    assert all(f"RATIO {key} " in text for key in ratios)
    assert flower_homes_under(tmp_path) == []
    if name == "overhead":  # the deployed round's timeline, every hop timed, with warm and with cold starts
        rows = [
            line for line in text.splitlines() if line.startswith(("| ServerApp", "| SuperNode", "| compute"))
        ]
        assert len(rows) == 12 and all("–" not in row for row in rows), text
        assert "Timeline, deployment (warm ClientApp starts)" in text and "(cold ClientApp starts)" in text


def test_in_process_grid_replies_reach_the_site_they_answer(monkeypatch):
    """The quality benchmark's grid gives every pushed message its own id, so that server_app.rounds.grid_exchange files
    each site's reply under that site (without ids every reply answered "" and all but one site timed out)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import in_process
    from common import coordinator_identity
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from server_app.rounds.grid_exchange import exchange

    def echo(message: Message, context: Context) -> Message:
        return Message(RecordDict({"node": ConfigRecord({"id": context.node_id})}), reply_to=message)

    monkeypatch.setattr(in_process, "site_app", echo)
    contexts = {
        node: Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})
        for node in (101, 102, 103)
    }
    grid = in_process.InProcessGrid(contexts)
    with coordinator_identity():
        sent = [grid.create_message(RecordDict(), "query", node, "1") for node in contexts]
        answers = exchange(grid, sent, timeout_s=5, sleep=lambda _: None)
    assert answers.unanswered == ()
    assert {node: int(reply.content["node"]["id"]) for node, reply in answers.replies.items()} == {
        101: 101,
        102: 102,
        103: 103,
    }


def test_stability_names_a_run_setting_the_app_does_not_take(tmp_path):
    """--run-config is checked by the app's own parser: an unknown key is an `error:` line, not a traceback."""
    done = run_quick("stability", tmp_path, "--preset", "tiny", "--run-config", 'lr-shedule="constant"')
    assert done.returncode != 0
    assert "error: --run-config: unknown key 'lr-shedule'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_stability_runs_both_runs_with_the_given_run_settings(tmp_path):
    """A setting other than the app's default (constant) reaches both runs and the entry."""
    done = run_quick("stability", tmp_path, "--preset", "tiny", "--run-config", 'lr-schedule="cosine"')
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for run in ("run-1", "run-2"):
        config = json.loads((tmp_path / "out" / run / "config.json").read_text())
        assert config["run_config"]["lr-schedule"] == "cosine"
    assert """--run-config 'lr-schedule="cosine"'`""" in (tmp_path / "RESULTS.md").read_text()
