"""The coordinator's run (server_app.app.run_federation) against scripted sites: quorum, deadlines, named
absences, reply checks, the global model kept without quorum, and resume without a repeated or lost round.

The sites are scripts behind a SuperLink stand-in (tests/support/scripted_grid.py); the same behaviour with real
Flower processes is in tests/integration/test_federation_resilience.py.
"""

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from scripted_grid import ScriptedGrid, ScriptedSite, scripted_run_config, trained

from models.presets import build_model
from models.shared.wire import OutsideLimit
from models.weights import load_checkpoint, to_record
from server_app.app import run_federation
from server_app.rounds.round_checkpoint import CheckpointError
from server_app.run_record.run_folder import read_metrics, read_rounds
from site_app.disclosure.policy import DisclosurePolicy
from site_app.disclosure.refusals import declined_training, refused_evaluation, refused_training
from site_app.settings.limits import OutsideSiteLimits


def run_config(run_dir: Path, **settings) -> dict:
    return scripted_run_config(run_dir, ["hospital-a", "hospital-b", "hospital-c"], **settings)


def three_sites(**changes) -> dict[int, ScriptedSite]:
    sites = {
        11: ScriptedSite("hospital-a", offset=0.1, train_cases=2),
        12: ScriptedSite("hospital-b", offset=0.2, train_cases=6),
        13: ScriptedSite("hospital-c", offset=0.3, train_cases=8, dice=0.2),
    }
    for node, change in changes.items():
        for key, value in change.items():
            setattr(sites[int(node.removeprefix("n"))], key, value)
    return sites


def model(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "models" / f"{name}.pt")[0]


def initial(tmp_path: Path) -> dict[str, torch.Tensor]:
    """The initial model of the tiny preset at seed 0 (what every run here starts from)."""
    return to_record(build_model("tiny", seed=0)).to_torch_state_dict()


def shifted(state: dict[str, torch.Tensor], by: float) -> dict[str, torch.Tensor]:
    return {k: v + by for k, v in state.items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], atol=atol, rtol=0)


def by_round(records: list[dict]) -> dict[int, dict[str, dict]]:
    rounds: dict[int, dict[str, dict]] = {}
    for record in records:
        rounds.setdefault(record["round"], {})[record["site"]] = record
    return rounds


def test_every_site_every_round_weighted_by_cases(tmp_path, flower_task):
    outcome = run_federation(ScriptedGrid(three_sites()), run_config(tmp_path / "run"))

    assert outcome.status == "completed" and outcome.last_round == 2
    records = read_metrics(tmp_path / "run")
    assert sorted((r["round"], r["site"]) for r in records) == [
        (rnd, site) for rnd in (0, 1, 2) for site in ("hospital-a", "hospital-b", "hospital-c")
    ]
    assert {r["status"] for r in records} == {"reported"}
    step = (2 * 0.1 + 6 * 0.2 + 8 * 0.3) / 16  # FedAvg weights by the cases each site trained on
    assert_same(model(tmp_path / "run", "final"), shifted(initial(tmp_path), 2 * step))
    assert [r["train"]["aggregated"] for r in read_rounds(tmp_path / "run")[1:]] == [True, True]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_model"] == "models/final.pt"


def wrong_shape(message):
    content = trained(message, 0.5, 4)
    arrays = content["arrays"]
    first = next(iter(arrays.keys()))
    content["arrays"] = ArrayRecord(
        {k: (Array(np.zeros((3, 3), np.float32)) if k == first else a) for k, a in arrays.items()}
    )
    return content


def float64(message):
    content = trained(message, 0.5, 4)
    content["arrays"] = ArrayRecord(
        {k: Array(a.numpy().astype(np.float64)) for k, a in content["arrays"].items()}
    )
    return content


def renamed(message):
    content = trained(message, 0.5, 4)
    return RecordDict({"weights": content["arrays"], "metrics": content["metrics"]})


def too_many_cases(message):
    return trained(message, 0.5, 10**12)


def test_bad_replies_are_dropped_by_name_and_the_run_completes(tmp_path, flower_task):
    sites = {
        11: ScriptedSite("hospital-a", offset=0.1, train_cases=2),
        12: ScriptedSite("hospital-b", offset=0.2, train_cases=6),
        13: ScriptedSite("hospital-c", train=wrong_shape),
        14: ScriptedSite("hospital-d", train=float64),
        15: ScriptedSite("hospital-e", train=renamed),
        16: ScriptedSite("hospital-f", train=too_many_cases),
    }
    names = ",".join(s.name for s in sites.values())
    outcome = run_federation(
        ScriptedGrid(sites), run_config(tmp_path / "run", expected_sites=names, num_server_rounds=1)
    )

    assert outcome.status == "completed"
    round_1 = by_round(read_metrics(tmp_path / "run"))[1]
    reasons = {
        site: r["reason"] for site, r in round_1.items() if r["participation"]["train"].startswith("dropped")
    }
    first = next(iter(initial(tmp_path)))
    assert reasons == {
        "hospital-c": f"train: weights {first!r} have shape (3, 3) instead of (8, 1, 3, 3, 3)",
        "hospital-d": f"train: weights {first!r} are float64 instead of float32",
        "hospital-e": "train: its records are [metrics (MetricRecord), weights (ArrayRecord)]; expected exactly "
        "[arrays (ArrayRecord), metrics (MetricRecord)]",
        "hospital-f": "train: `num-examples` is 1e+12, more than the 10 usable cases the site described",
    }
    # their validation of the new global model still arrived
    assert {(r["status"], r["participation"]["evaluate"]) for r in round_1.values()} == {("reported", "ok")}
    assert_same(model(tmp_path / "run", "final"), shifted(initial(tmp_path), (2 * 0.1 + 6 * 0.2) / 8))


def test_without_min_sites_sound_replies_the_global_model_is_kept(tmp_path, flower_task):
    sites = three_sites(n12={"train": wrong_shape}, n13={"train": float64})
    run_federation(ScriptedGrid(sites), run_config(tmp_path / "run", num_server_rounds=1))

    rounds = read_rounds(tmp_path / "run")
    assert rounds[1]["train"] == {
        "asked": ["hospital-a", "hospital-b", "hospital-c"],
        "sound": ["hospital-a"],
        "aggregated": False,
        "reason": "1 sound training reply, fewer than min-sites 2",
    }
    assert_same(model(tmp_path / "run", "final"), initial(tmp_path), atol=0)
    # the sites validated the unchanged model
    validated = [
        m.content["arrays"] for kind, rnd, m in sites[11].received if kind == "evaluate" and rnd == 1
    ]
    assert_same(validated[0].to_torch_state_dict(), initial(tmp_path), atol=0)


def test_a_site_lost_mid_phase_is_named_not_node_1(tmp_path, flower_task):
    sites = three_sites()

    def dies_while_training(message):
        sites[13].reachable = False  # Flower still lists it until its heartbeat expires, then answers for it

    sites[13].train = dies_while_training
    run_federation(ScriptedGrid(sites), run_config(tmp_path / "run", num_server_rounds=1))

    record = by_round(read_metrics(tmp_path / "run"))[1]["hospital-c"]
    assert record["status"] == "offline"
    assert (
        record["reason"] == "train: lost contact during the phase (no heartbeat: Flower's node unavailable)"
    )
    assert "node-1" not in {r["site"] for r in read_metrics(tmp_path / "run")}


def test_a_site_that_does_not_say_who_it_is_and_what_it_has_is_left_out_by_its_registered_name(
    tmp_path, flower_task
):
    nameless = RecordDict({"site": ConfigRecord({"site-name": "hospital-c"})})  # no usable case count
    sites = three_sites(n13={"describe": lambda message: nameless})
    run_federation(ScriptedGrid(sites), run_config(tmp_path / "run", num_server_rounds=1))

    record = by_round(read_metrics(tmp_path / "run"))[1]["hospital-c"]
    assert record["status"] == "dropped"
    assert record["reason"] == (
        "train: not described (its description bounds its cases by neither `n-cases-usable` nor"
        " `min-report-cases`)"
    )
    assert not any(kind == "train" for kind, _, _ in sites[13].received)


def test_a_silent_site_is_cut_off_at_the_deadline(tmp_path, flower_task):
    sites = three_sites(n13={"train": lambda message: None})
    started = time.monotonic()
    run_federation(
        ScriptedGrid(sites),
        run_config(tmp_path / "run", num_server_rounds=1, train_timeout_s=0.5, round_messages="two"),
    )

    assert time.monotonic() - started >= 0.5
    record = by_round(read_metrics(tmp_path / "run"))[1]["hospital-c"]
    assert (record["status"], record["reason"]) == ("reported", "train: no reply within 0.5 s")
    assert record["participation"] == {"train": "timeout: no reply within 0.5 s", "evaluate": "ok"}
    assert read_rounds(tmp_path / "run")[1]["train"]["aggregated"] is True


def test_a_site_that_comes_back_is_selected_again(tmp_path, flower_task):
    sites = three_sites()
    grid = ScriptedGrid(sites)

    def gone_after_round_1(message):
        if message.content["config"]["server-round"] == 1:
            sites[13].online = False  # for round 2: not listed by the SuperLink
        return trained(message, 0.3, 8)

    def back_for_round_3(message):
        sites[13].online = True
        return trained(message, 0.2, 6)

    sites[13].train = gone_after_round_1
    sites[12].train = lambda message: (
        back_for_round_3(message)
        if message.content["config"]["server-round"] == 2
        else trained(message, 0.2, 6)
    )
    run_federation(grid, run_config(tmp_path / "run", num_server_rounds=3))

    rounds = by_round(read_metrics(tmp_path / "run"))
    assert rounds[2]["hospital-c"]["participation"]["train"] == "offline: not online when the phase started"
    assert rounds[3]["hospital-c"]["status"] == "reported"
    assert [rnd for kind, rnd, _ in sites[13].received if kind == "train"] == [1, 3]


def test_without_quorum_the_run_stops_naming_the_offline_sites(tmp_path, flower_task):
    sites = three_sites(n12={"online": False}, n13={"online": False})
    outcome = run_federation(
        ScriptedGrid(sites), run_config(tmp_path / "run", wait_for_sites_s=0.5, round_messages="two")
    )

    assert outcome.status == "stopped" and outcome.last_round is None
    assert outcome.reason.startswith("round 0 could not start: only 1 of 3 sites online after waiting")
    assert outcome.reason.endswith("(min-sites 2); offline: hospital-b, hospital-c")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stopped"] == {
        "after_round": None,
        "reason": outcome.reason,
    }
    assert summary["final_model"] is None and not (tmp_path / "run" / "models" / "final.pt").exists()
    assert (tmp_path / "run" / "config.json").is_file()


def test_one_site_offline_at_the_start_the_run_goes_on_at_quorum(tmp_path, flower_task):
    sites = three_sites(n13={"online": False})
    outcome = run_federation(ScriptedGrid(sites), run_config(tmp_path / "run", num_server_rounds=1))

    assert outcome.status == "completed"
    assert {r["site"]: r["status"] for r in read_metrics(tmp_path / "run")} == {
        "hospital-a": "reported",
        "hospital-b": "reported",
        "hospital-c": "offline",
    }


def test_a_run_that_loses_its_quorum_stops_after_the_last_complete_round(tmp_path, flower_task):
    sites = three_sites()

    def last_round(message):
        sites[12].online = sites[13].online = False
        return trained(message, 0.1, 2)

    sites[11].train = lambda m: (
        last_round(m) if m.content["config"]["server-round"] == 2 else trained(m, 0.1, 2)
    )
    outcome = run_federation(
        ScriptedGrid(sites), run_config(tmp_path / "run", num_server_rounds=4, round_messages="two")
    )

    assert outcome.status == "stopped" and outcome.last_round == 2
    assert "round 3 could not start" in outcome.reason and "offline: hospital-b, hospital-c" in outcome.reason
    assert max(r["round"] for r in read_metrics(tmp_path / "run")) == 2


class CoordinatorDied(Exception):
    pass


@pytest.mark.parametrize(("messages", "checkpointed"), [("two", 2), ("one", 1)])
def test_resume_continues_without_repeating_or_losing_a_round(tmp_path, flower_task, messages, checkpointed):
    """With one message per round the checkpoint of round 2's message holds round 1's results and round 2's
    model, whose validation the resumed run's round-3 message carries."""
    uninterrupted = tmp_path / "uninterrupted"
    run_federation(
        ScriptedGrid(three_sites()), run_config(uninterrupted, num_server_rounds=4, round_messages=messages)
    )

    # The coordinator dies during round 3, after a site's record of round 3 was written
    interrupted = tmp_path / "interrupted"
    sites = three_sites()

    def die_in_round_3(message):
        if message.content["config"]["server-round"] == 3:
            written = read_metrics(interrupted)[-1]
            with open(interrupted / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps({**written, "round": 3}) + "\n")
                handle.write('{"round": 3, "site": "hosp')  # cut short by the crash
            raise CoordinatorDied
        return trained(message, 0.1, 2)

    sites[11].train = die_in_round_3
    with pytest.raises(CoordinatorDied):
        run_federation(
            ScriptedGrid(sites), run_config(interrupted, num_server_rounds=4, round_messages=messages)
        )
    assert json.loads((interrupted / "summary.json").read_text())["status"] == "failed"

    # A new coordinator (new node ids, as in a new simulation) continues the run in its folder
    renumbered = {node + 100: site for node, site in three_sites().items()}
    outcome = run_federation(
        ScriptedGrid(renumbered),
        run_config(interrupted, num_server_rounds=4, resume=True, round_messages=messages),
    )

    assert outcome.status == "completed" and outcome.last_round == 4
    pairs = Counter((r["round"], r["site"]) for r in read_metrics(interrupted))
    assert pairs == Counter((r["round"], r["site"]) for r in read_metrics(uninterrupted))
    assert set(pairs.values()) == {1}
    assert [r["round"] for r in read_rounds(interrupted)] == [0, 1, 2, 3, 4]
    assert_same(model(interrupted, "final"), model(uninterrupted, "final"), atol=0)
    discarded = (interrupted / "logs" / "discarded-on-resume.jsonl").read_text().splitlines()
    assert len(discarded) == 2
    assert [rnd for kind, rnd, _ in renumbered[111].received if kind == "train"] == [3, 4]
    config = json.loads((interrupted / "config.json").read_text())
    assert (
        config["resumed"][0]["after_round"] == checkpointed and config["resumed"][0]["records_discarded"] == 2
    )


def test_resume_needs_a_checkpoint_of_the_same_preset(tmp_path, flower_task):
    with pytest.raises(CheckpointError, match="not a run folder"):
        run_federation(ScriptedGrid(three_sites()), run_config(tmp_path / "nothing", resume=True))
    run_federation(ScriptedGrid(three_sites()), run_config(tmp_path / "run", num_server_rounds=1))
    with pytest.raises(CheckpointError, match="model preset 'tiny', not 'small'"):
        run_federation(
            ScriptedGrid(three_sites()), run_config(tmp_path / "run", resume=True, model_preset="small")
        )


def test_a_new_run_can_start_from_a_saved_global_model(tmp_path, flower_task):
    run_federation(ScriptedGrid(three_sites()), run_config(tmp_path / "first", num_server_rounds=1))
    saved = tmp_path / "first" / "models" / "final.pt"
    sites = three_sites()
    run_federation(
        ScriptedGrid(sites), run_config(tmp_path / "second", num_server_rounds=1, init_model=str(saved))
    )

    first_message = next(m for kind, _, m in sites[11].received if kind == "evaluate")
    assert_same(
        first_message.content["arrays"].to_torch_state_dict(), model(tmp_path / "first", "final"), atol=0
    )
    with pytest.raises(CheckpointError, match="is a 'tiny' model, but this run uses --preset small"):
        run_federation(
            ScriptedGrid(three_sites()),
            run_config(tmp_path / "third", init_model=str(saved), model_preset="small"),
        )


def test_the_best_model_is_not_the_round_where_the_weakest_site_failed(tmp_path, flower_task):
    sites = three_sites()
    dice = {
        "hospital-a": [0.50, 0.60, 0.58],
        "hospital-b": [0.50, 0.60, 0.59],
        "hospital-c": [0.10, 0.20, None],
    }

    def validation(site):
        def evaluate(message):
            value = dice[site.name][message.content["config"]["server-round"]]
            if value is None:
                return None  # the weakest site misses round 2
            return RecordDict(
                {
                    "validation": ConfigRecord({"status": "reported", "min-report-cases": 1}),
                    "metrics": MetricRecord({"dice-mean": value, "dice-wt-mean": value, "num-examples": 2}),
                }
            )

        return evaluate

    for site in sites.values():
        site.evaluate = validation(site)
    run_federation(ScriptedGrid(sites), run_config(tmp_path / "run", evaluate_timeout_s=0.3))

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # pooled over whoever reported, round 2 (0.585) would beat round 1 (0.467); paired on a and b it does not
    assert summary["best"]["round"] == 1 and summary["best"]["rule"].startswith("paired on common sites")
    assert load_checkpoint(tmp_path / "run" / "models" / "best.pt")[1]["round"] == 1


# A site's own policy (site_app.disclosure.policy, site_app.settings.limits) is not a dropped reply: its declined or
# refused training and its suppressed or refused validation arrive, are filed with its reason, and never count
# towards the quorum of training replies.


def test_a_site_that_declines_or_refuses_is_filed_with_its_reason_not_dropped(tmp_path, flower_task):
    policy = DisclosurePolicy.from_node_config({})
    limit = "run setting spacing-mm = 0.1 is outside this site's limits"
    outside = OutsideLimit("spacing-mm", 0.1, "limits.spacing-mm-min", 0.8)
    sites = three_sites(
        n12={"train": lambda message: declined_training("n < 5", policy)},
        n13={
            "train": lambda message: refused_training(OutsideSiteLimits(limit, outside)),
            "evaluate": lambda m: refused_evaluation(OutsideSiteLimits(limit, outside)),
        },
    )
    run_federation(ScriptedGrid(sites), run_config(tmp_path / "run", num_server_rounds=1, min_sites=1))

    round_1 = by_round(read_metrics(tmp_path / "run"))[1]
    assert round_1["hospital-b"]["participation"] == {"train": "declined: n < 5", "evaluate": "ok"}
    assert round_1["hospital-b"]["train"] == {"status": "declined", "reason": "n < 5"}
    assert round_1["hospital-b"]["status"] == "reported"
    refused = round_1["hospital-c"]
    assert refused["participation"] == {"train": f"refused: {limit}", "evaluate": f"refused: {limit}"}
    assert (refused["status"], refused["reason"], refused["metrics"], refused["n_cases"]) == (
        "refused",
        limit,
        {},
        None,
    )
    typed = {"setting": "spacing-mm", "value": 0.1, "limit": "limits.spacing-mm-min", "bound": 0.8}
    assert refused["outside_limit"] == typed and refused["conventions"] == {}
    assert refused["train"] == {"status": "refused", "reason": limit, "outside_limit": typed}
    assert read_rounds(tmp_path / "run")[1]["train"]["sound"] == ["hospital-a"]
    assert_same(model(tmp_path / "run", "final"), shifted(initial(tmp_path), 0.1))  # hospital-a's alone
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rounds_missed"] == {} and summary["sites"]["hospital-c"]["status"] == "refused"


def test_policy_replies_do_not_make_a_quorum(tmp_path, flower_task):
    policy = DisclosurePolicy.from_node_config({})
    declines = {"train": lambda message: declined_training("n < 5", policy)}
    sites = three_sites(n12=declines, n13=declines)
    run_federation(ScriptedGrid(sites), run_config(tmp_path / "run", num_server_rounds=1))

    assert (
        read_rounds(tmp_path / "run")[1]["train"]["reason"]
        == "1 sound training reply, fewer than min-sites 2"
    )
    assert_same(model(tmp_path / "run", "final"), initial(tmp_path), atol=0)


def test_sites_whose_policy_withholds_statistics_keep_their_own_numbers(tmp_path, flower_task):
    def reply(extra: dict, n: int):
        metrics = {"dice-mean": 0.5, "dice-wt-mean": 0.5, "n-cases": n, "num-examples": n, **extra}
        return lambda message: RecordDict(
            {
                "validation": ConfigRecord(
                    {"status": "reported", "min-report-cases": 1, "withheld": ["median"]}
                ),
                "metrics": MetricRecord(metrics),
            }
        )

    sites = three_sites(
        n11={"evaluate": reply({"dice-wt-median": 0.55, "n-skipped": 0}, 10), "usable": 12},
        n12={"evaluate": reply({}, 2)},
        n13={"evaluate": reply({}, 2)},
    )
    run_federation(ScriptedGrid(sites), run_config(tmp_path / "run", num_server_rounds=1))

    round_1 = by_round(read_metrics(tmp_path / "run"))[1]
    assert round_1["hospital-a"]["metrics"]["dice-wt-median"] == 0.55  # its own record keeps it
    assert round_1["hospital-b"]["withheld"] == ["median"]
    assert {r["participation"]["evaluate"] for r in round_1.values()} == {"ok"}  # not a differing reply
    pooled = json.loads((tmp_path / "run" / "summary.json").read_text())["weighted_mean"]["1"]
    assert "n-skipped" not in pooled and pooled["n-cases"] == 14


def test_a_site_that_withholds_its_case_count_is_bounded_by_its_minimum(tmp_path, flower_task):
    """Its policy withholds a usable count between 1 and its min-report-cases - 1 (R8): it may claim at most
    min-report-cases - 1 training cases."""

    def withheld(message):
        return RecordDict(
            {
                "site": ConfigRecord({"site-name": "hospital-c", "min-report-cases": 5}),
                "overview": MetricRecord({"n-cases-excluded": 0}),
            }
        )

    sites = three_sites(n13={"describe": withheld, "train": lambda m: trained(m, 0.3, 5)})
    sites[12].train = lambda m: trained(m, 0.2, 4)
    sites[12].describe = lambda m: RecordDict(
        {
            "site": ConfigRecord({"site-name": "hospital-b", "min-report-cases": 5}),
            "overview": MetricRecord({"n-cases-excluded": 0}),
        }
    )
    run_federation(ScriptedGrid(sites), run_config(tmp_path / "run", num_server_rounds=1))

    participation = {
        s: r["participation"]["train"] for s, r in by_round(read_metrics(tmp_path / "run"))[1].items()
    }
    assert participation == {
        "hospital-a": "ok",
        "hospital-b": "ok",
        "hospital-c": "dropped: `num-examples` is 5, more than the 4 usable cases the site described",
    }


def test_patience_stops_the_run_at_a_plateau_and_keeps_the_best_model(tmp_path, flower_task):
    """Dice by round 0.1, 0.5, 0.4, 0.45, 0.3 …: with patience 2 the run ends after round 3 (two rounds without
    beating round 1), completed, with best.pt from round 1 and final.pt from round 3; patience 0 runs every round."""
    curve = [0.1, 0.5, 0.4, 0.45, 0.3, 0.6, 0.7]

    def evaluate(message):
        value = curve[message.content["config"]["server-round"]]
        return RecordDict(
            {
                "validation": ConfigRecord({"status": "reported", "min-report-cases": 1}),
                "metrics": MetricRecord({"dice-mean": value, "dice-wt-mean": value, "num-examples": 2}),
            }
        )

    for patience, last in ((2, 3), (0, 6)):
        sites = three_sites()
        for site in sites.values():
            site.evaluate = evaluate
        run_dir = tmp_path / f"run-{patience}"
        outcome = run_federation(
            ScriptedGrid(sites), run_config(run_dir, num_server_rounds=6, patience=patience)
        )
        assert outcome.status == "completed" and outcome.last_round == last
        assert max(r["round"] for r in read_metrics(run_dir)) == last
        summary = json.loads((run_dir / "summary.json").read_text())
        assert load_checkpoint(run_dir / "models" / "final.pt")[1]["round"] == last
        if patience:
            assert summary["best"]["round"] == 1
            assert "plateau after round 3 of 6 (patience 2)" in summary["ended_early"]
