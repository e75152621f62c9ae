"""A federation that survives hospitals, with real processes on loopback: three sites from provisioned kits (TLS,
SuperNode authentication), each run through `oncofed site start`, a coordinator through `oncofed coordinator
start`, runs through `oncofed run` — and sites and the coordinator killed mid-run.

Deadlines are generous (the machine is shared; a first round builds each site's preprocessing cache): a phase
closes early when every site answered, and Flower reports a killed SuperNode unavailable about a minute after its
last heartbeat, which is what closes the phase it was in.
"""

import json
import os
import re
import subprocess
import time
from collections import Counter

import pytest
import torch
from loopback_federation import ONCOFED, LoopbackFederation, wait_for_text

from deploy.coordinator.status import RESTARTED
from models.shared.exit_codes import ExitCode
from models.weights import load_checkpoint
from server_app.run_record.run_folder import read_metrics, read_rounds

pytestmark = pytest.mark.slow

DEADLINES = "train-timeout-s=600 evaluate-timeout-s=600 describe-timeout-s=300 wait-for-sites-s=300"
RUN = ("--preset", "tiny", "--run-config")


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    fed = LoopbackFederation.provision(tmp_path_factory.mktemp("resilience"))
    try:
        fed.start_coordinator()
        for site in fed.sites:
            fed.start_site(site)
        yield fed
    finally:
        orphans = fed.close()
    assert orphans == [], f"processes outlived the command that started them: {orphans}"


def all_sites_up(fed: LoopbackFederation) -> None:
    for site in fed.sites:
        process = fed.processes.get(f"site-{site}")
        if process is None or process.popen.poll() is not None:
            fed.processes.pop(f"site-{site}", None)
            fed.start_site(site)


def finish(fed: LoopbackFederation, name: str, timeout_s: float = 1800) -> tuple[int, str]:
    process = fed.processes.pop(name)
    try:
        code = process.popen.wait(timeout=timeout_s)
    finally:
        process.stop()
    return code, fed.output(name).read_text(errors="replace")


def words(text: str) -> str:
    """The streamed log wraps long lines and tables draw borders: compare text with both collapsed to spaces."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


def by_round(records: list[dict]) -> dict[int, dict[str, dict]]:
    rounds: dict[int, dict[str, dict]] = {}
    for record in records:
        rounds.setdefault(record["round"], {})[record["site"]] = record
    return rounds


def test_a_site_killed_in_round_2_is_named_and_takes_part_again(federation):
    fed = federation
    all_sites_up(fed)
    lost = fed.sites[2]
    run = fed.run("run-dropout", "--rounds", "4", *RUN, f"local-epochs=1 {DEADLINES}")
    out = fed.output("run-dropout")
    wait_for_text(out, "[ROUND 2/4]", 1200, run)
    wait_for_text(
        out, "configure_train: Sampled 3 nodes", 600, run, times=2
    )  # round 2's training is under way
    fed.crash(f"site-{lost}")
    wait_for_text(out, "[ROUND 3/4]", 900, run)
    fed.start_site(lost)
    code, output = finish(fed, "run-dropout")
    assert code == 0, output[-5000:]

    run_dir = fed.run_dirs()[-1]
    rounds = by_round(read_metrics(run_dir))
    assert sorted(rounds) == [0, 1, 2, 3, 4] and all(sorted(r) == fed.sites for r in rounds.values())
    missed = rounds[2][lost]
    assert missed["participation"]["train"].split(":")[0] in ("offline", "timeout"), missed
    assert missed["status"] in ("offline", "timeout") and missed["reason"].startswith("train: ")
    assert read_rounds(run_dir)[2]["train"]["sound"] == fed.sites[:2]
    assert read_rounds(run_dir)[2]["train"]["aggregated"] is True
    rejoined = [r for r in (3, 4) if rounds[r][lost]["participation"]["train"] == "ok"]
    assert rejoined, {r: rounds[r][lost] for r in (3, 4)}
    # named in the terminal, in the summary and in the report
    assert f"round 2: 2 of 3 sites; {lost} train " in words(output)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and 2 in summary["rounds_missed"][lost]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["participation"]["sites"][lost]["2"]["status"] == missed["status"]
    assert 'id="participation"' in (run_dir / "report.html").read_text()


def test_with_one_site_offline_a_run_starts_at_quorum(federation):
    fed = federation
    all_sites_up(fed)
    offline = fed.sites[2]
    fed.stop(f"site-{offline}")
    try:
        fed.run("run-quorum", "--rounds", "1", *RUN, f"local-epochs=1 {DEADLINES}")
        code, output = finish(fed, "run-quorum")
    finally:
        fed.start_site(offline)
    assert code == 0, output[-5000:]
    records = read_metrics(fed.run_dirs()[-1])
    assert {(r["round"], r["site"]): r["status"] for r in records if r["site"] == offline} == {
        (0, offline): "offline",
        (1, offline): "offline",
    }
    assert f"round 1: 2 of 3 sites; {offline} train and validate offline" in words(output)


def test_below_quorum_the_run_stops_naming_the_offline_sites(federation):
    fed = federation
    all_sites_up(fed)
    offline = fed.sites[1:]
    for site in offline:
        fed.stop(f"site-{site}")
    try:
        fed.run("run-no-quorum", "--rounds", "2", *RUN, "local-epochs=1 wait-for-sites-s=20")
        code, output = finish(fed, "run-no-quorum")
    finally:
        for site in offline:
            fed.start_site(site)
    assert code == 1, output[-5000:]
    assert f"offline: {', '.join(offline)}" in words(output)
    assert "the run stopped before its first round" in words(output)
    run_dir = fed.run_dirs()[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and f"offline: {', '.join(offline)}" in summary["stopped"]["reason"]
    assert (run_dir / "config.json").is_file() and not (run_dir / "models" / "final.pt").exists()


def test_resume_after_the_coordinator_died_matches_an_uninterrupted_run(federation):
    fed = federation
    all_sites_up(fed)
    settings = f"local-epochs=1 seed=3 {DEADLINES}"
    fed.run("run-reference", "--rounds", "4", *RUN, settings)
    code, output = finish(fed, "run-reference")
    assert code == 0, output[-5000:]
    reference = fed.run_dirs()[-1]

    # The coordinator's host dies (SuperLink, ServerApp, and the operator's `oncofed run`) after round 2 of 4
    run = fed.run("run-interrupted", "--rounds", "4", *RUN, settings)
    wait_for_text(fed.output("run-interrupted"), "round 2: 3 of 3 sites", 1800, run)
    fed.crash("coordinator")
    fed.crash("run-interrupted")
    interrupted = fed.run_dirs()[-1]
    assert (
        interrupted != reference
        and json.loads((interrupted / "summary.json").read_text())["status"] == "running"
    )

    # Restarted, the coordinator shows the run interrupted; the sites saw it go and come back
    fed.start_coordinator()
    for site in fed.sites:
        wait_for_text(fed.output(f"site-{site}"), "answers again", 300)
        assert "lost the coordinator" in fed.output(f"site-{site}").read_text()
    deadline = time.monotonic() + 300  # Flower fails the dead run once its ServerApp's heartbeat is overdue
    while True:
        status = subprocess.run(
            [ONCOFED, "coordinator", "status", "--kit", str(fed.coordinator_kit)],
            env={**os.environ, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        table = words(status.stdout)
        if f"{interrupted.name} interrupted 2/4" in table or time.monotonic() > deadline:
            break
        time.sleep(10)
    assert f"{interrupted.name} interrupted 2/4" in table, status.stdout
    assert all(f"{site} online now" in table for site in fed.sites), status.stdout
    print(status.stdout)

    fed.run("run-resumed", "--resume", str(interrupted))
    code, output = finish(fed, "run-resumed")
    assert code == 0, output[-5000:]
    assert "after round 2" in words(output) and "[ROUND 2/4]" not in output
    # one message per round: round 3 was trained before the crash, its validation rides on round 4's message
    assert "Round 3 was trained before the stop" in words(output) and "[ROUND 3/4]" not in output
    pairs = Counter((r["round"], r["site"]) for r in read_metrics(interrupted))
    assert pairs == Counter({(rnd, site): 1 for rnd in range(5) for site in fed.sites})
    assert [r["round"] for r in read_rounds(interrupted)] == [0, 1, 2, 3, 4]
    resumed, _ = load_checkpoint(interrupted / "models" / "final.pt")
    uninterrupted, _ = load_checkpoint(reference / "models" / "final.pt")
    for name, value in uninterrupted.items():
        torch.testing.assert_close(resumed[name], value, atol=1e-5, rtol=1e-4)


def test_right_after_a_coordinator_crash_status_and_resume_say_that_it_restarted(federation):
    """Flower counts a run whose coordinator died as running until its ServerApp's heartbeat is overdue (about a
    minute after the crash). Right after the restart, `coordinator status` says so and when, `run --resume` says
    so with how long to wait, and within that minute the run shows interrupted."""
    fed = federation
    all_sites_up(fed)
    run = fed.run("run-orphaned", "--rounds", "3", *RUN, f"local-epochs=1 {DEADLINES}")
    wait_for_text(fed.output("run-orphaned"), "[ROUND 1/3]", 1200, run)
    fed.crash("coordinator")
    fed.crash("run-orphaned")
    orphaned = fed.run_dirs()[-1]
    fed.start_coordinator()
    restarted = time.monotonic()
    env = dict(os.environ)  # to a pipe: one table row per line
    kit = str(fed.coordinator_kit)
    asked = [  # at once: Flower fails the run within a minute of the crash
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in (
            [ONCOFED, "coordinator", "status", "--kit", kit],
            [ONCOFED, "run", "--kit", kit, "--resume", str(orphaned)],
        )
    ]
    (status, _), (_, refusal) = (process.communicate(timeout=120) for process in asked)
    answered_s = time.monotonic() - restarted
    assert asked[0].returncode == 0, status
    table = words(status)
    assert f"{orphaned.name} running 0/3" in table or f"{orphaned.name} running 1/3" in table, status
    assert RESTARTED in table and f"--resume {orphaned}" in table, (answered_s, status)
    assert asked[1].returncode == ExitCode.BAD_INPUT, refusal
    assert RESTARTED in words(refusal) and re.search(r"Try again in \d+ s", refusal), refusal
    assert len([line for line in refusal.splitlines() if line.strip()]) == 1, refusal

    deadline = time.monotonic() + 120  # "within a minute", with the machine's load
    while f"{orphaned.name} interrupted" not in table and time.monotonic() < deadline:
        time.sleep(5)
        table = words(
            subprocess.run(
                [ONCOFED, "coordinator", "status", "--kit", kit],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            ).stdout
        )
    assert f"{orphaned.name} interrupted" in table and RESTARTED not in table, table
    print(
        f"status and resume answered {answered_s:.0f} s after the restart; interrupted {time.monotonic() - restarted:.0f} s after it"
    )
