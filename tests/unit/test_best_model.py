"""best.pt by a rule a failing site cannot game: rounds are compared on the sites that reported in both."""

from server_app.run_record.best_model import BestRound, ended_early


def test_a_round_where_the_weakest_site_failed_does_not_look_best():
    best = BestRound()
    assert best.consider(1, {"a": (0.80, 10), "b": (0.78, 10), "weak": (0.20, 10)})
    # pooled over whoever reported, round 2 would be 0.79 > 0.593; on a and b it is 0.79 = 0.79: not better
    assert not best.consider(2, {"a": (0.79, 10), "b": (0.79, 10)})
    assert best.round == 1


def test_a_better_round_on_the_common_sites_wins_and_the_sites_are_recorded():
    best = BestRound()
    best.consider(1, {"a": (0.6, 10), "b": (0.5, 30)})
    assert best.consider(2, {"a": (0.7, 10), "c": (0.1, 5)})  # compared on a alone
    assert (best.round, best.compared_on) == (2, ["a"])
    assert best.score == (0.7 * 10 + 0.1 * 5) / 15


def test_no_common_site_or_no_report_is_no_evidence():
    best = BestRound()
    assert not best.consider(0, {})
    best.consider(1, {"a": (0.3, 4)})
    assert not best.consider(2, {"b": (0.9, 4)}) and best.round == 1
    assert BestRound.from_state(best.state()) == best


def test_a_plateau_is_patience_rounds_after_the_best_round():
    best = BestRound()
    assert best.plateau(3, 2) == ""  # no best round yet
    best.consider(1, {"a": (0.5, 2)})
    assert best.plateau(2, 2) == "" and best.plateau(3, 0) == ""
    assert best.plateau(3, 2) == "no better global model in the 2 rounds since round 1 (patience 2)"
    assert ended_early(3, 6, 2) == "stopped at a validation plateau after round 3 of 6 (patience 2)"
    assert ended_early(6, 6, 2) == ""
