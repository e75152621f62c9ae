"""A round between its training and its validation: what the coordinator holds until the round's results are complete.

With one message per site per round (run config `round-messages` one), round r's validation arrives with round
r + 1's training replies (or with the validate-only message after the last round), so round r stays pending for
one message: its ledger (each site's training outcome), its rounds.jsonl summary so far and its global model.
The round checkpoint keeps it (server_app.rounds.round_checkpoint), so a coordinator that dies between the two
messages resumes by sending the next round's message with this model, and the validation arrives with it.
"""

from dataclasses import dataclass

from flwr.app import ArrayRecord

from models.shared.wire import Status
from server_app.rounds.participation import PhaseOutcome, RoundLedger


@dataclass
class PendingRound:
    """A round whose evaluate outcomes are still to be filed; `arrays` is the global model it ended with."""

    round: int
    ledger: RoundLedger
    summary: dict
    arrays: ArrayRecord

    def state(self) -> dict:
        """The part the round checkpoint keeps (the model is the checkpoint's own `arrays`)."""
        return {
            "round": self.round,
            "summary": dict(self.summary),
            "sites": {
                name: {
                    "train": [str(site.train.status), site.train.reason],
                    "train_metrics": site.train_metrics,
                }
                for name, site in self.ledger.sites.items()
            },
        }

    @classmethod
    def from_state(cls, state: dict, arrays: ArrayRecord) -> "PendingRound":
        ledger = RoundLedger(int(state["round"]))
        for name, saved in state["sites"].items():
            site = ledger.site(name)
            status, reason = saved["train"]
            site.train, site.train_metrics = PhaseOutcome(Status(status), reason), saved["train_metrics"]
        return cls(int(state["round"]), ledger, dict(state["summary"]), arrays)
