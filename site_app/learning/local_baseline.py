"""The local-only baseline (run setting `local-baseline`): did joining the federation help this site?

Beside the federated model, the site trains a model on its own training cases only: it starts from the same
initial weights as the federation (the global model of round 1), gets the same budget every round (the same
epochs over the same cases, the same training code) and never leaves the site: it lives in the run's state
folder (site_app.learning.run_state). At every validation both models are measured on the same validation cases, and only
aggregates are sent, computed by the same code as every other statistic the site sends (site_app.disclosure.aggregates)
under the site's disclosure policy (site_app.disclosure.policy): only over the cases of a released set (R1, R6),
only means and percentile-bootstrap CIs (no order statistic, R2/R3), with the same secret-seeded resamples as the
global model's statistics (R4: the paired difference global − local-only resamples the same cases), rounded
alike (R5). Keys: models.shared.wire.baseline_key.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from logging import Logger
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from models.presets import build_model
from models.shared.wire import (
    BASELINE_METRICS,
    BASELINE_STATS,
    GAIN_PREFIX,
    LOCAL_ONLY_PREFIX,
    MEAN_DICE,
    MEAN_DICE_CI_HIGH,
    MEAN_DICE_CI_LOW,
    baseline_key,
    stat_key,
)
from models.weights import load_record
from site_app.disclosure.aggregates import site_aggregates
from site_app.learning.run_state import load_state, save_state
from site_app.learning.validation import CaseEvaluation

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
    bootstrap_seed: int,
) -> dict[str, float]:
    """local-… and gain-… keys (models.shared.wire.baseline_key) over the released validation cases `global_results`.

    `local_results` must cover exactly those cases: a baseline over a set one case smaller would let the
    difference of two releases reveal that case (disclosure policy R6), so a mismatch raises ValueError."""
    return paired_aggregates(
        global_results,
        local_results,
        regions,
        bootstrap_seed,
        (LOCAL_ONLY_PREFIX, GAIN_PREFIX),
        site_gain=False,
    )


def paired_aggregates(
    global_results: Sequence[CaseEvaluation],
    site_results: Sequence[CaseEvaluation],
    regions: Sequence[str],
    bootstrap_seed: int,
    prefixes: tuple[str, str],
    site_gain: bool,
) -> dict[str, float]:
    """Means and CIs of a model kept at the site (first prefix) and of the paired difference (second prefix) over
    the released cases `global_results`: global − site model, or site model − global when `site_gain`.

    `site_results` must cover exactly those cases (R6), else ValueError."""
    site_by_case = {r.case_id: r for r in site_results}
    if set(site_by_case) != {g.case_id for g in global_results}:
        raise ValueError("the site's model was not validated on exactly the released validation cases")
    pairs = [(g, site_by_case[g.case_id]) for g in global_results]
    no_position = len(pairs) + 1  # means and CIs only
    kept = site_aggregates([own.metrics for _, own in pairs], list(regions), bootstrap_seed, no_position)
    gain = site_aggregates(
        [
            _difference(own.metrics, g.metrics) if site_gain else _difference(g.metrics, own.metrics)
            for g, own in pairs
        ],
        list(regions),
        bootstrap_seed,
        no_position,
    )
    values: dict[str, float] = {}
    for prefix, aggregates in zip(prefixes, (kept, gain), strict=True):
        for metric in BASELINE_METRICS:
            for region in regions:
                for stat in BASELINE_STATS:
                    values[baseline_key(prefix, metric, region, stat)] = float(
                        aggregates[stat_key(metric, region, stat)]
                    )
        for stat, key in (("mean", MEAN_DICE), ("ci-low", MEAN_DICE_CI_LOW), ("ci-high", MEAN_DICE_CI_HIGH)):
            values[baseline_key(prefix, "dice", None, stat)] = float(aggregates[key])
    return values


def _difference(minuend: Mapping[str, float], subtrahend: Mapping[str, float]) -> dict[str, float]:
    """Per-case difference of every metric (counts too: site_aggregates sums them; they are not sent)."""
    return {key: float(minuend[key]) - float(subtrahend[key]) for key in minuend}


def received_model(model_preset: str, record: ArrayRecord) -> torch.nn.Module:
    """A whole model sent to this site (another site's local-only model, any transport dtype), ready to validate."""
    model = build_model(model_preset)
    load_record(model, record, keep=_missing(model, record))
    return model
