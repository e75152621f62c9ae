"""Which round's global model is the best so far, by a rule a failing site cannot game.

Pooling over "whichever sites reported" makes a round where the weakest site failed look best. Here a round is
compared with the best round so far only on the sites that reported validation numbers in both: each side's
case-weighted mean Dice over those common sites. A site missing from a round is left out of that comparison on
both sides, so its absence cannot lift a round; a round sharing no reporting site with the best is not compared.
"""

from dataclasses import dataclass, field

from models.shared.wire import MEAN_DICE, Status

RULE = (
    "paired on common sites: a round replaces the best round when its case-weighted mean Dice over the sites "
    "that reported validation numbers in both rounds is higher; a site missing from either round is left out "
    "of that comparison on both sides"
)
SCORE_KEY = MEAN_DICE


def pooled(scores: dict[str, tuple[float, int]], sites: set[str]) -> float:
    """Case-weighted mean of the sites' mean Dice (each site: (mean Dice, validation cases))."""
    total = sum(scores[s][1] for s in sites)
    return sum(scores[s][0] * scores[s][1] for s in sites) / total


def site_scores(records: list[dict]) -> dict[str, tuple[float, int]]:
    """site → (mean Dice, validation cases) of a round's metrics.jsonl records that reported numbers."""
    return {
        r["site"]: (float(r["metrics"][SCORE_KEY]), int(r["n_cases"]))
        for r in records
        if r.get("status") == Status.REPORTED and SCORE_KEY in r.get("metrics", {}) and r.get("n_cases")
    }


@dataclass
class BestRound:
    round: int | None = None
    scores: dict[str, tuple[float, int]] = field(default_factory=dict)
    """The best round's per-site (mean Dice, validation cases)."""
    compared_on: list[str] = field(default_factory=list)
    """The sites the last replacement was decided on."""

    def consider(self, server_round: int, scores: dict[str, tuple[float, int]]) -> bool:
        """True when this round becomes the best (then the caller saves its model as best.pt)."""
        if not scores:
            return False
        if self.round is None:
            self.round, self.scores, self.compared_on = server_round, dict(scores), sorted(scores)
            return True
        common = set(scores) & set(self.scores)
        if not common or pooled(scores, common) <= pooled(self.scores, common):
            return False
        self.round, self.scores, self.compared_on = server_round, dict(scores), sorted(common)
        return True

    def plateau(self, server_round: int, patience: int) -> str:
        """Why a run stops after `server_round` at a validation plateau ("" while it goes on): `patience` > 0
        rounds in a row have passed since the best round without a better one."""
        if patience <= 0 or self.round is None or server_round - self.round < patience:
            return ""
        return (
            f"no better global model in the {server_round - self.round} rounds since round {self.round}"
            f" (patience {patience})"
        )

    @property
    def score(self) -> float | None:
        """The best round's case-weighted mean Dice over all the sites that reported in it."""
        return pooled(self.scores, set(self.scores)) if self.scores else None

    def state(self) -> dict:
        return {
            "round": self.round,
            "scores": {site: [dice, n] for site, (dice, n) in self.scores.items()},
            "compared_on": list(self.compared_on),
        }

    @classmethod
    def from_state(cls, state: dict) -> "BestRound":
        return cls(
            round=state.get("round"),
            scores={site: (float(d), int(n)) for site, (d, n) in state.get("scores", {}).items()},
            compared_on=list(state.get("compared_on", [])),
        )


def ended_early(last_round: int, num_rounds: int, patience: int) -> str:
    """summary.json's `ended_early` for a run that completed before its planned last round ("" otherwise)."""
    if last_round >= num_rounds:
        return ""
    return f"stopped at a validation plateau after round {last_round} of {num_rounds} (patience {patience})"
