"""A message as the site handles it, read once: the run's settings, the site, its node config and log, and, for a
train or evaluate instruction, its config, round and the model side of the round (site_app.learning)."""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from logging import Logger

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message

from models.shared.wire import EVALUATE_ROUND, LR_SCALE, PROXIMAL_MU, RUN_KEY, SERVER_ROUND, Record
from site_app.disclosure.policy import DisclosurePolicy, deployed
from site_app.learning.federated_round import SiteRound
from site_app.learning.run_state import run_state_dir
from site_app.settings.identity import SitePaths, resolve_site
from site_app.settings.run_settings import SiteRunSettings
from site_app.site_log import site_logger


@dataclass(frozen=True)
class SiteMessage:
    """What every handler needs: every run setting read once into SiteRunSettings, the site from its node config
    (or simulated partition), and its log in the work folder."""

    msg: Message
    settings: SiteRunSettings
    site: SitePaths
    node_config: Mapping[str, object]
    log: Logger
    run_id: int
    validated_round: int | None = None
    """Set on the view of a train instruction that also validates (`for_validation`): the round validated."""

    @classmethod
    def read(cls, msg: Message, context: Context) -> "SiteMessage":
        settings = SiteRunSettings.from_run_config(context.run_config).at_site(context.node_config)
        site = resolve_site(context, settings)
        log = site_logger(site.work)
        log.info("handling a %s message", msg.metadata.message_type)
        note_lowered_thresholds(context.node_config, settings, log)
        return cls(msg, settings, site, context.node_config, log, context.run_id)

    @property
    def config(self) -> ConfigRecord:
        """The instruction's CONFIG record (train and evaluate; a query has none)."""
        return self.msg.content[Record.CONFIG]

    @property
    def server_round(self) -> int:
        """The instruction's round; on the validation view of a train instruction, the round it validates."""
        return self.validated_round if self.validated_round is not None else int(self.config[SERVER_ROUND])

    def evaluate_round(self) -> int | None:
        """The round whose validation rides on this train instruction (EVALUATE_ROUND), else None; it must be a
        whole number from 0 to the round before the instruction's own."""
        value = self.config.get(EVALUATE_ROUND)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.server_round:
            raise ValueError(
                f"the train instruction's `{EVALUATE_ROUND}` is {value!r}, expected a round before"
                f" {self.server_round}"
            )
        return value

    def for_validation(self, validated_round: int) -> "SiteMessage":
        """This message as the evaluate instruction of `validated_round` would be: same model, same run."""
        return replace(self, validated_round=validated_round)

    @property
    def incoming(self) -> ArrayRecord:
        """The global model the instruction carries (in the run's transport dtype)."""
        return self.msg.content[Record.ARRAYS]

    def site_round(self) -> SiteRound:
        """The model side of this round: the site, its settings, and its state folder for this run."""
        state_dir = run_state_dir(self.site.work, self.config.get(RUN_KEY), self.run_id)
        return SiteRound(self.site, self.settings, state_dir, _device(), self.log)

    def lr_scale(self) -> float:
        """The share of this site's learning rate the instruction asks for (instruction_lr_scale)."""
        return instruction_lr_scale(self.config)

    def proximal_mu(self) -> float | None:
        """FedProx's μ from the instruction (None: another strategy); a value that is not a number ≥ 0 is refused."""
        mu = self.config.get(PROXIMAL_MU)
        if mu is None:
            return None
        if isinstance(mu, bool) or not isinstance(mu, int | float) or not mu >= 0:
            raise ValueError(
                f"the train instruction's `{PROXIMAL_MU}` is {mu!r}, expected a number of at least 0"
            )
        return float(mu)


def instruction_lr_scale(config: Mapping[str, object]) -> float:
    """The share of the site's learning rate a train instruction's config asks for (1 when it names none); a value
    outside (0, 1] is refused: the coordinator may slow a site's training, never speed it up."""
    scale = config.get(LR_SCALE, 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 1:
        raise ValueError(f"the train instruction's `{LR_SCALE}` is {scale!r}, expected a share in (0, 1]")
    return float(scale)


def note_lowered_thresholds(
    node_config: Mapping[str, object], settings: SiteRunSettings, log: Logger
) -> None:
    """A deployed site's log says, with every message it handles, which disclosure thresholds its site.toml set
    below their defaults (confirmed there with `i-understand = true`)."""
    if deployed(node_config):
        for lowered in DisclosurePolicy.for_site(node_config, settings).lowered():
            log.warning(
                "disclosure threshold below its default (site.toml: i-understand = true): %s", lowered
            )


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
