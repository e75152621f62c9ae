"""Whose reply is it: the coordinator names a node by the name the coordinator registered its key under (Flower's
node table), never by what the site writes. Attacks: a site that describes itself as another site, a site that
takes another's name and a reply that arrives from a node other than the one the message was for."""

import json
import logging

from flwr.app import Message, RecordDict
from scripted_grid import ScriptedGrid, ScriptedSite, described, scripted_run_config

from server_app.app import run_federation
from server_app.rounds.grid_exchange import exchange
from server_app.run_record.run_folder import read_metrics

SITES = ["hospital-a", "hospital-b", "hospital-c"]


def by_site(records: list[dict], server_round: int) -> dict[str, dict]:
    return {r["site"]: r for r in records if r["round"] == server_round}


def test_a_site_describing_itself_as_another_is_filed_under_its_registered_name(
    tmp_path, flower_task, caplog
):
    """hospital-c's node says it is hospital-a, with far more cases: its results and what it described stay
    hospital-c's, and hospital-a's stay hospital-a's."""
    sites = {
        11: ScriptedSite("hospital-a", offset=0.1, dice=0.9),
        12: ScriptedSite("hospital-b", offset=0.2, dice=0.6),
        13: ScriptedSite("hospital-c", offset=0.3, dice=0.2, describe=lambda m: described("hospital-a", 500)),
    }
    config = scripted_run_config(tmp_path / "run", SITES, num_server_rounds=1)
    with caplog.at_level(logging.WARNING):
        outcome = run_federation(ScriptedGrid(sites), config)

    assert outcome.status == "completed"
    records = read_metrics(tmp_path / "run")
    assert {r["site"] for r in records} == set(SITES)  # no "hospital-a#13", no second hospital-a
    round_1 = by_site(records, 1)
    assert round_1["hospital-a"]["metrics"]["dice-mean"] == 0.9
    assert round_1["hospital-c"]["metrics"]["dice-mean"] == 0.2
    assert "Node 13 says it is 'hospital-a' but its key is registered as 'hospital-c'" in caplog.text
    overviews = json.loads((tmp_path / "run" / "summary.json").read_text())["site_overview"]
    assert (
        overviews["hospital-a"]["n-cases-usable"] == 10 and overviews["hospital-c"]["n-cases-usable"] == 500
    )


def test_an_unregistered_node_is_named_by_its_description(tmp_path, flower_task):
    """A simulation's nodes have no registered name: the name their ClientApp takes from the simulation's own
    partition → site-folder map is the one they are filed under; two claiming one name are told apart."""
    sites = {
        21: ScriptedSite("hospital-a", registered=False),
        22: ScriptedSite("hospital-b", registered=False),
        23: ScriptedSite("hospital-c", registered=False, describe=lambda m: described("hospital-b", 10)),
    }
    config = scripted_run_config(tmp_path / "run", SITES, num_server_rounds=1)
    run_federation(ScriptedGrid(sites), config)

    assert {r["site"] for r in by_site(read_metrics(tmp_path / "run"), 1).values()} == {
        "hospital-a",
        "hospital-b",
        "hospital-b#23",
        "hospital-c",  # expected but never heard of under that name: offline
    }


class ForgingGrid(ScriptedGrid):
    """A SuperLink that, unlike Flower's, hands over a reply from a node the message was not sent to."""

    def pull_messages(self, message_ids):
        replies = super().pull_messages(message_ids)
        for reply in replies:
            if reply.metadata.src_node_id == 12:
                reply.metadata.__dict__["_src_node_id"] = 11  # says it comes from hospital-a's node
        return replies


def test_a_reply_is_attributed_only_to_the_node_it_came_from(flower_task):
    sites = {11: ScriptedSite("hospital-a", evaluate=lambda m: None), 12: ScriptedSite("hospital-b")}
    grid = ForgingGrid(sites)
    messages = [Message(RecordDict(), dst_node_id=node, message_type="evaluate") for node in (11, 12)]
    answers = exchange(grid, messages, timeout_s=0.2, poll_s=0.05)

    assert answers.replies == {} and answers.unanswered == (11, 12)
