"""How the sites' updates become the next global model: a base strategy, and wrappers composed around it.

The base strategy is one of Flower's, chosen by the run config's `strategy` from a table of factories (base:
fedavg, fedprox, and fedadam and fedyogi with their server optimizer's wrapper, server_optimizer; the robust
fedmedian, fedtrimmedavg, krum and multikrum: robust). What the
coordinator adds is a stack of wrappers, each a Strategy holding the strategy inside it as Flower's DP
wrappers do (wrapper), applied in a fixed order by the registry (registry.WRAPPERS, innermost first):

    pooled-evaluation  the evaluation pooled over the sites that reported numbers (pooled_evaluation)
    fast-mean          Flower's averaging step answered by the fast weighted mean (mean_wrapper, fast_mean),
                       at the one call FedAvg.aggregate_train averages through in flwr 1.42 (mean_seam)
    site-weight        no site more than `max-site-weight` of the mean, the others renormalised (site_weight)
    central-dp         Flower's server-side fixed clipping, ε accounted, when the run asks for it (central_dp)
    update-norm        every update's norm recorded per site and round, clipped to `update-norm-bound`
                       (update_norm)
    transport          weights leave in the run's transport dtype (transport_dtype)

Every layer passes state_dict() / load_state_dict() through, adding what it keeps itself (the base's name, the
server optimizer's moments, the privacy accountant's ledger): what a resumed run needs to continue the same
optimization, as tensors and plain values, loadable with `torch.load(..., weights_only=True)`.
"""
