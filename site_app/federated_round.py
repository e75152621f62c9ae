"""One site's part of a round, as plain functions: the ClientApp's handlers and the quality benchmark call them.

train_round:    the incoming global model (+ this site's own norm layers with local-norm) is trained on the
                site's training cases; the local-only baseline gets the same round of training; the reply holds
                the weights the site shares, in the transport dtype.
evaluate_round: the same personalized model (and the local-only one) on the site's validation cases; the reply
                holds aggregates only (site_app.disclosure).
Every random stream of a round is seeded from the run seed, the round and the site (site_app.training).
"""

from dataclasses import dataclass
from logging import Logger
from pathlib import Path

import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from data_prep.dataset import training_dataset
from models.federation_settings import FederationSettings
from models.presets import build_model
from models.transport import encode
from models.weights import to_record
from site_app.disclosure import ValidationPolicy, evaluation_content
from site_app.local_baseline import LocalBaseline
from site_app.local_norm import LocalNorm
from site_app.run_settings import SiteRunSettings
from site_app.site_config import SitePaths
from site_app.site_data import SiteCases
from site_app.training import round_seed, seed_everything, train_epochs
from site_app.validation import CaseEvaluation, validate_cases
from site_app.work_records import keep_validation


@dataclass(frozen=True)
class SiteRound:
    """Who trains, on what, with which settings, and where the run's site-local state lives."""

    site: SitePaths
    settings: SiteRunSettings
    federation: FederationSettings
    cases: SiteCases
    state_dir: Path
    device: torch.device
    log: Logger

    @property
    def local_norm(self) -> LocalNorm:
        return LocalNorm(self.federation.local_norm, self.state_dir)

    @property
    def baseline(self) -> LocalBaseline:
        return LocalBaseline(self.federation.local_baseline, self.state_dir, self.settings.model_preset)

    def train_model(
        self, model: torch.nn.Module, server_round: int, stream: str, proximal_mu: float | None
    ) -> float:
        """One round's budget of local training, every random draw seeded from (run seed, round, site, stream)."""
        seed = round_seed(self.settings.seed, server_round, self.site.name, stream)
        seed_everything(seed)
        dataset = training_dataset(
            self.cases.train, self.settings.pipeline, self.site.work / "cache", seed=seed
        )
        return train_epochs(
            model,
            dataset,
            epochs=self.settings.local_epochs,
            learning_rate=self.settings.learning_rate,
            batch_size=self.settings.batch_size,
            device=self.device,
            seed=seed,
            proximal_mu=proximal_mu,
        )

    def personalized(self, incoming: ArrayRecord) -> torch.nn.Module:
        """The incoming global weights, with this site's norm layers when local-norm is on."""
        model = build_model(self.settings.model_preset)
        self.local_norm.personalize(model, incoming)
        return model


def train_round(
    work: SiteRound, server_round: int, incoming: ArrayRecord, proximal_mu: float | None
) -> tuple[ArrayRecord, MetricRecord]:
    """Train the global model one round; returns the arrays to send (transport dtype) and the train metrics."""
    model = work.personalized(incoming)
    loss = work.train_model(model, server_round, "train", proximal_mu)
    work.local_norm.keep(model, server_round)
    work.log.info("round %d: trained on %d cases, mean loss %.4f", server_round, len(work.cases.train), loss)
    work.baseline.train_round(
        incoming,
        server_round,
        lambda local_model, _: (work.train_model(local_model, server_round, "local-only", None), None),
        work.log,
    )
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(work.cases.train)})
    return encode(work.local_norm.outgoing(model), work.federation.transport_dtype), metrics


def validate(
    work: SiteRound, model: torch.nn.Module, policy: ValidationPolicy
) -> tuple[list[CaseEvaluation], int]:
    results, n_failed = validate_cases(
        model,
        work.cases.val,
        work.settings.pipeline,
        policy.regions,
        work.device,
        work.log,
        work.federation.min_lesion_mm3,
    )
    if not results:
        raise ValueError(
            f"none of the {len(work.cases.val)} validation cases could be validated (see the site log)"
        )
    return results, n_failed


def evaluate_round(
    work: SiteRound, server_round: int, incoming: ArrayRecord, policy: ValidationPolicy, run_config: dict
) -> RecordDict:
    """Validate the (personalized) global model and, with local-baseline, the local-only model on the same cases."""
    model = work.personalized(incoming)
    results, n_failed = validate(work, model, policy)
    local_results = None
    if work.baseline.enabled:
        loaded = work.baseline.load()
        # Before its first round of training the local-only model is the initial model, i.e. this one.
        local_results = results if loaded is None else validate(work, loaded[0], policy)[0]
    keep_validation(
        work.site, run_config, server_round, to_record(model), work.settings.model_preset, results
    )
    content = evaluation_content(results, work.cases.n_skipped + n_failed, policy, baseline=local_results)
    work.log.info(
        "round %d: validated %d cases (%s, minimum %d)",
        server_round,
        len(results),
        content["validation"]["status"],
        policy.min_report_cases,
    )
    return content
