"""Local differential privacy: a ClientApp mod that clips the site's training update and adds Gaussian noise to it
before it leaves the site (and, under secure aggregation, before it is masked), so that the site need not trust
the coordinator's noise.

The setting is the site's own: a deployed site's node config (models.shared.node_config.NodeConfig
LOCAL_DP_NOISE_MULTIPLIER, LOCAL_DP_CLIPPING_NORM), a simulated site's `sim-local-dp-…` run settings; the
coordinator's run config cannot turn it down. With noise multiplier z > 0 and clipping norm C, each round the
site clips its update (its weights minus the global weights it received; float arrays) to C and adds N(0, (z·C)²)
to every float weight, with Flower's DP helpers (the clipping and noise of its LocalDpMod, which reads a legacy
FitRes and so cannot wrap our Message-API reply itself). Each noisy release is a Gaussian mechanism of
sensitivity C on the site's contribution; the site composes its releases of the run with Flower's RDP accountant
and writes ε at δ = LOCAL_DP_DELTA to its log after each round. The noise is per weight: on a model of d weights
its norm is about z·C·√d, far above C, so local DP costs accuracy quickly (README, Privacy).
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, compute_clip_model_update

from models.shared.node_config import (
    DEFAULT_LOCAL_DP_CLIPPING_NORM,
    DEFAULT_LOCAL_DP_NOISE_MULTIPLIER,
    LOCAL_DP_DELTA,
    NodeConfig,
)
from models.shared.wire import SERVER_ROUND, Record
from models.transport import decode, encode
from site_app.disclosure.policy import deployed
from site_app.settings.identity import resolve_site
from site_app.settings.run_settings import SiteRunSettings
from site_app.site_log import site_logger

STATE = "local-dp"
"""The node context's record of this run's noisy releases (its count composes ε)."""


@dataclass(frozen=True)
class LocalDp:
    noise_multiplier: float
    clipping_norm: float

    @classmethod
    def for_site(cls, node_config: Mapping[str, object], settings: SiteRunSettings) -> "LocalDp":
        """A deployed site's own setting (node config), a simulated site's `sim-local-dp-…`; ValueError names a
        wrong value."""
        if not deployed(node_config):
            return cls(settings.sim_local_dp_noise_multiplier, settings.sim_local_dp_clipping_norm)
        values = {
            NodeConfig.LOCAL_DP_NOISE_MULTIPLIER: node_config.get(
                NodeConfig.LOCAL_DP_NOISE_MULTIPLIER, DEFAULT_LOCAL_DP_NOISE_MULTIPLIER
            ),
            NodeConfig.LOCAL_DP_CLIPPING_NORM: node_config.get(
                NodeConfig.LOCAL_DP_CLIPPING_NORM, DEFAULT_LOCAL_DP_CLIPPING_NORM
            ),
        }
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"node config `{key}` must be a number of at least 0, got {value!r}")
        return cls(
            float(values[NodeConfig.LOCAL_DP_NOISE_MULTIPLIER]),
            float(values[NodeConfig.LOCAL_DP_CLIPPING_NORM]),
        )

    @property
    def on(self) -> bool:
        return self.noise_multiplier > 0 and self.clipping_norm > 0

    @property
    def sigma(self) -> float:
        return self.noise_multiplier * self.clipping_norm

    def epsilon(self, releases: int) -> float:
        """ε at LOCAL_DP_DELTA after `releases` noisy updates (Flower's RDP accountant; no sampling)."""
        from flwr.serverapp import RdpAccountant  # needs flwr[dp] (dp-accounting)

        accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=LOCAL_DP_DELTA,
                population_size=1,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
        )
        for _ in range(releases):
            accountant.compose(
                GaussianPrivacyEvent(noise_multiplier=self.noise_multiplier, sample_size=1, population_size=1)
            )
        return float(accountant.get_privacy_spent().epsilon)

    def noised(self, sent: ArrayRecord, trained: ArrayRecord, transport_dtype: str) -> ArrayRecord:
        """The trained weights with their update clipped to C and N(0, σ²) added to every float weight."""
        sent, trained = decode(sent), decode(trained)
        floats = [name for name in trained if np.dtype(trained[name].dtype).kind == "f"]
        values = [np.asarray(trained[name].numpy(), dtype=np.float64) for name in floats]
        compute_clip_model_update(
            values, [np.asarray(sent[n].numpy(), dtype=np.float64) for n in floats], self.clipping_norm
        )
        add_gaussian_noise_inplace(values, self.sigma)
        noisy = {name: Array(value.astype(np.float32)) for name, value in zip(floats, values, strict=True)}
        return encode(
            ArrayRecord({name: noisy.get(name, trained[name]) for name in trained}), transport_dtype
        )


def add_local_noise(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A train reply's weights with the site's local-DP noise (when its setting is on); anything else as it is."""
    reply = call_next(msg, context)
    if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
        return reply
    if Record.ARRAYS not in reply.content.array_records:
        return reply  # declined or refused: nothing leaves
    settings = SiteRunSettings.from_run_config(context.run_config)
    dp = LocalDp.for_site(context.node_config, settings)
    if not dp.on:
        return reply
    reply.content[Record.ARRAYS] = dp.noised(
        msg.content[Record.ARRAYS], reply.content[Record.ARRAYS], settings.transport_dtype
    )
    state = context.state.config_records.get(STATE, ConfigRecord({"releases": 0}))
    releases = int(state["releases"]) + 1
    context.state.config_records[STATE] = ConfigRecord({"releases": releases})
    site_logger(resolve_site(context, settings).work).info(
        "round %s: local DP: update clipped to %g, Gaussian noise σ = %g added; ε = %.3f at δ = %g after %d"
        " noisy update(s) in this run",
        msg.content[Record.CONFIG].get(SERVER_ROUND),
        dp.clipping_norm,
        dp.sigma,
        dp.epsilon(releases),
        LOCAL_DP_DELTA,
        releases,
    )
    return reply
