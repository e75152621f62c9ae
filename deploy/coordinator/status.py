"""The federation as the coordinator sees it: every site of the kit by name, and every run with its state.

`flwr supernode list` shows node ids only (owner "none"); here each node is matched to its site through the key
the kit holds for it (Flower keeps the public key of every registered node), so an operator reads site names.
A run's state joins Flower's (`flwr ls`) with the run folder's own (summary.json, rounds.jsonl): a run whose
coordinator died shows as interrupted, with the round it can be resumed after. Flower only marks such a run failed
once its ServerApp's heartbeat is overdue (about a minute after the coordinator went down); until then a run
submitted before the running SuperLink started is named as one that lost its coordinator (`orphaned_until`).
"""

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL, HEARTBEAT_PATIENCE
from rich.table import Table
from rich.text import Text

from deploy.coordinator.run_submission import CoordinatorNotRunning, check_coordinator_running, run_id_in
from deploy.coordinator.start import coordinator_env
from deploy.flower_env import flower_executable
from deploy.kits.contents import CONNECTION, CoordinatorKit, KitError, read_coordinator_kit
from models.shared.exit_codes import ExitCode, errors_as
from models.shared.run_config import NUM_SERVER_ROUNDS
from models.shared.terminal import make_console
from server_app.run_record.run_folder import (
    COMPLETED,
    CONFIG_FILE,
    FAILED,
    RUNNING,
    STOPPED,
    SUMMARY_FILE,
    read_json,
    read_rounds,
)

ACTIVE = ("pending", "starting", "running")
"""Flower run statuses of a run not finished."""
REVOKED = "unregistered"
"""Flower's node status once a key was unregistered (`flwr supernode unregister`): the site is shut out."""
INTERRUPTED = "interrupted"
"""A run whose summary says running but that Flower no longer runs: its coordinator died (resumable)."""
RESTARTED = "the coordinator restarted; this run will be marked interrupted within a minute"
"""What status and `run --resume` say of a run Flower still counts as running but whose ServerApp died with the
previous coordinator."""
HEARTBEAT_WINDOW = timedelta(seconds=HEARTBEAT_PATIENCE * HEARTBEAT_DEFAULT_INTERVAL)
"""How long Flower counts a node, or a run's ServerApp, as alive after its last heartbeat."""

SITE_STYLE = {"online": "green", "offline": "yellow", "revoked": "red", "not registered": "red"}
RUN_STYLE = {COMPLETED: "green", RUNNING: "cyan", STOPPED: "yellow", INTERRUPTED: "yellow", FAILED: "red"}
"""Colours of `oncofed coordinator status`."""


@dataclass(frozen=True)
class SiteState:
    site: str
    node_id: int | None
    status: str
    """online, offline, registered (never connected), revoked, or not registered."""
    last_heard: str
    """Its last heartbeat (local time), "now" when online, "never" when it never connected."""


@dataclass(frozen=True)
class RunState:
    folder: Path
    flower_run_id: int | None
    flower_status: str
    state: str
    """running, completed, stopped, failed, or interrupted (its coordinator died; resumable)."""
    round: str
    """Last completed round of the planned rounds, e.g. "2/4"."""
    note: str


@contextmanager
def control_api(kit: CoordinatorKit) -> Iterator[object]:
    """A client of the SuperLink's Control API over the kit's TLS connection (Flower's own CLI client)."""
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.utils import init_http_client_from_connection

    env = coordinator_env(kit)
    previous = os.environ.get("FLWR_HOME")
    os.environ["FLWR_HOME"] = env["FLWR_HOME"]
    try:
        client = init_http_client_from_connection(read_superlink_connection(CONNECTION))
    finally:
        if previous is None:
            os.environ.pop("FLWR_HOME", None)
        else:
            os.environ["FLWR_HOME"] = previous
    try:
        yield client
    finally:
        client.close()


def site_states(kit: CoordinatorKit) -> list[SiteState]:
    """Every site of the kit, matched to its Flower node by public key; raises CoordinatorNotRunning."""
    from flwr.proto.control_pb2 import ListNodesRequest
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    check_coordinator_running(kit)
    with control_api(kit) as client:
        nodes = list(client.ListNodes(ListNodesRequest()).nodes_info)
    keys = {
        public_key_to_bytes(serialization.load_ssh_public_key(kit.site_public_key(site).read_bytes())): site
        for site in kit.sites
    }
    found: dict[str, object] = {}
    for node in nodes:
        site = keys.get(bytes(node.public_key))
        if site is not None and (site not in found or node.status != REVOKED):
            found[site] = node
    return [_site_state(site, found.get(site)) for site in kit.sites]


def _site_state(site: str, node) -> SiteState:
    if node is None:
        return SiteState(site, None, "not registered", "never")
    status = "revoked" if node.status == REVOKED else node.status
    if node.status == "online":
        heard = "now"
    elif node.HasField("last_deactivated_at") and node.last_deactivated_at:
        heard = _local(last_heartbeat(node))
    else:
        heard = "never"
    return SiteState(site, int(node.node_id), status, heard)


def last_heartbeat(node) -> datetime:
    """When Flower last heard from an offline node. Flower marks a node offline once `HEARTBEAT_PATIENCE`
    heartbeat intervals passed without one, and records that moment as `last_deactivated_at`; the heartbeat itself
    was that window earlier. (A node that signed off shows up to one window before its sign-off: Flower's record
    does not tell the two apart.)"""
    window = HEARTBEAT_PATIENCE * (node.heartbeat_interval or HEARTBEAT_DEFAULT_INTERVAL)
    return datetime.fromisoformat(node.last_deactivated_at) - timedelta(seconds=window)


def _local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def flower_runs(kit: CoordinatorKit) -> dict[int, dict]:
    """run id → Flower's record of it (`flwr ls --format json`: status, status-details, …)."""
    result = subprocess.run(
        [flower_executable("flwr"), "ls", CONNECTION, "--format", "json"],
        env=coordinator_env(kit),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        answer = json.loads(result.stdout[result.stdout.index("{") :])
    except ValueError:
        return {}
    return {int(run["run-id"]): run for run in answer.get("runs", [])}


def still_running(kit: CoordinatorKit, run_dir: Path) -> tuple[int, datetime | None] | None:
    """The Flower run id of the run folder's latest submission if Flower has it pending or running, with when
    Flower will have marked it failed if its ServerApp died with the previous coordinator (`orphaned_until`);
    None when Flower does not run it."""
    run_id = run_id_in(run_dir / "logs" / "flwr-run.log")
    if run_id is None:
        return None
    record = flower_runs(kit).get(run_id, {})
    if not record.get("status", "").startswith(ACTIVE):
        return None
    return run_id, orphaned_until(record, superlink_started(kit))


def superlink_started(kit: CoordinatorKit) -> datetime | None:
    """When the running SuperLink started (`coordinator start` records it), None if unknown."""
    try:
        return datetime.fromisoformat(kit.superlink_started.read_text().strip())
    except (OSError, ValueError):
        return None


def orphaned_until(record: dict, started: datetime | None) -> datetime | None:
    """For a run Flower counts as running (`record`: its `flwr ls` entry): when Flower will have marked it failed,
    if it was submitted before the running SuperLink `started`. Its ServerApp died with the previous coordinator
    and sends no heartbeat, so Flower fails it at the latest one heartbeat window after the restart. None for a
    run submitted to the running SuperLink, and for one still pending (the new SuperLink launches it)."""
    submitted = _flower_time(record.get("pending-at"))
    running = str(record.get("status", "")).startswith("running")
    if not running or started is None or submitted is None or submitted >= started:
        return None
    return started + HEARTBEAT_WINDOW


def _flower_time(text: object) -> datetime | None:
    """A time as `flwr ls --format json` writes it ("2026-01-05 14:02:11Z", UTC), None for "N/A"."""
    try:
        moment = datetime.fromisoformat(str(text).replace(" ", "T"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_states(kit: CoordinatorKit, flower: dict[int, dict]) -> list[RunState]:
    """The kit's run folders, newest first, each with Flower's state of its latest submission and its own."""
    folders = sorted((p for p in kit.runs.iterdir() if p.is_dir()), reverse=True) if kit.runs.is_dir() else []
    started = superlink_started(kit)
    return [_run_state(folder, flower, started) for folder in folders]


def _run_state(folder: Path, flower: dict[int, dict], started: datetime | None = None) -> RunState:
    run_id = run_id_in(folder / "logs" / "flwr-run.log")
    record = flower.get(run_id, {}) if run_id is not None else {}
    flower_status = record.get("status", "unknown") if run_id is not None else "not submitted"
    summary = read_json(folder / SUMMARY_FILE)
    last = max((r["round"] for r in read_rounds(folder)), default=None)
    planned = summary.get(
        "rounds_planned", read_json(folder / CONFIG_FILE).get("run_config", {}).get(NUM_SERVER_ROUNDS.key)
    )
    state = summary.get("status", "unknown")
    note = (summary.get("stopped") or {}).get("reason", "")
    if state == RUNNING and not flower_status.startswith(ACTIVE):
        state, note = INTERRUPTED, f"the coordinator stopped during the run; resume with --resume {folder}"
    elif state == RUNNING and (until := orphaned_until(record, started)) is not None:
        note = f"{RESTARTED} (by {_local(until)[-8:]}); then resume it with --resume {folder}"
    return RunState(folder, run_id, flower_status, state, f"{'—' if last is None else last}/{planned}", note)


def show_status(kit_dir: Path) -> None:
    """Print every site of the kit's federation and every run folder, each with its state."""
    with errors_as(ExitCode.BAD_INPUT, KitError):
        kit = read_coordinator_kit(kit_dir)
    with errors_as(ExitCode.FAILED, CoordinatorNotRunning):
        sites, flower = site_states(kit), flower_runs(kit)
    console = make_console(highlight=False)
    table = Table("site", "status", "last heard", "node", title=f"Sites of federation {kit.federation!r}")
    for site in sites:
        node = "" if site.node_id is None else str(site.node_id)
        table.add_row(site.site, Text(site.status, SITE_STYLE.get(site.status, "")), site.last_heard, node)
    console.print(table)
    runs = run_states(kit, flower)
    table = Table("run folder", "state", "round", "Flower run", "note", title=f"Runs in {kit.runs}")
    for run in runs:
        flower_run = f"{run.flower_run_id} ({run.flower_status})" if run.flower_run_id else run.flower_status
        state = Text(run.state, RUN_STYLE.get(run.state, ""))
        table.add_row(run.folder.name, state, run.round, flower_run, Text(run.note))
    console.print(table if runs else "No runs yet.")
