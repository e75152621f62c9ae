"""`oncofed coordinator status`: a site's state from Flower's node record, and a run's from Flower's and its folder's
(a run whose coordinator died is "interrupted", with the round it can be resumed after)."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flwr.proto.node_pb2 import NodeInfo

from deploy.coordinator.federated_run import busy_run_folder
from deploy.coordinator.status import RESTARTED, _run_state, _site_state, orphaned_until
from deploy.kits.contents import CoordinatorKit


def test_site_states_from_flowers_node_records():
    assert _site_state("hospital-a", NodeInfo(node_id=7, status="online")).last_heard == "now"
    assert _site_state("hospital-c", NodeInfo(node_id=9, status="unregistered")).status == "revoked"
    assert _site_state("hospital-d", NodeInfo(node_id=10, status="registered")).last_heard == "never"
    assert _site_state("hospital-e", None).status == "not registered"


def test_an_offline_site_was_last_heard_a_heartbeat_window_before_flower_noticed():
    """Flower marks a node offline once two heartbeat intervals passed without one (`last_deactivated_at`): the
    site was last heard that window earlier, not when its loss was noticed."""
    noticed = datetime(2026, 1, 5, 14, 3, 11, tzinfo=UTC)
    node = NodeInfo(
        node_id=8, status="offline", last_deactivated_at=noticed.isoformat(), heartbeat_interval=30
    )
    offline = _site_state("hospital-b", node)
    heard = (noticed - timedelta(seconds=60)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert offline.status == "offline" and offline.last_heard == heard


def write_run(folder: Path, status: str, rounds: int, run_id: int = 41) -> Path:
    (folder / "logs").mkdir(parents=True)
    (folder / "logs" / "flwr-run.log").write_text(f"Successfully started run {run_id}\n")
    (folder / "summary.json").write_text(json.dumps({"status": status, "rounds_planned": 4, "stopped": None}))
    (folder / "rounds.jsonl").write_text("".join(json.dumps({"round": r}) + "\n" for r in range(rounds + 1)))
    return folder


def test_a_running_run_whose_flower_run_ended_is_interrupted(tmp_path):
    folder = write_run(tmp_path / "20260105-140000", "running", rounds=2)
    state = _run_state(folder, {41: {"status": "finished:failed"}})
    assert (state.state, state.round, state.flower_run_id) == ("interrupted", "2/4", 41)
    assert f"--resume {folder}" in state.note
    assert _run_state(folder, {41: {"status": "running"}}).state == "running"


def test_a_resumed_run_is_followed_through_its_latest_submission(tmp_path):
    folder = write_run(tmp_path / "run", "completed", rounds=4)
    with open(folder / "logs" / "flwr-run.log", "a") as log:
        log.write("Successfully started run 42\n")
    state = _run_state(folder, {41: {"status": "finished:failed"}, 42: {"status": "finished:completed"}})
    assert (state.state, state.round, state.flower_run_id, state.flower_status) == (
        "completed",
        "4/4",
        42,
        "finished:completed",
    )


def test_a_run_submitted_before_the_coordinator_restarted_is_named_so_while_flower_still_runs_it(tmp_path):
    """After a crash Flower counts the dead run as running until its ServerApp's heartbeat is overdue (about a
    minute): a run Flower runs that was submitted before the running SuperLink started lost its coordinator."""
    folder = write_run(tmp_path / "20260105-140000", "running", rounds=2)
    restarted = datetime(2026, 1, 5, 14, 20, 0, tzinfo=UTC)
    before = {"status": "running", "pending-at": "2026-01-05 14:00:02Z"}
    state = _run_state(folder, {41: before}, restarted)
    assert state.state == "running" and state.note.startswith(RESTARTED)
    assert f"--resume {folder}" in state.note
    assert orphaned_until(before, restarted) == restarted + timedelta(seconds=60)
    # a run submitted to the running SuperLink, one it has not launched yet, or an unknown start: not orphaned
    after = {"status": "running", "pending-at": "2026-01-05 14:21:00Z"}
    assert _run_state(folder, {41: after}, restarted).note == ""
    assert orphaned_until({**before, "status": "pending"}, restarted) is None
    assert orphaned_until(before, None) is None
    assert orphaned_until({"status": "running", "pending-at": "N/A"}, restarted) is None


def test_resume_of_a_run_that_lost_its_coordinator_says_how_long_to_wait(tmp_path):
    restarted = datetime(2026, 1, 5, 14, 20, 0, tzinfo=UTC)
    until = orphaned_until({"status": "running", "pending-at": "2026-01-05 14:00:02Z"}, restarted)
    now = restarted + timedelta(seconds=12)
    kit = CoordinatorKit(
        tmp_path, "fed", 9092, 9093, "127.0.0.1", ["localhost"], ["a"], "1.42.0", "r.fab", "00"
    )
    message = busy_run_folder(kit, tmp_path / "run", 41, until, now)
    assert message == (
        f"--resume {tmp_path / 'run'}: {RESTARTED}: Flower still counts its run 41 as running until its ServerApp's "
        "heartbeat is overdue. Try again in 53 s"
    )
    late = busy_run_folder(kit, tmp_path / "run", 41, until, until + timedelta(1))
    assert late.endswith("Try again in 5 s")  # Flower fails it at its next look
    running = busy_run_folder(kit, tmp_path / "run", 41, None)
    assert "flwr stop 41" in running and RESTARTED not in running
