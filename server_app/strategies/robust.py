"""The Byzantine-robust base strategies of Flower's library: a median, a trimmed mean, Krum and Multi-Krum.

Each is a factory of server_app.strategies.base's table. FedMedian and FedTrimmedAvg (`trim-beta` cut at each
end of every coordinate) take no weights: a site's claimed case count does not move them. Krum keeps the one
update closest to its n − f − 2 nearest others and Multi-Krum the n − f closest (f = `num-malicious-nodes`),
averaged by case count; both are defined for n ≥ 2f + 3 sites (Blanchard et al., 2017), so a federation too
small for the f asked is refused before the run starts (`TooFewSites`). None keeps state between rounds: a
resumed run continues with the strategy named in its checkpoint (base.Named).
"""

from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg, Krum, MultiKrum, Strategy

from models.shared.run_config import NUM_MALICIOUS_NODES
from server_app.coordinator_settings import StrategySettings


class TooFewSites(ValueError):
    """Krum's guarantee needs n ≥ 2f + 3 sites; the message names the setting and what would fit."""


def krum_sites_needed(num_malicious: int) -> int:
    """The fewest sites Krum tolerates `num_malicious` malicious ones among: 2f + 3."""
    return 2 * num_malicious + 3


def _check_size(settings: StrategySettings, n_sites: int) -> None:
    needed = krum_sites_needed(settings.num_malicious_nodes)
    if n_sites < needed:
        fits = max(0, (n_sites - 3) // 2)
        raise TooFewSites(
            f"{settings.strategy} with `{NUM_MALICIOUS_NODES.key}` {settings.num_malicious_nodes} needs at least"
            f" {needed} sites (2f + 3); this federation has {n_sites}: set `{NUM_MALICIOUS_NODES.key}` to"
            f" {fits} or less, or use fedmedian or fedtrimmedavg"
        )


def fedmedian(settings: StrategySettings, n_sites: int, **fedavg_args: object) -> Strategy:
    """The coordinate-wise median of the updates."""
    return FedMedian(**fedavg_args)


def fedtrimmedavg(settings: StrategySettings, n_sites: int, **fedavg_args: object) -> Strategy:
    """The coordinate-wise mean without the `trim-beta` smallest and largest values."""
    return FedTrimmedAvg(**fedavg_args, beta=settings.trim_beta)


def krum(settings: StrategySettings, n_sites: int, **fedavg_args: object) -> Strategy:
    """The one update with the smallest summed distance to its n − f − 2 nearest others."""
    _check_size(settings, n_sites)
    return Krum(**fedavg_args, num_malicious_nodes=settings.num_malicious_nodes)


def multikrum(settings: StrategySettings, n_sites: int, **fedavg_args: object) -> Strategy:
    """The mean of the n − f updates Krum scores best."""
    _check_size(settings, n_sites)
    return MultiKrum(
        **fedavg_args,
        num_malicious_nodes=settings.num_malicious_nodes,
        num_nodes_to_select=n_sites - settings.num_malicious_nodes,
    )
