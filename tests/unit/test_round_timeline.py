"""bench/round_timeline.py reads a deployed round's hops from the lines our processes and Flower's write."""

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

SERVERAPP = """\
\x1b[92mINFO 2026-12-06 07:00:00,000\x1b[0m:      [ROUND 1/1]
\x1b[94mDEBUG 2026-12-06 07:00:01,000\x1b[0m:     Pushing train messages to nodes 11
\x1b[94mDEBUG 2026-12-06 07:00:01,500\x1b[0m:     Pushed train messages to nodes 11
\x1b[94mDEBUG 2026-12-06 07:00:20,000\x1b[0m:     Pulled the reply of node 11
\x1b[94mDEBUG 2026-12-06 07:00:21,000\x1b[0m:     Pushing evaluate messages to nodes 11
\x1b[94mDEBUG 2026-12-06 07:00:21,000\x1b[0m:     Pushed evaluate messages to nodes 11
\x1b[94mDEBUG 2026-12-06 07:00:31,000\x1b[0m:     Pulled the reply of node 11
\x1b[92mINFO 2026-12-06 07:00:32,000\x1b[0m:      Federated rounds finished after round 1
"""


APP_STARTS = {
    "cold": "Start `flwr-clientapp` process",
    "warm": "[oncofed gate] task 7: ClientApp started warm",
}


def _message(kind: str, start: int, app_start: str, gate: bool) -> str:
    """One message's lines: the SuperNode's, and the ClientApp's (in the gate's log when `gate`, else here)."""
    lines = [
        (0, f"Receiving: {kind} message (ID: abc)", False),
        (2, app_start, True),
        (3, "Loading ClientApp `site_app.app:app`", True),
        (10 if kind == "train" else 8, "Runtime.PushMessages", False),
        (11 if kind == "train" else 8.5, f"Sending: {kind} message (ID: def)", False),
        (12 if kind == "train" else 9, "Sent successfully", False),
    ]
    return "".join(
        f"INFO 2026-12-06 07:00:{start + offset:06.3f}: {text}\n".replace(".", ",", 1)
        for offset, text, in_gate in lines
        if in_gate == gate
    )


@pytest.mark.parametrize("start", ["cold", "warm"])
def test_each_hop_of_each_phase_is_timed_from_the_supernode_and_gate_logs(tmp_path, monkeypatch, start):
    monkeypatch.syspath_prepend(str(BENCH))
    from round_timeline import hop_rows

    (tmp_path / "flwr-run.log").write_text(SERVERAPP)
    logs = {}
    for name, gate in (("supernode", False), ("gate", True)):
        logs[name] = tmp_path / f"{name}.log"
        head = "INFO 2026-12-06 06:59:00,000: SuperNode ID: 11\n" if not gate else ""
        logs[name].write_text(
            head
            + "".join(
                _message(kind, at, APP_STARTS[start], gate) for kind, at in (("train", 3), ("evaluate", 22))
            )
        )
    (tmp_path / "site.log").write_text(
        "2026-12-06 07:00:07,000 INFO oncofed.site handling a train message\n"
        "2026-12-06 07:00:26,000 INFO oncofed.site handling a evaluate message\n"
    )
    hops, rounds = hop_rows(
        tmp_path / "flwr-run.log", {"hospital-a": ([logs["supernode"], logs["gate"]], tmp_path / "site.log")}
    )
    train = {row[0]: row[1] for row in hops}
    evaluate = {row[0]: row[3] for row in hops}
    assert train["ServerApp push starts → SuperNode receives (push, SuperNode fetch wait)"] == pytest.approx(
        2.0
    )
    assert train["(beside the path) ServerApp push of all the phase's messages"] == pytest.approx(0.5)
    assert train["ClientApp import (site_app; cold: torch, MONAI too)"] == pytest.approx(1.0)
    assert train["SuperNode pull, SuperExec poll, ClientApp start (cold: interpreter + flwr import)"] == 2.0
    assert train["compute (the site's handler)"] == pytest.approx(6.0)
    assert train["ServerApp pull wait"] == pytest.approx(5.0)
    assert train["total: push → reply pulled"] == pytest.approx(19.0)
    # the hops add up to the whole path
    assert sum(v for k, v in train.items() if not k.startswith(("total", "(beside"))) == pytest.approx(19.0)
    assert evaluate["compute (the site's handler)"] == pytest.approx(4.0)
    assert evaluate["total: push → reply pulled"] == pytest.approx(10.0)
    assert rounds == [[1, 1.0, 19.0, 1.0, 10.0, 1.0, 32.0, 6.0]]
