"""Secure aggregation in a real run: three simulated sites (Flower's Simulation Engine through our launcher), one
round with `secure-aggregation = true`, every reply each site sends captured, and inside each site's masking mod
its plaintext train reply kept for comparison (tests/support/secagg_clientapp.py). One site fails when asked to
unmask, after it sent its masked vector.

Shown: no captured array equals, or is within the quantization noise of, any site's update or weights (the same
search finds every site's update in its plaintext reply: the control); the coordinator's new global model is
FedAvg of the three plaintext updates within the quantization error, the failed site's included; the round's
global model changed although a site died between masking and unmasking.
"""

import dataclasses

import numpy as np
import pytest
from flwr.app import Message
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import Key
from synthetic_site import add_nifti_cases, fix_site_secret
from tiny_capture_run import capture_app
from wire_messages import read_sent

from deploy.simulation.launch import failure_context, run_simulation
from deploy.simulation.plan import plan_simulation
from models.presets import build_model
from models.shared.run_config import UPDATE_NORM_BOUND_DEFAULT
from models.shared.wire import NUM_EXAMPLES, Record
from models.weights import load_checkpoint, to_record
from server_app.rounds.secure_sum import QUANTIZATION_RANGE
from server_app.run_record.run_folder import read_metrics, read_rounds
from site_app.update_masking import clip_update

SITES = ("hospital-a", "hospital-b", "hospital-c")
CASES = (12, 16, 20)
FAILS = 2
"""hospital-c fails at the unmask stage."""
STEP = 2 * UPDATE_NORM_BOUND_DEFAULT / QUANTIZATION_RANGE
"""The quantization step of a weighted update value (clipping range = update-norm-bound)."""
SEED = 1


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("secagg-run")
    data, run_dir, capture = root / "data", root / "run", root / "captured"
    for site, count in zip(SITES, CASES, strict=True):
        add_nifti_cases(data / site, 0, count, seed=3, name=site)
    plan = plan_simulation(data, run_dir, rounds=1, preset="tiny", seed=SEED)
    run_config = {
        **plan.run_config,
        "local-epochs": 1,
        "samples-per-case": 1,
        "sim-min-report-cases": 3,
        "secure-aggregation": True,
        "capture-dir": str(capture),
        "secagg-fails-partition": FAILS,
    }
    for index, site in enumerate(SITES):
        fix_site_secret(run_dir / "sites" / site, 21 + index)
    app = capture_app(root / "app", run_config, module="secagg_clientapp")
    plan = dataclasses.replace(plan, app_dir=app, run_config=run_config)
    lines: list[str] = []
    code = run_simulation(plan, lines.append)
    assert code == 0, f"flwr run exit code {code}\n{failure_context(run_dir)}"
    return run_dir, capture


def messages(folder) -> dict[int, list[Message]]:
    found: dict[int, list[Message]] = {index: [] for index in range(len(SITES))}
    for path in sorted(folder.iterdir()):
        found[int(path.name.split("-")[0])].append(read_sent(path.read_bytes()))
    return found


def initial() -> dict[str, np.ndarray]:
    return {
        name: array.numpy().astype(np.float64)
        for name, array in to_record(build_model("tiny", seed=SEED)).items()
    }


def plaintext(capture) -> dict[int, tuple[float, list[np.ndarray]]]:
    """Site → (its training cases, its update as its masking mod got it, clipped as the site clips)."""
    start = initial()
    updates = {}
    for site, replies in messages(capture / "plaintext").items():
        (reply,) = replies
        arrays = reply.content[Record.ARRAYS]
        update = [arrays[name].numpy().astype(np.float64) - start[name] for name in start]
        clip_update(update, UPDATE_NORM_BOUND_DEFAULT)
        updates[site] = (float(reply.content[Record.METRICS][NUM_EXAMPLES]), update)
    return updates


def sent_arrays(replies: list[Message]) -> list[np.ndarray]:
    """Every array a site sent: its ArrayRecords' and the arrays of a masked vector."""
    replies = [m for m in replies if not m.has_error()]  # an error reply carries no content
    arrays = [
        a.numpy().astype(np.float64)
        for m in replies
        for r in m.content.array_records.values()
        for a in r.values()
    ]
    for message in replies:
        secagg = message.content.config_records.get(Record.SECAGG, {})
        arrays += [bytes_to_ndarray(raw).astype(np.float64) for raw in secagg.get(Key.MASKED_PARAMETERS, [])]
    return arrays


def revealing(arrays: list[np.ndarray], update: list[np.ndarray], start: list[np.ndarray]) -> list[str]:
    """Arrays that give away a site's update: equal to it, or to its weights, within the quantization noise, or
    correlated with it (any scaled, shifted or quantized copy), as they are or less the global weights."""
    found = []
    for index, array in enumerate(arrays):
        for number, (u, w) in enumerate(zip(update, start, strict=True)):
            if array.shape != u.shape or u.size < 100 or not u.std() > 0:
                continue
            for seen in (array, array - w):
                if (
                    np.allclose(seen, u, atol=10 * STEP)
                    or np.allclose(seen, u + w, atol=10 * STEP)
                    or abs(np.corrcoef(seen.ravel(), u.ravel())[0, 1]) > 0.5
                ):
                    found.append(f"sent array {index} ~ update array {number}")
    return found


def test_no_reply_holds_a_sites_update_and_the_control_finds_them_in_plaintext(run):
    _, capture = run
    updates, start = plaintext(capture), initial()
    sent = messages(capture / "sent")
    for site, replies in sent.items():
        trains = [m for m in replies if m.metadata.message_type == "train" and not m.has_error()]
        failed = [m for m in replies if m.has_error()]
        assert len(trains) == (4 if site != FAILS else 3)  # setup, share keys, masked vector, unmask
        assert len(failed) == (1 if site == FAILS else 0)  # the failing site's unmask reply is an error
        assert not any(m.content.array_records for m in trains)
        masked = [
            m for m in trains if Key.MASKED_PARAMETERS in m.content.config_records.get(Record.SECAGG, {})
        ]
        assert len(masked) == 1 and sorted(masked[0].content[Record.METRICS]) == [NUM_EXAMPLES, "train-loss"]
    everything = [array for replies in sent.values() for array in sent_arrays(replies)]
    assert len(everything) >= 3 * 39
    for site, (_, update) in updates.items():
        assert revealing(everything, update, list(start.values())) == []
        control = sent_arrays(messages(capture / "plaintext")[site])
        assert len(revealing(control, update, list(start.values()))) >= 10  # the unprotected reply shows it


def test_the_global_model_is_fedavg_of_the_plaintext_updates_within_the_quantization_error(run):
    run_dir, capture = run
    updates, start = plaintext(capture), initial()
    total = sum(weight for weight, _ in updates.values())
    mean = [sum(weight * update[i] for weight, update in updates.values()) / total for i in range(len(start))]
    final = load_checkpoint(run_dir / "models" / "final.pt")[0]
    differences = [
        np.abs(final[name].numpy().astype(np.float64) - (value + m)).max()
        for (name, value), m in zip(start.items(), mean, strict=True)
    ]
    moved = max(np.abs(m).max() for m in mean)
    assert moved > 1000 * STEP  # training moved the model far more than the tolerance
    assert max(differences) < 10 * STEP  # quantization error only (float32 storage included)


def test_a_site_dead_between_masking_and_unmasking_does_not_stop_the_round(run):
    run_dir, _ = run
    (round_1,) = read_rounds(run_dir)[1:]
    assert round_1["train"]["aggregated"] is True and round_1["train"]["sound"] == list(SITES)
    failed = [r for r in read_metrics(run_dir) if r["round"] == 1 and r["site"] == SITES[FAILS]]
    assert failed[0]["participation"]["train"] == "ok"  # its masked update counted
    log = (run_dir / "logs" / "flwr-run.log").read_text(errors="replace")
    assert "missed train (secure aggregation, unmask): failed" in log
