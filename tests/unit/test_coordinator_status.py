"""`oncofed coordinator status`: a site's state from Flower's node record, and a run's from Flower's and its folder's
(a run whose coordinator died is "interrupted", with the round it can be resumed after)."""

import json
from pathlib import Path

from flwr.proto.node_pb2 import NodeInfo

from deploy.coordinator.status import _run_state, _site_state


def test_site_states_from_flowers_node_records():
    assert _site_state("hospital-a", NodeInfo(node_id=7, status="online")).last_seen == "now"
    offline = _site_state(
        "hospital-b", NodeInfo(node_id=8, status="offline", last_deactivated_at="2026-01-05T14:02:11+00:00")
    )
    assert offline.status == "offline" and offline.last_seen.startswith("2026-01-05")
    assert _site_state("hospital-c", NodeInfo(node_id=9, status="unregistered")).status == "revoked"
    assert _site_state("hospital-d", NodeInfo(node_id=10, status="registered")).last_seen == "never"
    assert _site_state("hospital-e", None).status == "not registered"


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
