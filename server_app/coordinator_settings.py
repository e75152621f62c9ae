"""Every run setting the coordinator reads, read once through models.shared.run_config into one typed object.

The ServerApp reads the coordinator's settings and the shared ones; never a site's (models.shared.run_config.Owner).
The strategy's settings (StrategySettings) are the coordinator's too: a site learns the one it needs, FedProx's
μ, from each train instruction (models.shared.wire.PROXIMAL_MU), and the shared ones (local-norm, transport-dtype) from
the run config.
Beyond each setting's own type and range, the settings are checked together here: the quorum cannot exceed the
federation's sites, and a run either resumes or starts from a saved model, never both.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from models.presets import get_preset, patch_size
from models.shared.run_config import (
    BETA1,
    BETA2,
    DESCRIBE_TIMEOUT_S,
    DP_CLIPPING_NORM,
    DP_DELTA,
    DP_NOISE_MULTIPLIER,
    EVALUATE_TIMEOUT_S,
    EXPECTED_SITES,
    INIT_MODEL,
    LOCAL_NORM,
    LR_FINAL_SHARE,
    LR_SCHEDULE,
    MAX_CASES,
    MAX_SITE_WEIGHT,
    MIN_SITES,
    MODEL_PRESET,
    NUM_MALICIOUS_NODES,
    NUM_SERVER_ROUNDS,
    PATCH_SIZE,
    PATIENCE,
    PROXIMAL_MU,
    RESUME,
    ROUND_MESSAGES,
    RUN_DIR,
    SECURE_AGGREGATION,
    SEED,
    SERVER_LR,
    SPACING_MM,
    STRATEGY,
    TAU,
    TRACKING_URI,
    TRAIN_TIMEOUT_S,
    TRANSPORT_DTYPE,
    TRIM_BETA,
    UPDATE_MIN_COSINE,
    UPDATE_NORM_BOUND,
    UPDATE_NORM_DROP_FACTOR,
    UPDATE_NORM_MEDIAN_FACTOR,
    WAIT_FOR_SITES_S,
)

DP_STRATEGIES = ("fedavg", "fedprox")
"""The strategies central DP may wrap: Flower's fixed-clipping noise is calibrated for a plain mean only."""

SECURE_STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi")
"""The strategies secure aggregation can feed: each needs only the weighted mean of the updates, which is all the
coordinator learns; the robust ones (median, trimmed mean, Krum) compare single updates, which it never sees."""


@dataclass(frozen=True)
class StrategySettings:
    """How the coordinator turns the sites' weights into the next global model, and what travels."""

    strategy: str
    proximal_mu: float
    server_lr: float
    beta1: float
    beta2: float
    tau: float
    dp_noise_multiplier: float
    dp_clipping_norm: float
    dp_delta: float
    local_norm: bool
    transport_dtype: str
    trim_beta: float = TRIM_BETA.default
    num_malicious_nodes: int = NUM_MALICIOUS_NODES.default
    max_site_weight: float = MAX_SITE_WEIGHT.default
    """The largest share of the mean one site may have (server_app.strategies.site_weight); 1: no cap."""
    update_norm_bound: float = UPDATE_NORM_BOUND.default
    """Each update's L2 distance from the global model is clipped to this (server_app.strategies.update_norm);
    0: recorded, not bounded."""
    lr_schedule: str = LR_SCHEDULE.default
    """The share of the sites' learning rate per round (server_app.strategies.lr_schedule)."""
    lr_final_share: float = LR_FINAL_SHARE.default
    num_rounds: int = NUM_SERVER_ROUNDS.default
    """The run's training rounds: where the schedule ends."""
    secure_aggregation: bool = False
    """SecAgg+ (server_app.rounds.secure_aggregation): the coordinator learns only the weighted sum of the
    updates; each site clips to update_norm_bound and weighs its own update before masking."""
    update_norm_median_factor: float = UPDATE_NORM_MEDIAN_FACTOR.default
    """Each update is also clipped to this multiple of the median of the round's update norms; 0: off."""
    update_norm_drop_factor: float = UPDATE_NORM_DROP_FACTOR.default
    """An update whose norm is above this multiple of the round's median norm is left out; 0: off."""
    update_min_cosine: float = UPDATE_MIN_COSINE.default
    """The update of a site above `max_site_weight`, less similar than this to the median of the others'
    updates, is left out (server_app.strategies.update_direction); -1: off."""

    @property
    def dp(self) -> bool:
        """Central differential privacy is on (a positive noise multiplier)."""
        return self.dp_noise_multiplier > 0

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object]) -> "StrategySettings":
        """Read and check the strategy's settings; RunConfigError names the first bad one."""
        settings = cls(
            strategy=STRATEGY.read(run_config),
            proximal_mu=PROXIMAL_MU.read(run_config),
            server_lr=SERVER_LR.read(run_config),
            beta1=BETA1.read(run_config),
            beta2=BETA2.read(run_config),
            tau=TAU.read(run_config),
            dp_noise_multiplier=DP_NOISE_MULTIPLIER.read(run_config),
            dp_clipping_norm=DP_CLIPPING_NORM.read(run_config),
            dp_delta=DP_DELTA.read(run_config),
            local_norm=LOCAL_NORM.read(run_config),
            transport_dtype=TRANSPORT_DTYPE.read(run_config),
            trim_beta=TRIM_BETA.read(run_config),
            num_malicious_nodes=NUM_MALICIOUS_NODES.read(run_config),
            max_site_weight=MAX_SITE_WEIGHT.read(run_config),
            update_norm_bound=UPDATE_NORM_BOUND.read(run_config),
            lr_schedule=LR_SCHEDULE.read(run_config),
            lr_final_share=LR_FINAL_SHARE.read(run_config),
            num_rounds=NUM_SERVER_ROUNDS.read(run_config),
            secure_aggregation=SECURE_AGGREGATION.read(run_config),
            update_norm_median_factor=UPDATE_NORM_MEDIAN_FACTOR.read(run_config),
            update_norm_drop_factor=UPDATE_NORM_DROP_FACTOR.read(run_config),
            update_min_cosine=UPDATE_MIN_COSINE.read(run_config),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """The bounds `minimum` cannot state, and the combinations that do not work; names the setting."""
        if self.server_lr <= 0:
            raise SERVER_LR.refuse(self.server_lr, "a number above 0")
        for setting, value in ((BETA1, self.beta1), (BETA2, self.beta2)):
            if not value < 1:
                raise setting.refuse(value, "a number in [0, 1)")
        if self.tau <= 0:
            raise TAU.refuse(self.tau, "a number above 0")
        if self.dp_clipping_norm <= 0:
            raise DP_CLIPPING_NORM.refuse(self.dp_clipping_norm, "a number above 0")
        if not 0 < self.dp_delta < 1:
            raise DP_DELTA.refuse(self.dp_delta, "a number in (0, 1)")
        if not self.trim_beta < 0.5:
            raise TRIM_BETA.refuse(self.trim_beta, "a number in [0, 0.5)")
        if not 0 < self.lr_final_share <= 1:
            raise LR_FINAL_SHARE.refuse(self.lr_final_share, "a share in (0, 1]")
        if not 0 < self.max_site_weight <= 1:
            raise MAX_SITE_WEIGHT.refuse(self.max_site_weight, "a share in (0, 1]")
        if self.dp and self.strategy not in DP_STRATEGIES:
            raise DP_NOISE_MULTIPLIER.refuse(
                self.dp_noise_multiplier,
                f"0 with strategy {self.strategy!r}: Flower's fixed-clipping wrapper adds its noise to what the"
                " strategy returns, a calibrated Gaussian mechanism only for a plain mean of the clipped updates;"
                f" use `{STRATEGY.key}` {' or '.join(DP_STRATEGIES)} for central DP",
            )
        if self.secure_aggregation:
            self._check_secure_aggregation()

    def _check_secure_aggregation(self) -> None:
        """What secure aggregation cannot go with: strategies and wrappers that need each site's update."""
        if self.strategy not in SECURE_STRATEGIES:
            raise SECURE_AGGREGATION.refuse(
                True,
                f"false with strategy {self.strategy!r}: a robust strategy compares single updates, and under"
                " secure aggregation the coordinator sees only their sum; use"
                f" `{STRATEGY.key}` {', '.join(SECURE_STRATEGIES)} or turn secure aggregation off",
            )
        if self.dp:
            raise SECURE_AGGREGATION.refuse(
                True,
                f"false with `{DP_NOISE_MULTIPLIER.key}` {self.dp_noise_multiplier:g}: central DP clips each"
                " site's update at the coordinator, which secure aggregation hides; set it to 0",
            )
        if self.update_norm_bound <= 0:
            raise SECURE_AGGREGATION.refuse(
                True,
                f"false with `{UPDATE_NORM_BOUND.key}` 0: the sites clip their updates to this bound before"
                " masking, and it is the quantization's range; set it above 0",
            )


@dataclass(frozen=True)
class ServerRunSettings:
    num_rounds: int
    model_preset: str
    seed: int
    run_dir: Path
    spacing_mm: float
    patch_size: int
    """The preprocessing the sites train with (patch-size as used: the preset's when the setting is 0); recorded
    in every checkpoint's meta (models.model_source.inference_meta)."""
    strategy: StrategySettings
    min_sites: int
    """The quorum: sites online to start a round, sound training replies to change the global model."""
    wait_for_sites_s: float
    describe_timeout_s: float
    train_timeout_s: float
    evaluate_timeout_s: float
    expected_sites: tuple[str, ...]
    resume: bool
    init_model: Path | None
    tracking_uri: str
    """Where the run is copied to in MLflow (server_app.run_record.tracking); empty: a store in the run folder."""
    max_cases: dict[str, int] = field(default_factory=dict)
    """Site → the most cases it may weigh with (run config `max-cases`; server_app.rounds.site_directory)."""
    patience: int = 0
    """Rounds in a row without a better global model (server_app.run_record.best_model's rule) after which the
    run stops; 0: every round runs."""
    round_messages: str = "one"
    """Messages per site per round (run config `round-messages`): "one" or "two"; see `one_message`."""

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object]) -> "ServerRunSettings":
        """Read and check every setting; a bad one raises a ValueError naming it."""
        run_dir = RUN_DIR.read(run_config)
        if not run_dir.strip():
            raise ValueError(
                f"run config `{RUN_DIR.key}` is empty: set it to the folder the run's results go to"
            )
        preset = MODEL_PRESET.read(run_config)
        get_preset(preset)  # an unknown preset fails here, before the run folder is made
        init_model = INIT_MODEL.read(run_config).strip()
        settings = cls(
            num_rounds=NUM_SERVER_ROUNDS.read(run_config),
            model_preset=preset,
            seed=SEED.read(run_config),
            run_dir=Path(run_dir).expanduser().resolve(),
            spacing_mm=SPACING_MM.read(run_config),
            patch_size=patch_size(preset, PATCH_SIZE.read(run_config)),
            strategy=StrategySettings.from_run_config(run_config),
            min_sites=MIN_SITES.read(run_config),
            wait_for_sites_s=WAIT_FOR_SITES_S.read(run_config),
            describe_timeout_s=DESCRIBE_TIMEOUT_S.read(run_config),
            train_timeout_s=TRAIN_TIMEOUT_S.read(run_config),
            evaluate_timeout_s=EVALUATE_TIMEOUT_S.read(run_config),
            expected_sites=tuple(s.strip() for s in EXPECTED_SITES.read(run_config).split(",") if s.strip()),
            resume=RESUME.read(run_config),
            init_model=Path(init_model).expanduser() if init_model else None,
            tracking_uri=TRACKING_URI.read(run_config).strip(),
            max_cases=parse_max_cases(MAX_CASES.read(run_config)),
            patience=PATIENCE.read(run_config),
            round_messages=ROUND_MESSAGES.read(run_config),
        )
        settings.check()
        return settings

    @property
    def one_message(self) -> bool:
        """Whether a round sends each site one message, its validation of the previous round riding on the train
        instruction. Under secure aggregation a round keeps its own evaluate message: the masked stage's reply
        carries only what the SecAgg+ exchange defines, and the four-exchange train phase stays as it is."""
        return self.round_messages == "one" and not self.strategy.secure_aggregation

    def check(self) -> None:
        """The checks across settings; ValueError names the setting and the fix."""
        sites = self.expected_sites
        if len(set(sites)) != len(sites):
            raise ValueError(f"run config `{EXPECTED_SITES.key}` names a site twice: {', '.join(sites)}")
        if sites and self.min_sites > len(sites):
            raise ValueError(
                f"run config `{MIN_SITES.key}` is {self.min_sites} but the federation has only {len(sites)} "
                f"sites ({', '.join(sites)}); lower {MIN_SITES.key}"
            )
        if self.resume and self.init_model is not None:
            raise ValueError(
                f"run config sets both `{RESUME.key}` and `{INIT_MODEL.key}`: a run either continues or starts"
                f" from a saved model; drop one of them"
            )


def parse_max_cases(text: str) -> dict[str, int]:
    """`site=N,site=N` → {site: N}; RunConfigError names the setting and the bad entry."""
    bounds: dict[str, int] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        site, _, count = entry.partition("=")
        if not site.strip() or not count.strip().isdigit() or int(count) < 1:
            raise MAX_CASES.refuse(text, f"`site=N` entries with N a whole number ≥ 1 (not {entry!r})")
        bounds[site.strip()] = int(count)
    return bounds
