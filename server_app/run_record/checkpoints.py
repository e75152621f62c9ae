"""The global models a run keeps in models/: latest.pt after every round, best.pt (server_app.run_record.best_model's rule),
and final.pt only when the run completed all its rounds — a run that stopped early has no final.pt."""

from flwr.app import ArrayRecord

from models.shared.wire import MEAN_DICE
from server_app.run_record.best_model import RULE, BestRound
from server_app.run_record.run_folder import RunFolder

LATEST, BEST, FINAL = "latest", "best", "final"
SELECTION_METRIC = MEAN_DICE
"""The validation metric the best model is chosen by (server_app.run_record.best_model)."""


class Checkpointer:
    """Called after each round with that round's global model and its per-site validation scores."""

    def __init__(
        self,
        run: RunFolder,
        model_preset: str,
        meta: dict[str, object] | None = None,
        best: BestRound | None = None,
    ) -> None:
        self.run = run
        self.model_preset = model_preset
        self.meta = dict(meta or {})
        """Further checkpoint meta, e.g. the preprocessing (models.model_source.inference_meta)."""
        self.best = best or BestRound()

    def _meta(self, server_round: int) -> dict[str, object]:
        return {**self.meta, "round": server_round, "model_preset": self.model_preset}

    def __call__(self, server_round: int, arrays: ArrayRecord, scores: dict[str, tuple[float, int]]) -> None:
        meta = self._meta(server_round)
        self.run.save_model(LATEST, arrays, meta)
        if self.best.consider(server_round, scores):
            self.run.save_model(
                BEST,
                arrays,
                {**meta, SELECTION_METRIC: self.best.score, "sites": sorted(scores), "rule": RULE},
            )

    def finish(self, server_round: int, arrays: ArrayRecord) -> None:
        """The run completed: its last global model becomes final.pt."""
        self.run.save_model(FINAL, arrays, self._meta(server_round))
