"""The model side of a site's round, as plain functions; the site's replies (site_app.round_replies) call them after
the site's disclosure policy has chosen the cases, and the quality benchmark runs the ClientApp unchanged.

train_round:       the incoming global model (+ this site's own norm layers with local-norm) is trained on the
                   chosen training cases; the local-only baseline gets the same round of training on the same
                   cases; returns the weights the site shares, in the transport dtype.
personalized:      the model a site validates: the incoming global weights, with its own norm layers under
                   local-norm.
validate_local_only: the local-only model on the cases the global model's results were released for.
validate_personalized: the global model fine-tuned on the site's training cases (personalize-epochs), kept at the
                   site and validated on those same cases.
Every random stream of a round is seeded from the run seed, the round and the site (site_app.learning.training).
"""

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from logging import Logger
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from data_prep.dataset import training_dataset
from models.presets import build_model
from models.transport import encode
from site_app.learning.local_baseline import LocalBaseline
from site_app.learning.local_norm import LocalNorm
from site_app.learning.personalize import keep_personalized
from site_app.learning.training import round_seed, seed_everything, train_epochs
from site_app.learning.validation import CaseEvaluation, validate_cases
from site_app.learning.work_records import site_model_meta
from site_app.settings.identity import SitePaths
from site_app.settings.run_settings import SiteRunSettings

TRAIN_STREAM, LOCAL_ONLY_STREAM, PERSONALIZE_STREAM = "train", "local-only", "personalize"
"""The random streams of a site's round (site_app.learning.training.round_seed)."""


@dataclass(frozen=True)
class SiteRound:
    """Who trains, with which settings, and where the run's site-local state lives (site_app.learning.run_state)."""

    site: SitePaths
    settings: SiteRunSettings
    state_dir: Path
    device: torch.device
    log: Logger

    @property
    def local_norm(self) -> LocalNorm:
        return LocalNorm(self.settings.local_norm, self.state_dir)

    @property
    def baseline(self) -> LocalBaseline:
        return LocalBaseline(self.settings.local_baseline, self.state_dir, self.settings.model_preset)

    def train_model(
        self,
        model: torch.nn.Module,
        items: Sequence[dict[str, object]],
        server_round: int,
        stream: str,
        proximal_mu: float | None,
        epochs: int | None = None,
        lr_scale: float = 1.0,
    ) -> float:
        """One round's budget of local training (`epochs`, default local-epochs), every random draw seeded from
        (run seed, round, site, stream), at the coordinator's share `lr_scale` of the site's learning rate."""
        seed = round_seed(self.settings.seed, server_round, self.site.name, stream)
        seed_everything(seed)
        dataset = training_dataset(list(items), self.settings.pipeline, self.site.work / "cache", seed=seed)
        return train_epochs(
            model,
            dataset,
            epochs=self.settings.local_epochs if epochs is None else epochs,
            learning_rate=self.settings.learning_rate,
            batch_size=self.settings.batch_size,
            device=self.device,
            seed=seed,
            proximal_mu=proximal_mu,
            lr_scale=lr_scale,
        )

    def personalized(self, incoming: ArrayRecord) -> torch.nn.Module:
        """The incoming global weights (any transport dtype), with this site's norm layers when local-norm is on."""
        model = build_model(self.settings.model_preset)
        self.local_norm.personalize(model, incoming)
        return model


def train_round(
    work: SiteRound,
    server_round: int,
    incoming: ArrayRecord,
    items: Sequence[dict[str, object]],
    proximal_mu: float | None,
    lr_scale: float = 1.0,
) -> tuple[ArrayRecord, float]:
    """Train the global model one round on `items`; returns the arrays to send (transport dtype, without the
    norm layers under local-norm) and the mean loss. With local-baseline the local-only model trains too, with the
    same budget and the same `lr_scale` (the coordinator's schedule for this round)."""
    model = work.personalized(incoming)
    loss = work.train_model(model, items, server_round, TRAIN_STREAM, proximal_mu, lr_scale=lr_scale)
    work.local_norm.keep(model, server_round)
    work.baseline.train_round(
        incoming,
        server_round,
        lambda local_model, _: (
            work.train_model(local_model, items, server_round, LOCAL_ONLY_STREAM, None, lr_scale=lr_scale),
            None,
        ),
        work.log,
    )
    return encode(work.local_norm.outgoing(model), work.settings.transport_dtype), loss


def validate_local_only(
    work: SiteRound,
    items: Sequence[dict[str, object]],
    global_results: Sequence[CaseEvaluation],
    server_round: int,
    regions: dict[str, tuple[int, ...]],
) -> list[CaseEvaluation] | None:
    """The local-only model's results on `items` (the cases of `global_results`), or None when there is none.

    Round 0 validates the initial model, which the local-only model also starts from: its results are the global
    model's. Later, a site that has not trained yet (it declined) has no local-only model, and sends no baseline.
    """
    loaded = work.baseline.load()
    if loaded is None:
        return list(global_results) if server_round == 0 else None
    results, _ = validate_cases(
        loaded[0],
        list(items),
        work.settings.pipeline,
        regions,
        work.device,
        work.log,
        work.settings.min_lesion_mm3,
    )
    return results


def validate_personalized(
    work: SiteRound,
    global_model: torch.nn.Module,
    train_items: Sequence[dict[str, object]],
    items: Sequence[dict[str, object]],
    server_round: int,
    regions: dict[str, tuple[int, ...]],
) -> list[CaseEvaluation]:
    """Fine-tune a copy of the global model (as validated here) for personalize-epochs on `train_items` at
    personalize-lr-share of the site's learning rate, keep it at the site (site_app.learning.personalize) and return its results on `items`."""
    model = copy.deepcopy(global_model)
    epochs = work.settings.personalize_epochs
    share = work.settings.personalize_lr_share
    loss = work.train_model(
        model, train_items, server_round, PERSONALIZE_STREAM, None, epochs=epochs, lr_scale=share
    )
    meta = site_model_meta(work.settings, server_round)
    path = keep_personalized(model, global_model, work.site.work, work.state_dir, meta)
    work.log.info(
        "round %d: personalized model fine-tuned %d epoch(s), mean loss %.4f: %s",
        server_round,
        epochs,
        loss,
        path,
    )
    results, _ = validate_cases(
        model,
        list(items),
        work.settings.pipeline,
        regions,
        work.device,
        work.log,
        work.settings.min_lesion_mm3,
    )
    return results
