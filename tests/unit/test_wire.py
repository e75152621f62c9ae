"""The wire contract (models.shared.wire) holds on both sides: the describe query the coordinator sends reaches the site's
handler and its reply is understood; the metric key grammar classifies every key a site sends, so the coordinator
pools a new count without a change of its own; statuses and a refusal's fields come back typed from the wire."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.serde import config_record_from_proto, config_record_to_proto

from data_prep.synth.federation import write_federation
from models.shared import node_config, wire
from models.shared.labels import REGION_SETS
from models.shared.run_config import defaults
from server_app.rounds.site_directory import site_description
from server_app.run_record.pooled import pool
from site_app.app import app as site_clientapp
from site_app.disclosure.aggregates import describe, site_aggregates


def test_the_coordinators_describe_query_reaches_the_sites_handler_and_is_understood(tmp_path, flower_task):
    write_federation(tmp_path / "fed", n_sites=1, seed=2, preset="tiny")
    node = {
        "site-name": "hospital-q",
        "data-path": str(tmp_path / "fed" / "hospital-a"),
        "work-path": str(tmp_path / "work"),
    }
    context = Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config=defaults())
    query = Message(RecordDict(), dst_node_id=5, message_type=wire.DESCRIBE_MESSAGE_TYPE)

    reply = site_clientapp(query, context)  # Flower's own routing, the site's real handler and its mods

    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    name, overview = site_description(reply.content)
    assert name == "hospital-q"
    assert overview[wire.Overview.N_CASES_USABLE] > 0
    assert reply.content[wire.Record.SITE][wire.SITE_MIN_REPORT_CASES] == node_config.DEFAULT_MIN_REPORT_CASES
    assert set(overview) <= {v for k, v in vars(wire.Overview).items() if k.isupper()}


def test_describe_message_type_is_derived_from_the_action():
    assert wire.DESCRIBE_MESSAGE_TYPE == f"query.{wire.DESCRIBE}" == "query.describe"


@pytest.mark.parametrize("region_set", list(REGION_SETS))
def test_every_key_of_a_real_evaluation_parses_and_is_pooled_or_left_out_on_purpose(region_set):
    regions = list(REGION_SETS[region_set])
    rng = np.random.default_rng(0)
    per_case = [
        {
            **{wire.region_key(m, r): float(rng.uniform()) for m in wire.METRICS for r in regions},
            **{wire.region_key(c, r): float(rng.integers(0, 2)) for c in wire.COUNTS for r in regions},
        }
        for _ in range(4)
    ]
    aggregates = site_aggregates(per_case, regions, seed=0, min_position_cases=4)

    means = {k for k in aggregates if wire.is_pooled_mean(k)}
    counts = {k for k in aggregates if wire.is_count(k)}
    assert means == {wire.MEAN_DICE} | {wire.stat_key(m, r, "mean") for m in wire.METRICS for r in regions}
    assert counts == set(wire.count_keys(regions)) - {wire.N_SKIPPED}  # n-skipped is added by the reply
    assert wire.regions_in(aggregates) == regions
    for key in aggregates:
        parsed = wire.parse_key(key)
        if parsed is not None:
            rebuilt = (
                wire.region_key(parsed.name, parsed.region)
                if parsed.stat is None
                else wire.stat_key(parsed.name, parsed.region, parsed.stat)
            )
            assert rebuilt == key


def test_region_names_fit_the_key_grammar():
    for regions in REGION_SETS.values():
        for region in regions:
            assert "-" not in region and region != "mean"
            assert wire.parse_key(wire.stat_key("hd95", region, "ci-low")) == wire.MetricKey(
                "hd95", region, "ci-low"
            )
            assert wire.parse_key(wire.region_key("lesions-fn", region)) == wire.MetricKey(
                "lesions-fn", region
            )


def test_keys_outside_the_grammar_are_not_region_keys():
    for key in (wire.MEAN_DICE, wire.MEAN_DICE_CI_LOW, wire.N_CASES, wire.N_SKIPPED, wire.NUM_EXAMPLES):
        assert wire.parse_key(key) is None
    assert wire.parse_key("dice-wt-mode") is None  # not a stat
    assert wire.parse_key("empty-both-wt-mean") is None  # counts have no stats


def test_the_stats_a_site_computes_are_the_contracts():
    resamples = np.zeros((3, 5), dtype=int)
    assert set(describe(np.arange(5.0), resamples, with_position=True)) == set(wire.STATS)
    without = set(describe(np.arange(5.0), resamples, with_position=False))
    assert without == set(wire.STATS) - set(wire.POSITION_STATS)


def test_what_a_sites_policy_may_withhold_is_named_by_the_contract():
    """The coordinator tells withheld keys (position stats, n-skipped) from a reply with other metric names."""
    assert wire.withholdable(wire.N_SKIPPED)
    assert all(wire.withholdable(wire.stat_key("hd95", "et", stat)) for stat in wire.POSITION_STATS)
    for key in (wire.stat_key("dice", "wt", "mean"), wire.stat_key("dice", "wt", "ci-low"), wire.N_CASES):
        assert not wire.withholdable(key)
    assert not wire.withholdable("dice-xx-median-extra") and not wire.withholdable(wire.MEAN_DICE)


def test_a_count_added_to_the_contract_is_pooled_by_the_coordinator(monkeypatch):
    monkeypatch.setattr(wire, "COUNTS", (*wire.COUNTS, "lesions-split"))
    sites = [
        {"lesions-split-wt": 2, "dice-wt-mean": 0.5, "dice-wt-median": 0.5, "n-cases": 3},
        {"lesions-split-wt": 5, "dice-wt-mean": 0.8, "dice-wt-median": 0.9, "n-cases": 1},
    ]
    pooled = pool(sites, [3, 1])
    assert pooled["lesions-split-wt"] == 7 and pooled["n-cases"] == 4
    assert pooled["dice-wt-mean"] == pytest.approx((3 * 0.5 + 0.8) / 4)
    assert "dice-wt-median" not in pooled


def test_statuses_and_a_refusals_fields_survive_the_wire_typed():
    """What a site writes (Status members, OutsideLimit) comes back as plain values from Flower's serialization;
    the coordinator reads them back into the same types, and nothing else passes for them."""
    limit = wire.OutsideLimit("patch-size", 512, "limits.patch-size-max", 160)
    sent = ConfigRecord({wire.Training.STATUS: wire.Status.REFUSED, **limit.fields()})
    received = config_record_from_proto(config_record_to_proto(sent))

    assert type(received[wire.Training.STATUS]) is str
    assert wire.read_status(received[wire.Training.STATUS], wire.TRAINING_STATUSES) is wire.Status.REFUSED
    assert wire.OutsideLimit.from_record(received) == limit
    assert wire.read_status("refused", wire.ABSENT_STATUSES) is None  # a policy status is no absence
    assert wire.read_status("Refused", wire.TRAINING_STATUSES) is None
    assert wire.read_status(["refused"], wire.TRAINING_STATUSES) is None
    assert wire.OutsideLimit.from_record({**limit.fields(), "bound": True}) is None
    assert wire.OutsideLimit.from_record({**limit.fields(), "setting": ""}) is None
