"""Reading a run back from MLflow as a coordinator would (mlflow.search_runs, the client), and a real `mlflow
server` on a free loopback port (sqlite backend, artifacts served), started and stopped by its process id.

`released_only` checks what tracking promises about privacy: every per-site value in MLflow is one a site released
into metrics.jsonl, in the same round, and nothing a site withheld is there.
"""

import contextlib
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from deploy.processes import StartedProcess, free_port, start_process
from server_app.run_record.run_folder import read_metrics
from server_app.run_record.tracking import EXPERIMENT, store_uri

MLFLOW = str(Path(sys.executable).parent / "mlflow")


@dataclass(frozen=True)
class TrackedRun:
    """One MLflow run as read back: its info, parameters, every metric's history and its artifact paths."""

    run_id: str
    status: str
    params: dict[str, str]
    histories: dict[str, list[tuple[int, float]]]
    """metric name → [(step, value)] in step order, every logged value (a value logged twice appears twice)."""
    artifacts: set[str]

    def steps(self, key: str) -> list[int]:
        return [step for step, _ in self.histories.get(key, [])]


@contextlib.contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """mlflow's fluent API (mlflow.search_runs) pointed at `uri` for a while."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def tracked_runs(uri: str) -> list[TrackedRun]:
    """Every run of the `oncofed` experiment at `uri`, read back in full."""
    with tracking_uri(uri):
        found = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list")
    client = MlflowClient(tracking_uri=uri)
    return [
        TrackedRun(
            run_id=run.info.run_id,
            status=run.info.status,
            params=dict(run.data.params),
            histories={
                key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
                for key in run.data.metrics
            },
            artifacts=_artifact_paths(client, run.info.run_id),
        )
        for run in found
    ]


def the_run(run_dir: Path, setting: str = "") -> TrackedRun:
    """The one MLflow run of a run folder (its own store by default), asserting there is exactly one."""
    runs = tracked_runs(store_uri(run_dir, setting))
    assert len(runs) == 1, [r.run_id for r in runs]
    return runs[0]


def _artifact_paths(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    paths = set()
    for item in client.list_artifacts(run_id, folder):
        paths |= _artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return paths


def released_only(run: TrackedRun, run_dir: Path) -> None:
    """For a run that ended: every site's validation values in MLflow are exactly its metrics.jsonl values, round
    by round, each once (a site with no numbers in a round has none in MLflow), and no statistic a site withheld in
    a round is there under any name of that site."""
    records = read_metrics(run_dir)
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for key, value in record["metrics"].items():
            expected.setdefault(f"site/{record['site']}/{key}", []).append((record["round"], float(value)))
    logged = {
        key: history
        for key, history in run.histories.items()
        if key.startswith("site/") and key.split("/")[2] not in ("train", "bytes")
    }
    assert logged == {key: sorted(history) for key, history in expected.items()}
    for record in records:
        for item in record.get(
            "withheld", []
        ):  # e.g. "median (n < 10)": no dice-wt-median, hd95-et-median, …
            statistic = item.split(" ")[0]
            site_keys = [k for k in run.histories if k.startswith(f"site/{record['site']}/")]
            named = [
                k for k in site_keys if k.rsplit("/", 1)[-1] in (statistic,) or k.endswith(f"-{statistic}")
            ]
            assert not [k for k in named if record["round"] in run.steps(k)], (record["site"], item)
    for key, history in run.histories.items():
        steps = [step for step, _ in history]
        assert len(steps) == len(set(steps)), f"{key} logged more than once in a round: {history}"


@dataclass
class MlflowServer:
    """`mlflow server` with a sqlite backend in `folder`, on 127.0.0.1 and a port free when this was made."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: StartedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 300) -> None:
        """Start it and wait until /health answers (a loaded 2-core machine takes tens of seconds)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            MLFLOW,
            "server",
            "--backend-store-uri",
            f"sqlite:///{(self.folder / 'mlflow.db').resolve()}",
            "--artifacts-destination",
            str((self.folder / "artifacts").resolve()),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        self.process = start_process("mlflow server", command, dict(os.environ), self.folder / "server.log")
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.popen.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5):
                    return
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, (self.folder / "server.log").read_text()[-3000:]
                time.sleep(1)

    def stop(self) -> None:
        """Stop the server and its workers, by process id."""
        if self.process is not None:
            self.process.stop()
            self.process = None
