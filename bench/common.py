"""Shared helpers for the benchmarks: options, machine info, run config, tables, RATIO lines, RESULTS.md."""

import argparse
import contextlib
import os
import platform
import shlex
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Self

import torch
from flwr.supercore.task_identity import TaskIdentity
from torch.utils.data import Dataset as TorchDataset

from data_prep.synth.profiles import PRESETS
from deploy.processes import StartedProcess, follow_log, process_tree
from deploy.simulation.launch import ROUND_LINE
from server_app.rounds.loop import ROUNDS_FINISHED

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"


def parser(
    doc: str, *, preset: str | None = None, quick_preset: str | None = None, device: bool = False
) -> argparse.ArgumentParser:
    """The options the benchmarks share, described by the first paragraph of the script's `doc`; `preset` (and
    `quick_preset` for --quick): the default synthetic federation preset, for a script that has data."""
    options = argparse.ArgumentParser(description=" ".join(doc.split("\n\n")[0].split()))
    options.add_argument("--quick", action="store_true", help="a short run (at most ~5 minutes on 2 cores)")
    if preset:
        quick = quick_preset or preset
        options.add_argument(
            "--preset",
            default=None,
            choices=PRESETS,
            help=f"synthetic federation preset "
            f"(default {preset}{f'; {quick} with --quick' if quick != preset else ''})",
        )
        options.set_defaults(full_preset=preset, quick_preset=quick)
    options.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for data, work folders and Flower runs (default runs/bench/<name>-<time>)",
    )
    options.add_argument(
        "--results", type=Path, default=RESULTS, help="markdown file the results are appended to"
    )
    if device:
        options.add_argument(
            "--device", default="cpu", choices=("cpu", "cuda"), help="where tensors are computed"
        )
    return options


def parse(options: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line's options, with the data preset resolved for --quick."""
    args = options.parse_args()
    if "full_preset" in args:
        args.preset = args.preset or (args.quick_preset if args.quick else args.full_preset)
    return args


def out_folder(out: Path | None, name: str) -> Path:
    """The run's folder: `out`, or a new time-stamped one under runs/bench/."""
    folder = out or REPO / "runs" / "bench" / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def torch_device(name: str) -> torch.device:
    """The requested device; a missing GPU is a one-line error, not a silent fallback to the CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch sees no CUDA device on this machine")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer around it measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(**overrides: object) -> dict[str, object]:
    """The app's `[tool.flwr.app.config]` from pyproject.toml with kebab-case overrides (`local_epochs=1`)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["flwr"]["app"][
        "config"
    ]
    return {**config, **{key.replace("_", "-"): value for key, value in overrides.items()}}


def machine() -> str:
    """Cores, memory, GPU and the versions that matter, on one line."""
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        ram_gib = int(meminfo.readline().split()[1]) / 2**20
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        cpu = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
            platform.machine(),
        )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    versions = ", ".join(f"{name} {version(name)}" for name in ("torch", "flwr", "monai"))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{len(os.sched_getaffinity(0))} cores ({cpu}), {ram_gib:.1f} GiB RAM, GPU: {gpu}; Python "
        f"{platform.python_version()}, {versions}; load average at the end (1/5/15 min): {load}"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; floats get 4 significant digits."""

    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(
    name: str,
    results: Path,
    tables: Sequence[str],
    ratios: dict[str, float],
    notes: Sequence[str],
    started: float,
) -> None:
    """Print the tables and one `RATIO <name> <value>` line per headline figure; append all to `results`."""
    ratio_lines = [f"RATIO {key} {value:.4f}" for key, value in ratios.items()]
    print("\n\n".join(tables))
    print("\n".join(notes))
    print("\n".join(ratio_lines), flush=True)
    command = shlex.join(
        [os.path.relpath(sys.executable, REPO), os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]
    )
    section = [
        f"## {name} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- wall time: {time.monotonic() - started:.0f} s",
        "",
        *"\n\n".join(tables).split("\n"),
        "",
        *(f"- {note}" for note in notes),
        "",
        "```",
        *ratio_lines,
        "```",
        "",
    ]
    results.parent.mkdir(parents=True, exist_ok=True)
    new = not results.exists() or results.stat().st_size == 0
    with open(results, "a", encoding="utf-8") as handle:
        if new:
            handle.write(
                "# Benchmark results\n\nAppended by the scripts in bench/ (see bench/README.md).\n\n"
            )
        elif not results.read_text(encoding="utf-8").endswith(
            "\n\n"
        ):  # notes added by hand end a line, not a block
            handle.write("\n")
        handle.write("\n".join(section) + "\n")


@contextlib.contextmanager
def coordinator_identity() -> Iterator[None]:
    """Build Flower Messages in this process as a ServerApp does (Flower's runtime sets this task identity)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    try:
        yield
    finally:
        TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def _memory_bytes(pid: int) -> int:
    """Proportional set size (shared pages split among their users), else resident size; 0 if gone."""
    for path, field in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path, encoding="ascii") as handle:
                for line in handle:
                    if line.startswith(field):
                        return int(line.split()[1]) * 1024
        except OSError:
            continue
    return 0


def flower_processes(root: Path) -> set[int]:
    """Processes whose FLWR_HOME lies under `root`: the Flower processes of our runs, Ray's re-parented ones too."""
    prefix = f"FLWR_HOME={root.resolve()}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if any(item.startswith(prefix) for item in environ.split(b"\0")):
                found.add(int(entry))
    return found


@dataclass(frozen=True)
class ProcessCpu:
    """One process's CPU time (user + system, seconds) at its last sample, with what identifies it."""

    command: str
    parent: int
    seconds: float


def _process_cpu(pid: int) -> ProcessCpu | None:
    """The process's command line, parent pid and CPU seconds so far; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    ticks = os.sysconf("SC_CLK_TCK")
    return ProcessCpu(command.strip(), int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)


class RunMemory:
    """Samples, in a thread, the memory of every process this one started and of every Flower process whose
    FLWR_HOME lies under `root`; keeps the peaks, and each process's CPU time at its last sample (`cpu`, pid →
    ProcessCpu; a process's last half second before it exits is not seen)."""

    def __init__(self, root: Path, interval_s: float = 0.5) -> None:
        self.root = root
        self.interval_s = interval_s
        self.peak_total = 0
        self.peak_process = 0
        self.peak_processes = 0
        self.cpu: dict[int, ProcessCpu] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.wait(self.interval_s):
            pids = ({pid for pid, _ in process_tree(me)} | flower_processes(self.root)) - {me}
            sizes = [_memory_bytes(pid) for pid in pids]
            for pid in pids:
                if (cpu := _process_cpu(pid)) is not None:
                    known = self.cpu.get(pid)
                    if known is not None and not cpu.command:  # exited, not reaped yet: its command is gone
                        cpu = ProcessCpu(known.command, known.parent, cpu.seconds)
                    self.cpu[pid] = cpu
            self.peak_total = max(self.peak_total, sum(sizes))
            self.peak_process = max([self.peak_process, *sizes])
            self.peak_processes = max(self.peak_processes, len(sizes))


def follow(
    process: StartedProcess, on_line: Callable[[str], None], timeout_s: float, poll_s: float = 0.1
) -> int:
    """Hand each new line of the process's log to `on_line` until it exits; returns its exit code."""
    follow_log(process, on_line, poll_s=poll_s, timeout_s=timeout_s)
    return process.popen.wait()


class RoundClock:
    """Times a run's training rounds from its streamed ServerApp log: "[ROUND n/N]" lines (n ≥ 1; round 0 only
    validates the initial model), then the loop's closing line."""

    END = ROUNDS_FINISHED

    def __init__(self) -> None:
        self.starts: dict[int, float] = {}
        self.opened: float | None = None
        """When the first round line (round 0's, where the loop logs one) was read."""
        self.end: float | None = None

    def on_line(self, line: str) -> None:
        now = time.monotonic()
        if match := ROUND_LINE.search(line):
            self.opened = self.opened if self.opened is not None else now
            if int(match.group(1)) > 0:
                self.starts[int(match.group(1))] = now
        elif self.END in line:
            self.end = now

    def whole(self) -> float:
        """Seconds from the first round line to the closing line: every message of the run, whatever the pattern
        (round 0's validation is its own message with two messages per round, part of round 1's with one; the last
        round's validation is part of the last round with two, one more message after it with one)."""
        if self.opened is None or self.end is None:
            raise RuntimeError("the run's log shows no complete round (see its logs folder)")
        return self.end - self.opened

    def durations(self) -> dict[int, float]:
        """Round → seconds from its start line to the next round's (the last: to the closing line)."""
        if not self.starts or self.end is None:
            raise RuntimeError("the run's log shows no complete round (see its logs folder)")
        marks = sorted(self.starts.items())
        ends = [t for _, t in marks[1:]] + [self.end]
        return {rnd: end - start for (rnd, start), end in zip(marks, ends, strict=True)}


class ImageLabelPatches(TorchDataset):
    """A site training dataset's patches reduced to image and label, so that patches of cases with differently
    shaped metadata (file lists of NIfTI cases and of DICOM series of any length) can share a batch."""

    def __init__(self, dataset: TorchDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> list[dict[str, torch.Tensor]]:
        return [{"image": patch["image"], "label": patch["label"]} for patch in self.dataset[index]]
