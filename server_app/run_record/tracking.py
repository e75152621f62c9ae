"""The run folder's copy in MLflow, brought up to date after every round and at the end; never what fails a run.

`track_run` is idempotent: RUN_DIR/tracking.json keeps the MLflow run's id and what was logged (the last round, each
artifact's SHA-256), so a sync after each round, at the end, or after a resume logs each value once, and a
resumed run continues its MLflow run. A sync that fails (server down, wrong URI) leaves one warning line in the
ServerApp's log and the next sync catches up: values come from the run folder's files
(server_app.run_record.tracking_values), never from memory, and every metric carries its round as step and the
round's end as timestamp, so a value sent twice (a sync cut off before tracking.json was written) is stored once.

Where: the run setting `tracking-uri` (`--tracking-uri`), any MLflow tracking server, `none` for no copy, or by
default an MLflow store inside the run folder: `sqlite:///RUN_DIR/mlflow.db`, artifacts in RUN_DIR/mlflow-artifacts
(no server to run; MLflow 3 refuses its file store './mlruns' unless MLFLOW_ALLOW_FILE_STORE is set, and
recommends sqlite). mlflow is imported only here, when a sync runs: `oncofed --help` never pays for it. Unless the
environment says otherwise, an HTTP request is retried twice and waits at most 20 s (HTTP_LIMITS), so a tracking
server that is down costs a round seconds, not MLflow's default minutes of retries.
"""

import hashlib
import os
import re
from logging import INFO, WARNING
from pathlib import Path
from urllib.parse import urlsplit

from flwr.common.logger import log

from models.shared.atomic import atomic_write_json
from server_app.run_record.run_folder import COMPLETED, FAILED, RUNNING, STOPPED, read_json
from server_app.run_record.tracking_values import (
    final_artifacts,
    round_values,
    run_params,
    run_status,
    run_tags,
)

STATE_FILE = "tracking.json"
EMBEDDED_STORE = "mlflow.db"
EMBEDDED_ARTIFACTS = "mlflow-artifacts"
OFF = "none"
"""The `tracking-uri` that turns tracking off."""
EXPERIMENT = "oncofed"
"""The MLflow experiment every run goes to; the MLflow run is named after the run folder."""
MLFLOW_STATUS = {RUNNING: "RUNNING", COMPLETED: "FINISHED", STOPPED: "KILLED", FAILED: "FAILED"}
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
_BATCH_METRICS, _BATCH_PARAMS = 1000, 100
"""MLflow's limits on one log_batch call."""


def track_run(run_dir: Path, tracking_uri: str = "") -> bool:
    """Bring the MLflow run of `run_dir` up to date with its files; False, after one warning line, if it failed."""
    if tracking_uri == OFF:
        return True
    try:
        _Sync(run_dir, tracking_uri).run()
    except Exception as error:  # noqa: BLE001 - tracking never fails the federation
        log(
            WARNING,
            "Tracking: MLflow at %s was not brought up to date (%s); the run goes on, the next sync catches up",
            shown_uri(store_uri(run_dir, tracking_uri)),
            _one_line(error),
        )
        return False
    return True


def store_uri(run_dir: Path, tracking_uri: str) -> str:
    """The tracking URI to use: the setting's, or the run folder's own sqlite store when it is empty."""
    return tracking_uri or f"sqlite:///{(run_dir / EMBEDDED_STORE).resolve()}"


def shown_uri(uri: str) -> str:
    """The URI for a log line, without a user name or password."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return parts._replace(
        netloc=f"***@{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    ).geturl()


class _Sync:
    """One sync of a run folder to its MLflow run, with the state it keeps in tracking.json."""

    def __init__(self, run_dir: Path, tracking_uri: str) -> None:
        self.run_dir, self.setting = run_dir, tracking_uri
        self.uri = store_uri(run_dir, tracking_uri)
        state = read_json(run_dir / STATE_FILE)
        self.state = state if state.get("tracking-uri") == tracking_uri else {"tracking-uri": tracking_uri}

    def run(self) -> None:
        for name, value in HTTP_LIMITS.items():
            os.environ.setdefault(name, value)
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        run = self._mlflow_run(client)
        run_id = run.info.run_id
        self._log_params_and_tags(client, run)
        status, last_round = run_status(self.run_dir)
        self._log_rounds(client, run_id, last_round)
        if status != RUNNING:
            self._log_artifacts(client, run_id)
        wanted = MLFLOW_STATUS.get(status, "RUNNING")
        if run.info.status != wanted:
            if wanted == "RUNNING":  # a resumed run continues its MLflow run
                client.update_run(run_id, status=wanted)
            else:
                client.set_terminated(run_id, status=wanted)

    def _mlflow_run(self, client):
        """The run folder's MLflow run: the one tracking.json names, else a new one (named after the folder)."""
        from mlflow.exceptions import MlflowException

        if run_id := self.state.get("run_id"):
            try:
                run = client.get_run(run_id)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            else:
                if run.info.lifecycle_stage == "active":
                    return run
            log(
                WARNING,
                "Tracking: MLflow run %s is gone from %s; logging the run anew",
                run_id,
                shown_uri(self.uri),
            )
        run = client.create_run(self._experiment_id(client), run_name=self.run_dir.name)
        self.state = {"tracking-uri": self.setting, "run_id": run.info.run_id, "logged_through_round": None}
        self._save()
        how = f"; open it with `mlflow ui --backend-store-uri {self.uri}`" if not self.setting else ""
        log(INFO, "Tracking: MLflow run %s at %s%s", run.info.run_id, shown_uri(self.uri), how)
        return run

    def _experiment_id(self, client) -> str:
        from mlflow.exceptions import MlflowException

        if (experiment := client.get_experiment_by_name(EXPERIMENT)) is not None:
            return experiment.experiment_id
        location = None if self.setting else (self.run_dir / EMBEDDED_ARTIFACTS).resolve().as_uri()
        try:
            return client.create_experiment(EXPERIMENT, artifact_location=location)
        except MlflowException:  # another run created it meanwhile
            return client.get_experiment_by_name(EXPERIMENT).experiment_id

    def _log_params_and_tags(self, client, run) -> None:
        """Parameters the MLflow run lacks (a parameter never changes), tags that differ."""
        from mlflow.entities import Param, RunTag

        params = [Param(k, v) for k, v in run_params(self.run_dir).items() if k not in run.data.params]
        tags = [RunTag(k, v) for k, v in run_tags(self.run_dir).items() if run.data.tags.get(k) != v]
        for start in range(0, max(len(params), len(tags)), _BATCH_PARAMS):
            client.log_batch(
                run.info.run_id,
                params=params[start : start + _BATCH_PARAMS],
                tags=tags[start : start + _BATCH_PARAMS],
            )

    def _log_rounds(self, client, run_id: str, last_round: int | None) -> None:
        """The metrics of the completed rounds not logged yet."""
        from mlflow.entities import Metric

        done = self.state.get("logged_through_round")
        if last_round is None or (done is not None and last_round <= done):
            return
        metrics = [
            Metric(key, value, values.timestamp_ms, values.round)
            for values in round_values(self.run_dir, done, last_round)
            for key, value in sorted(values.metrics.items())
        ]
        for start in range(0, len(metrics), _BATCH_METRICS):
            client.log_batch(run_id, metrics=metrics[start : start + _BATCH_METRICS])
        self.state["logged_through_round"] = last_round
        self._save()

    def _log_artifacts(self, client, run_id: str) -> None:
        """The report, model card, summary and best model, each again only when its content changed."""
        logged = self.state.setdefault("artifacts", {})
        for path in final_artifacts(self.run_dir):
            name = path.relative_to(self.run_dir).as_posix()
            digest = _sha256(path)
            if logged.get(name) == digest:
                continue
            folder = str(Path(name).parent)
            client.log_artifact(run_id, str(path), artifact_path=None if folder == "." else folder)
            logged[name] = digest
            self._save()

    def _save(self) -> None:
        atomic_write_json(self.run_dir / STATE_FILE, self.state)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _one_line(error: Exception) -> str:
    """The error's type and first line, short: MLflow's messages run to many lines of retries."""
    text = re.sub(r"\s+", " ", str(error).strip().split("\n", 1)[0])
    return f"{type(error).__name__}: {text[:300]}"
