"""A site's local-only model leaves only with the site's own consent (site_app.disclosure.model_sharing): the
handler of query.local_model refuses without it whatever the coordinator sends, and a consenting site sends the
model it keeps; a site without consent takes no part in evaluating the others' models either."""

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from models.presets import build_model
from models.shared.node_config import NodeConfig
from models.shared.run_config import defaults
from models.shared.wire import Record, Status, Validation
from site_app.disclosure.model_sharing import shares_local_model
from site_app.learning.local_baseline import LocalBaseline
from site_app.learning.run_state import save_state
from site_app.round_replies import cross_evaluate_reply, local_model_reply
from site_app.settings.run_settings import SiteRunSettings

DEPLOYED = {NodeConfig.DATA_PATH: "/data", NodeConfig.WORK_PATH: "/work"}


def settings(**changes) -> SiteRunSettings:
    return SiteRunSettings.from_run_config({**defaults(), "model-preset": "tiny", **changes})


def message(tmp_path: Path, node_config: dict, run_settings: SiteRunSettings, name: str = "hospital-a"):
    """What the handlers read of a message, with a local-only model kept in the run's state folder."""
    baseline = LocalBaseline(True, tmp_path, "tiny")
    model = build_model("tiny", seed=0)
    save_state(baseline.path, {"state_dict": model.state_dict(), "optimizer": None, "meta": {}})
    return SimpleNamespace(
        node_config=node_config,
        settings=run_settings,
        site=SimpleNamespace(name=name),
        log=logging.getLogger("test"),
        site_round=lambda: SimpleNamespace(baseline=baseline),
    )


def test_a_deployed_site_without_its_consent_refuses_to_send_its_local_model(tmp_path):
    # the run config names the site as consenting: a deployed site reads only its own node config
    reply = local_model_reply(
        message(tmp_path, DEPLOYED, settings(**{"sim-share-local-model-for-evaluation": "hospital-a"}))
    )

    assert Record.ARRAYS not in reply.array_records
    assert reply[Record.SHARING][Validation.STATUS] == Status.REFUSED


def test_a_deployed_site_that_consents_sends_the_model_it_keeps(tmp_path):
    reply = local_model_reply(message(tmp_path, {**DEPLOYED, NodeConfig.SHARE_LOCAL_MODEL: True}, settings()))

    sent = reply[Record.ARRAYS].to_torch_state_dict()
    kept = build_model("tiny", seed=0).state_dict()
    assert sent.keys() == kept.keys()


@pytest.mark.parametrize(
    ("listed", "expected"), [("hospital-a, hospital-b", True), ("hospital-b", False), ("", False)]
)
def test_a_simulated_site_consents_when_the_sim_setting_names_it(listed, expected):
    run_settings = settings(**{"sim-share-local-model-for-evaluation": listed})
    assert shares_local_model({NodeConfig.PARTITION_ID: 0}, run_settings, "hospital-a") is expected


def test_consent_must_be_true_or_false():
    with pytest.raises(ValueError, match=NodeConfig.SHARE_LOCAL_MODEL):
        shares_local_model({**DEPLOYED, NodeConfig.SHARE_LOCAL_MODEL: "yes"}, settings(), "hospital-a")


def test_a_site_without_consent_does_not_evaluate_others_models(tmp_path):
    reply = cross_evaluate_reply(message(tmp_path, DEPLOYED, settings()))

    assert reply[Record.VALIDATION][Validation.STATUS] == Status.REFUSED
    assert not reply.metric_records
