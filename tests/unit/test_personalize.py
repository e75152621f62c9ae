"""The personalized model (run setting `personalize-epochs`): fine-tuned at the site, validated beside the global
model, its aggregates under the disclosure policy, its weights in no reply; `site predict`/`export` choose it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from synthetic_site import add_nifti_cases, fix_site_secret
from typer.testing import CliRunner

from models.model_source import load_model_source
from models.presets import build_model
from models.shared.wire import (
    PERSONALIZATION_GAIN_PREFIX,
    PERSONALIZED_PREFIX,
    Record,
    Status,
    Validation,
    baseline_key,
    is_count,
    is_pooled_mean,
)
from models.weights import to_record
from oncofed_cli import app as cli
from site_app.app import app
from site_app.learning.personalize import LATEST_MODEL, META_PERSONALIZED_FROM, META_ROLE, MODEL_FILE
from site_app.learning.run_state import RUNS_FOLDER
from site_app.learning.work_records import LATEST_MODEL as GLOBAL_LATEST
from site_app.tools.model_choice import choose_site_model

RUN_CONFIG = {
    "model-preset": "tiny",
    "local-epochs": 1,
    "learning-rate": 0.01,
    "batch-size": 2,
    "patch-size": 16,
    "samples-per-case": 1,
    "spacing-mm": 4.0,
    "seed": 0,
    "eval-regions": "brats",
    "sim-min-report-cases": 2,
    "sim-min-train-cases": 2,
    "sim-validation-fraction": 0.3,
    "personalize-epochs": 2,
}
PERSONAL_DICE = baseline_key(PERSONALIZED_PREFIX, "dice", None, "mean")
PERSONAL_GAIN_LOW = baseline_key(PERSONALIZATION_GAIN_PREFIX, "dice", None, "ci-low")


def send(kind: str, data: Path, work: Path, server_round: int) -> Message:
    """One instruction to the site's ClientApp (simulated node config), as the ServerApp sends it."""
    content = RecordDict(
        {
            "arrays": to_record(build_model("tiny", seed=server_round)),
            "config": ConfigRecord({"server-round": server_round, "run-key": "0123456789abcdef"}),
        }
    )
    run_config = {**RUN_CONFIG, "sim-data": str(data), "sim-work": str(work)}
    node = {"partition-id": 0, "num-partitions": 1}
    context = Context(run_id=1, node_id=2, node_config=node, state=RecordDict(), run_config=run_config)
    reply = app(Message(content, dst_node_id=2, message_type=kind), context)
    assert not reply.has_error(), reply.error.reason
    return reply


@pytest.fixture(scope="module")
def exchange(tmp_path_factory) -> tuple[Path, dict[str, Message]]:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    root = tmp_path_factory.mktemp("personal")
    add_nifti_cases(root / "data" / "site-0", 0, 10, spacing_mm=4.0, name="site-0")
    work = root / "work"
    fix_site_secret(work / "site-0", 4)  # a repeatable split
    replies = {
        "evaluate r0": send("evaluate", root / "data", work, 0),
        "train r1": send("train", root / "data", work, 1),
        "evaluate r1": send("evaluate", root / "data", work, 1),
    }
    yield next(work.iterdir()), replies
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def test_the_personalized_model_is_validated_beside_the_global_one(exchange):
    _, replies = exchange
    reply = replies["evaluate r1"].content
    assert reply[Record.VALIDATION][Validation.STATUS] == Status.REPORTED
    metrics = reply[Record.METRICS]
    assert 0.0 <= metrics[PERSONAL_DICE] <= 1.0 and PERSONAL_GAIN_LOW in metrics
    personal = [k for k in metrics if k.startswith((PERSONALIZED_PREFIX, PERSONALIZATION_GAIN_PREFIX))]
    assert personal and not any(is_pooled_mean(k) or is_count(k) for k in personal)  # never pooled
    assert all(k.endswith(("-mean", "-ci-low", "-ci-high")) for k in personal)  # no single-case statistic
    # Round 0 validates the initial model: nothing personalized, and the reply says so
    first = replies["evaluate r0"].content
    assert not any(k.startswith(PERSONALIZED_PREFIX) for k in first[Record.METRICS])
    assert any("personalized model (round 0" in w for w in first[Record.VALIDATION][Validation.WITHHELD])


def test_the_personalized_weights_are_in_no_reply(exchange):
    work, replies = exchange
    kept = torch.load(next((work / RUNS_FOLDER).glob(f"*/{MODEL_FILE}")), weights_only=True)
    assert kept["meta"][META_ROLE] == "personalized"
    global_latest = load_model_source(work / GLOBAL_LATEST)
    assert kept["meta"][META_PERSONALIZED_FROM] == global_latest.sha256
    personal = {k: v.numpy() for k, v in kept["state_dict"].items()}
    assert any(
        not np.array_equal(personal[k], global_latest.state_dict[k].numpy()) for k in personal
    )  # trained
    for name, reply in replies.items():
        for record in reply.content.array_records.values():
            for key, array in record.items():
                sent = array.numpy()
                assert not (sent.size > 1 and np.array_equal(sent, personal[key])), (name, key)


def test_predict_and_export_use_the_personalized_model_unless_told_otherwise(exchange):
    work, _ = exchange
    chosen = choose_site_model(work, use_global=False)
    assert chosen.path == work / LATEST_MODEL and chosen.role == "personalized"
    assert chosen.source.sha256 != load_model_source(work / GLOBAL_LATEST).sha256
    forced = choose_site_model(work, use_global=True)
    assert forced.path == work / GLOBAL_LATEST and forced.role == "global"


def test_a_personalized_model_of_an_older_global_model_is_not_chosen(exchange, tmp_path):
    work, _ = exchange
    other = tmp_path / "work"
    (other / "models").mkdir(parents=True)
    (other / LATEST_MODEL).write_bytes((work / LATEST_MODEL).read_bytes())
    older = torch.load(work / GLOBAL_LATEST, weights_only=True)
    older["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in older["state_dict"].items()}
    torch.save(older, other / GLOBAL_LATEST)
    chosen = choose_site_model(other, use_global=False)
    assert chosen.role == "global" and "older global model" in chosen.note


def test_the_commands_say_which_model_and_record_its_hash(exchange, tmp_path):
    work, _ = exchange
    personal_sha = load_model_source(work / LATEST_MODEL).sha256
    global_sha = load_model_source(work / GLOBAL_LATEST).sha256
    runner = CliRunner()
    data = tmp_path / "studies"
    add_nifti_cases(data, 0, 1, spacing_mm=4.0)
    out = tmp_path / "predicted"
    result = runner.invoke(
        cli, ["site", "predict", "--work", str(work), "--data", str(data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "personalized model" in result.output
    model = json.loads((out / "predictions.json").read_text())["model"]
    assert (model["sha256"], model["role"], model["personalized_from"]) == (
        personal_sha,
        "personalized",
        global_sha,
    )

    bundle = tmp_path / "bundle"
    result = runner.invoke(cli, ["export", "--work", str(work), "--global-model", "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    own = json.loads((bundle / "configs" / "metadata.json").read_text())["oncofed"]
    assert (own["model_sha256"], own["model_role"]) == (global_sha, "global")
    assert "global model" in result.output
    both = runner.invoke(
        cli, ["export", "--work", str(work), "--model", str(work / LATEST_MODEL), "--out", "x"]
    )
    assert both.exit_code != 0 and "either --model" in both.output


def test_the_personalized_model_is_fine_tuned_at_the_sites_share_of_its_learning_rate(tmp_path, monkeypatch):
    """personalize-lr-share reaches the fine-tuning (a converged model fine-tuned at the full rate moves off it)."""
    import logging
    from types import SimpleNamespace

    from site_app.learning import federated_round

    calls = []
    monkeypatch.setattr(federated_round, "keep_personalized", lambda *args: tmp_path / "personalized.pt")
    monkeypatch.setattr(federated_round, "site_model_meta", lambda *args: {})
    monkeypatch.setattr(federated_round, "validate_cases", lambda *args: ([], None))
    settings = SimpleNamespace(
        personalize_epochs=2, personalize_lr_share=0.1, pipeline=None, min_lesion_mm3=0.0
    )
    work = SimpleNamespace(
        settings=settings,
        train_model=lambda *args, **kwargs: calls.append(kwargs) or 0.5,
        site=SimpleNamespace(work=tmp_path),
        state_dir=tmp_path,
        log=logging.getLogger("test"),
        device="cpu",
    )
    federated_round.validate_personalized(work, torch.nn.Linear(2, 2), [], [], 3, {})
    assert calls == [{"epochs": 2, "lr_scale": 0.1}]
