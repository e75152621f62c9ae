"""The local-only baseline (run config `local-baseline`): did joining the federation help this site?

Beside the federated model, the site trains a model on its own training cases only: it starts from the same
initial weights as the federation (the global model of round 0/1), gets the same budget every round (the same
epochs over the same cases, the same training code) and never leaves the site: it lives in the run's state
folder (site_app.run_state). At every validation both models are measured on the same validation cases, and only
aggregates are sent, computed by the same code as every other statistic the site sends (site_app.aggregates):
per region the local-only model's mean with its CI, and the paired difference global − local-only with a paired
bootstrap CI (the per-case differences resampled with the same case indices).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from logging import Logger
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from models.baseline_keys import BASELINE_METRICS, BASELINE_STATS, GAIN_PREFIX, LOCAL_PREFIX, baseline_key
from models.presets import build_model
from models.weights import load_record
from site_app.aggregates import site_aggregates
from site_app.run_state import load_state, save_state
from site_app.validation import CaseEvaluation

MODEL_FILE = "local-only.pt"


@dataclass(frozen=True)
class LocalBaseline:
    enabled: bool
    state_dir: Path
    model_preset: str

    @property
    def path(self) -> Path:
        return self.state_dir / MODEL_FILE

    def load(self) -> tuple[torch.nn.Module, dict[str, object]] | None:
        """The local-only model and its training state, or None before its first round."""
        saved = load_state(self.path)
        if saved is None:
            return None
        model = build_model(self.model_preset)
        model.load_state_dict(saved["state_dict"])
        return model, saved

    def train_round(
        self,
        initial: ArrayRecord,
        server_round: int,
        train: Callable[[torch.nn.Module, dict[str, object] | None], tuple[float, dict[str, object]]],
        log: Logger,
    ) -> float | None:
        """One round of the local-only model's training; `initial` starts it when it has no file yet.

        `train(model, optimizer_state)` is the very function the federated model is trained with this round; it
        returns the mean loss and the optimizer state to keep.
        """
        if not self.enabled:
            return None
        loaded = self.load()
        if loaded is None:
            if server_round != 1:
                log.warning(
                    "local-only baseline: no model from earlier rounds in %s; starting it from round %d's "
                    "global model",
                    self.state_dir,
                    server_round,
                )
            model = build_model(self.model_preset)
            load_record(model, initial, keep=_missing(model, initial))
            saved: dict[str, object] = {"meta": {"first_round": server_round}, "optimizer": None}
        else:
            model, saved = loaded
        loss, optimizer_state = train(model, saved.get("optimizer"))  # type: ignore[arg-type]
        save_state(
            self.path,
            {
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer_state,
                "meta": {**saved["meta"], "round": server_round},  # type: ignore[dict-item]
            },
        )
        log.info("round %d: local-only baseline trained, mean loss %.4f", server_round, loss)
        return loss


def _missing(model: torch.nn.Module, record: ArrayRecord) -> frozenset[str]:
    """Names the record lacks (site-local norm layers): they keep the model's initial values."""
    return frozenset(set(model.state_dict()) - set(record.keys()))


def baseline_aggregates(
    global_results: Sequence[CaseEvaluation],
    local_results: Sequence[CaseEvaluation],
    regions: Sequence[str],
    seed: int,
) -> dict[str, float]:
    """local-… and gain-… keys (models.baseline_keys) over the validation cases both models were measured on."""
    local_by_case = {r.case_id: r for r in local_results}
    pairs = [(g, local_by_case[g.case_id]) for g in global_results if g.case_id in local_by_case]
    if not pairs:
        raise ValueError("no validation case was measured with both the global and the local-only model")
    spacings = [g.spacing_mm for g, _ in pairs]
    local = site_aggregates([loc.metrics for _, loc in pairs], spacings, list(regions), seed)
    gain = site_aggregates(
        [_difference(g.metrics, loc.metrics) for g, loc in pairs], spacings, list(regions), seed
    )
    values: dict[str, float] = {}
    for prefix, aggregates in ((LOCAL_PREFIX, local), (GAIN_PREFIX, gain)):
        for metric in BASELINE_METRICS:
            for region in regions:
                for stat in BASELINE_STATS:
                    values[baseline_key(prefix, metric, region, stat)] = float(
                        aggregates[f"{metric}-{region}-{stat}"]
                    )
        values[baseline_key(prefix, "dice", None, "mean")] = float(aggregates["dice-mean"])
        for stat in ("ci-low", "ci-high"):
            values[baseline_key(prefix, "dice", None, stat)] = float(aggregates[f"dice-mean-{stat}"])
    return values


def _difference(global_metrics: Mapping[str, float], local_metrics: Mapping[str, float]) -> dict[str, float]:
    """Per-case global − local-only of every metric (counts too: they are summed, then not sent)."""
    return {key: float(global_metrics[key]) - float(local_metrics[key]) for key in global_metrics}
