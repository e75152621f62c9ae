"""Aggregation: the coordinator's weighted mean of N site updates, against a plain copy of the same bytes.

For the default model and a 19 M-parameter UNet, N ∈ {4, 16, 64} train replies (ArrayRecords, as they arrive
from the sites) are checked and averaged as the coordinator does (server_app.rounds.reply_checks, then the run's
strategy for the default settings, fedavg with server_app.strategies.fast_mean's weighted mean) and by Flower's
FedAvg alone. The baseline is numpy copying the same array payloads in this process.
With --device cuda, a torch weighted mean of the same updates held on the GPU is set against a GPU copy.
"""

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from common import (
    coordinator_identity,
    markdown_table,
    parse,
    parser,
    report,
    run_config,
    synchronize,
    torch_device,
)
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from monai.networks.nets import UNet

from models.presets import build_model
from models.shared.labels import NUM_CLASSES
from models.shared.run_config import defaults
from server_app.coordinator_settings import StrategySettings
from server_app.rounds.loop import ALL_SELECTED
from server_app.rounds.reply_checks import model_spec, train_reply_problem
from server_app.strategies.registry import build_strategy

LARGE_CHANNELS = (32, 64, 128, 256, 512)
"""A 3D UNet of the presets' shape with 19.2 M parameters: the '20 M-parameter model'."""
LARGE_NAME = "unet-19M"


def large_model() -> torch.nn.Module:
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=NUM_CLASSES,
        channels=LARGE_CHANNELS,
        strides=(2,) * (len(LARGE_CHANNELS) - 1),
        num_res_units=2,
        norm="instance",
    )


def site_replies(model: torch.nn.Module, n_sites: int) -> list[Message]:
    """n_sites train replies with distinct weights (the model's, scaled per site) and distinct case counts."""
    replies = []
    for node_id in range(101, 101 + n_sites):
        scale = 1.0 + 1e-3 * (node_id - 100)
        arrays = ArrayRecord(
            {k: v * scale if v.is_floating_point() else v for k, v in model.state_dict().items()}
        )
        metrics = MetricRecord({"train-loss": 0.5, "num-examples": node_id - 95})
        request = Message(RecordDict(), dst_node_id=node_id, message_type="train")
        replies.append(Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=request))
    return replies


def payloads(replies: list[Message]) -> list[bytes]:
    return [array.data for reply in replies for array in reply.content["arrays"].values()]


def median_time(action: Callable[[], object], repeats: int) -> float:
    """Median of `repeats` timed calls, after one untimed call (page faults, first-touch allocation)."""
    action()
    times = []
    for _ in range(repeats):
        clock = time.perf_counter()
        action()
        times.append(time.perf_counter() - clock)
    return statistics.median(times)


def numpy_copy(buffers: list[bytes], target: np.ndarray) -> None:
    for buffer in buffers:
        np.copyto(target[: len(buffer)], np.frombuffer(buffer, dtype=np.uint8))


def device_updates(
    replies: list[Message], device: torch.device
) -> tuple[list[list[torch.Tensor]], list[float]]:
    """The replies' float arrays as tensors on the device, and the sites' weights (outside any timer)."""
    updates = [
        [torch.from_numpy(a.numpy()).to(device) for a in r.content["arrays"].values()] for r in replies
    ]
    counts = [float(r.content["metrics"]["num-examples"]) for r in replies]
    return updates, [c / sum(counts) for c in counts]


def torch_weighted_mean(
    updates: list[list[torch.Tensor]], weights: list[float], device: torch.device
) -> None:
    result = [t * weights[0] for t in updates[0]]
    for update, weight in zip(updates[1:], weights[1:], strict=True):
        for total, tensor in zip(result, update, strict=True):
            total.add_(tensor, alpha=weight)
    synchronize(device)


def torch_copy(updates: list[list[torch.Tensor]], device: torch.device) -> None:
    targets = [torch.empty_like(t) for t in updates[0]]
    for update in updates:
        for target, tensor in zip(targets, update, strict=True):
            target.copy_(tensor)
    synchronize(device)


@dataclass(frozen=True)
class Measurement:
    """Seconds for one configuration; `device_*` only with a GPU."""

    name: str
    params: int
    n_sites: int
    n_bytes: int
    site_fedavg: float
    fedavg: float
    copy: float
    device_mean: float | None = None
    device_copy: float | None = None

    def row(self) -> list[object]:
        row: list[object] = [
            self.name,
            f"{self.params / 1e6:.2f} M",
            self.n_sites,
            self.n_bytes / 1e6,
            self.site_fedavg,
            self.fedavg,
            self.copy,
            self.n_bytes / self.site_fedavg / 1e9,
            self.n_bytes / self.copy / 1e9,
            self.copy / self.site_fedavg,
            self.copy / self.fedavg,
        ]
        if self.device_mean is not None and self.device_copy is not None:
            row += [self.device_mean, self.device_copy, self.device_copy / self.device_mean]
        return row


def measure(
    name: str,
    model: torch.nn.Module,
    replies: list[Message],
    repeats: int,
    device: torch.device,
) -> Measurement:
    """Time the coordinator's aggregation, Flower's, and copies of the same bytes, for these replies."""
    n_sites = len(replies)
    nodes = {"min_train_nodes": n_sites, "min_evaluate_nodes": n_sites, "min_available_nodes": n_sites}
    strategy = build_strategy(StrategySettings.from_run_config(defaults()), n_sites, **ALL_SELECTED).run
    spec = model_spec(ArrayRecord(model.state_dict()))

    def checked_mean() -> None:
        assert not any(train_reply_problem(r.content, spec, None) for r in replies)
        strategy.aggregate_train(1, replies)

    fedavg = FedAvg(**nodes)
    buffers = payloads(replies)
    target = np.empty(max(len(b) for b in buffers), dtype=np.uint8)
    measured = Measurement(
        name=name,
        params=sum(t.numel() for t in model.state_dict().values()),
        n_sites=n_sites,
        n_bytes=sum(r.content["arrays"].count_bytes() for r in replies),
        copy=median_time(lambda: numpy_copy(buffers, target), repeats),
        site_fedavg=median_time(checked_mean, repeats),
        fedavg=median_time(lambda: fedavg.aggregate_train(1, replies), repeats),
    )
    if device.type != "cuda":
        return measured
    updates, weights = device_updates(replies, device)
    return dataclasses.replace(
        measured,
        device_mean=median_time(lambda: torch_weighted_mean(updates, weights, device), repeats),
        device_copy=median_time(lambda: torch_copy(updates, device), repeats),
    )


def main() -> None:
    options = parser(__doc__, device=True)
    options.add_argument(
        "--repeats", type=int, default=None, help="timed repeats, median kept (default 3; 1 quick)"
    )
    args = parse(options)
    started = time.monotonic()
    device = torch_device(args.device)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    repeats = args.repeats or (1 if args.quick else 3)
    site_counts = (4, 16) if args.quick else (4, 16, 64)
    default_preset = str(run_config()["model-preset"])
    models = {default_preset: build_model(default_preset, seed=0), LARGE_NAME: large_model()}

    measured: list[Measurement] = []
    with coordinator_identity():
        for name, model in models.items():
            replies = site_replies(model, max(site_counts))
            measured += [measure(name, model, replies[:n], repeats, device) for n in site_counts]
            del replies

    headers = [
        "model",
        "params",
        "N",
        "MB in",
        "SiteFedAvg s",
        "FedAvg s",
        "numpy copy s",
        "SiteFedAvg GB/s",
        "copy GB/s",
        "SiteFedAvg/copy",
        "FedAvg/copy",
    ]
    if device.type == "cuda":
        headers += ["torch cuda mean s", "cuda copy s", "cuda mean/copy"]
    notes = [
        (
            "Ratios are achieved bytes/s over the bytes/s of numpy copying the same array payloads (1 = as fast as a"
            f" copy); median of {repeats} timed repeat(s) after a warm-up; MB in = the N updates' ArrayRecord bytes."
        ),
        (
            "SiteFedAvg = the coordinator's path: server_app.rounds.reply_checks on every reply (record names, array names,"
            " dtypes, shapes, finiteness), then the run's strategy for the default settings (server_app.strategies.registry):"
            " server_app.strategies.fast_mean's weighted"
            " mean (each array read in place from the message bytes, one fused BLAS saxpy pass per update into a"
            " float32 accumulator, finiteness checked on the result);"
            " FedAvg = flwr.serverapp.strategy.FedAvg.aggregate_train alone (numpy, one thread)."
        ),
        (
            f"Headline ratios: N={max(site_counts)} updates (the largest configuration, where aggregation time matters);"
            " `_default_model`: the same for the app's default model."
        ),
    ]
    largest = {m.name: m for m in measured if m.n_sites == max(site_counts)}
    big, default = largest[LARGE_NAME], largest[default_preset]
    ratios = {
        "aggregation_over_memcpy": big.copy / big.site_fedavg,
        "aggregation_over_memcpy_default_model": default.copy / default.site_fedavg,
        "fedavg_over_memcpy": big.copy / big.fedavg,
    }
    if big.device_mean and big.device_copy:
        ratios["torch_cuda_aggregation_over_memcpy"] = big.device_copy / big.device_mean
    report(
        "aggregation",
        args.results,
        [markdown_table(headers, [m.row() for m in measured])],
        ratios,
        notes,
        started,
    )


if __name__ == "__main__":
    main()
