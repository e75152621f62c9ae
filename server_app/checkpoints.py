"""Keeps the final and the best global model (by example-weighted mean Dice over the sites)."""

from flwr.app import ArrayRecord, MetricRecord

from models.wire import MEAN_DICE
from server_app.run_folder import RunFolder

SELECTION_METRIC = MEAN_DICE
"""The pooled evaluation's key the best model is chosen by."""


class Checkpointer:
    """Used as the strategy's `evaluate_fn`: called after each round's federated evaluation."""

    def __init__(self, run: RunFolder, model_preset: str, meta: dict[str, object] | None = None) -> None:
        self.run = run
        self.model_preset = model_preset
        self.meta = dict(meta or {})
        """Further checkpoint meta, e.g. the preprocessing (models.model_source.inference_meta)."""
        self.best_round: int | None = None
        self.best_score = float("-inf")

    def __call__(self, server_round: int, arrays: ArrayRecord, evaluation: MetricRecord | None) -> None:
        meta = {**self.meta, "round": server_round, "model_preset": self.model_preset}
        self.run.save_model("final", arrays, meta)
        score = float(evaluation[SELECTION_METRIC]) if evaluation and SELECTION_METRIC in evaluation else None
        if score is not None and score > self.best_score:
            self.best_round, self.best_score = server_round, score
            self.run.save_model("best", arrays, {**meta, SELECTION_METRIC: score})
