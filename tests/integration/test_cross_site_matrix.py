"""The must-show of the cross-site generalization matrix, on a real tiny simulated run (tiny_capture_run.matrix_run):
three sites train local-only baselines, hospital-a and hospital-c consent to share theirs, hospital-b does not.
The matrix holds exactly the allowed cells, and hospital-b's local-only model is in no captured message (while the
consenting sites' are: the attack below would see them)."""

import json

import numpy as np
import pytest
import torch
from tiny_capture_run import MATRIX_CONSENTING, MATRIX_SITES, matrix_run

from server_app.report.content import report_data
from server_app.run_record.run_folder import CROSS_SITE_FILE

# a 3-site simulated run, minutes; the phase itself is tested in tests/unit/test_cross_site_phase.py
pytestmark = pytest.mark.slow

NOT_CONSENTING = "hospital-b"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return matrix_run(tmp_path_factory)


def local_model(run, site: str) -> dict[str, np.ndarray]:
    (path,) = run.work(site).glob("runs/*/local-only.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {name: tensor.numpy() for name, tensor in state.items() if tensor.numel() > 64}


def carries(messages, model: dict[str, np.ndarray]) -> bool:
    """Whether any array of any message is a large array of `model`, in the message's precision (a model trained
    from the same initial weights with another random stream is not: its arrays differ somewhere)."""
    for _, message in messages:
        for record in message.content.array_records.values():
            for array in record.values():
                sent = array.numpy()
                for kept in model.values():
                    if sent.shape == kept.shape and np.array_equal(sent, kept.astype(sent.dtype)):
                        return True
    return False


def test_the_matrix_has_exactly_the_allowed_cells(run):
    matrix = json.loads((run.run_dir / CROSS_SITE_FILE).read_text())
    assert matrix["consenting"] == list(MATRIX_CONSENTING)
    assert matrix["not_consenting"] == [NOT_CONSENTING]
    assert {(c["model"], c["site"]) for c in matrix["cells"]} == {
        ("hospital-a", "hospital-c"),
        ("hospital-c", "hospital-a"),
    }
    assert all(c["status"] == "reported" and 0 <= c["dice-mean"] <= 1 for c in matrix["cells"])

    shown = report_data(run.run_dir)["cross_site"]
    rows = {row["model"]: set(row["cells"]) for row in shown["rows"]}
    assert rows == {
        "federated model": set(MATRIX_SITES),
        "hospital-a's own model": {"hospital-a", "hospital-c"},
        "hospital-c's own model": {"hospital-c", "hospital-a"},
    }
    assert len(shown["sentences"]) == 2


def test_the_non_consenting_sites_local_model_is_in_no_captured_message(run):
    everything = [m for site in MATRIX_SITES for m in run.messages(site)]
    assert not carries(everything, local_model(run, NOT_CONSENTING))
    assert not any("local_model" in name for name, _ in run.captured[NOT_CONSENTING])  # never asked
    for site in MATRIX_CONSENTING:  # the check sees a local model where one was sent
        assert carries(run.messages(site), local_model(run, site))
