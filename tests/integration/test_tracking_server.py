"""A real `mlflow server` (sqlite backend, loopback, a free port, started and stopped by its process id) as the
coordinator's tracking server: while it is down a run goes on with one warning line per sync, once it is up the
next sync catches up, and it then holds what the run folder's own store holds for the same run.

The ServerApp runs on a ScriptedGrid (tracked_federation.py); the full Flower path to a server
is the slow test in test_tracking_runs.py.
"""

import logging

import pytest
from mlflow_records import MlflowServer, released_only, the_run
from scripted_grid import ScriptedGrid
from tracked_federation import FAB, run_config, scripted_sites

from server_app.app import run_federation
from server_app.run_record.tracking import track_run

# a real mlflow server and a run: minutes; the sync itself is tested in tests/unit/test_tracking.py
pytestmark = pytest.mark.slow


def test_a_server_down_costs_warnings_only_and_gets_the_whole_run_once_it_is_up(
    tmp_path, flower_task, caplog, monkeypatch
):
    server = MlflowServer(tmp_path / "mlflow")  # its port is chosen, nothing listens there yet
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the run's own default waits seconds per sync
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        outcome = run_federation(
            ScriptedGrid(scripted_sites()),
            run_config(run_dir, num_server_rounds=2, tracking_uri=server.url),
            FAB,
        )
    assert outcome.status == "completed" and (run_dir / "report.html").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Tracking:")]
    # one line per sync: the start, each of rounds 0-2, the end and after the report
    assert len(warnings) == 6, warnings
    assert all("\n" not in w and server.url in w and "catches up" in w for w in warnings)
    assert "Traceback" not in caplog.text
    assert not (run_dir / "mlflow.db").exists()

    embedded = tmp_path / "embedded"  # the same federation, tracked in its run folder
    run_federation(ScriptedGrid(scripted_sites()), run_config(embedded, num_server_rounds=2), FAB)
    try:
        server.start()
        assert track_run(run_dir, server.url)  # the next sync: everything the server missed
        assert track_run(run_dir, server.url)  # and nothing twice
        received = the_run(run_dir, server.url)
    finally:
        server.stop()
    assert server.process is None

    local = the_run(embedded)
    assert received.status == local.status == "FINISHED"
    released_only(received, run_dir)
    assert received.histories == local.histories  # every value, every round, once
    assert {k: v for k, v in received.params.items() if k != "run-dir"} == {
        k: v for k, v in local.params.items() if k != "run-dir"
    }
    assert received.artifacts == local.artifacts and "report.html" in received.artifacts
