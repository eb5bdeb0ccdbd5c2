"""MLflow tracking for every job, when `DCL_MLFLOW_TRACKING_URI` is set.

A job is one MLflow run named by the job id, in the experiment `dcl/{owner}`: its params (the
job's spec, flattened: `config.batch_size`...), every metrics row the engine reports (as the
series it is), its final scores (the job's numeric result, `final.`-prefixed) and its files
(the encoder, encoder.json, tensorboard/ ...; never the resumable checkpoint).

The tracking server is never on the job's path: the hooks only append to a buffer that one
background thread sends, retrying with backoff while the server is down or slow. The job
never waits for it, except at the end for at most `DCL_MLFLOW_FLUSH_SECONDS` (after the job's
outcome is recorded), and only while the server answers: one that failed `FAILING_AFTER` tries
in a row (this job's, or across this worker's jobs: a count its job processes share) is not
waited for until it answers again; what was not sent is dropped, said in the log and in the
job's `result.warnings`. A job that runs again (a crash, a lost lease) logs into the same run.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BATCH_METRICS = 1000  # MLflow's log_batch limits: 1000 metrics, 100 params a call
BATCH_PARAMS = 100
MAX_PARAM_CHARS = 6000
MAX_BUFFERED_ROWS = 100_000  # past it the oldest rows are dropped (a server down for days)
NOT_LOGGED = ("checkpoint.pt",)  # resumable state: large, and useless outside this service
JOB_TAG = "dcl.job_id"
FAILING_AFTER = 3
"""Failed tries in a row after which the server is skipped (not waited for) until it answers."""

_failures_in_a_row = None
"""Shared by a worker's job processes (made in its main process before the pool forks)."""


def arm() -> None:
    global _failures_in_a_row
    _failures_in_a_row = multiprocessing.get_context("fork").RawValue(ctypes.c_int, 0)


def _shared_failures(change: int | None = None) -> int:
    """The worker's count of failed tries in a row: +1 (`change=1`), reset (`change=0`), or read."""
    if _failures_in_a_row is None:
        return 0
    if change is not None:
        _failures_in_a_row.value = _failures_in_a_row.value + 1 if change else 0
    return _failures_in_a_row.value


def experiment_name(owner: str) -> str:
    return f"dcl/{owner}"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [1, 2]} -> {"a.b": 1, "c": [1, 2]}: nested dicts joined by dots."""
    if not isinstance(value, dict):
        return {prefix[:-1]: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}{key}."))
    return flat


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def final_scores(result: dict) -> dict[str, Any]:
    """A job's result, flattened, with a pretrain's `final_metrics` at the top (`loss`, not
    `final_metrics.loss`)."""
    nested = result.get("final_metrics")
    rest = {k: v for k, v in result.items() if k != "final_metrics"}
    return {**flatten(rest), **(flatten(nested) if isinstance(nested, dict) else {})}


def job_params(job) -> dict[str, str]:
    """The job's spec, flattened, as MLflow params (strings, capped at MLflow's length)."""
    spec = {k: v for k, v in job.spec_data.items() if k != "type"}
    params = {"type": str(job.type)}
    for key, value in flatten(spec).items():
        text = "null" if value is None else str(value)
        params[key[:250]] = text[:MAX_PARAM_CHARS]
    return params


class MlflowSink:
    """Engine hooks that log one job to MLflow from a background thread (see the module doc)."""

    def __init__(self, tracking_uri: str, job, run_dir: Path, *, flush_s: float = 60.0,
                 retry_max_s: float = 10.0):
        self.tracking_uri = tracking_uri
        self.job = job
        self.run_dir = Path(run_dir)
        self.flush_s = flush_s
        self.retry_max_s = retry_max_s
        self.run_id: str | None = None
        self._rows: list[tuple[int, dict[str, float]]] = []
        self._final: dict | None = None  # set by close(): the job's outcome
        self._params_logged = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._done = threading.Event()
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name=f"mlflow-{job.id}", daemon=True)
        self._thread.start()

    # -- hooks: cheap, never raise ---------------------------------------------------
    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        self._wake.set()

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        values = {k: v for k, v in ((k, _number(v)) for k, v in metrics.items() if k != "step") if v is not None}
        with self._lock:
            self._rows.append((int(step), values))
            if len(self._rows) > MAX_BUFFERED_ROWS:
                del self._rows[: len(self._rows) - MAX_BUFFERED_ROWS]
        self._wake.set()

    def should_stop(self) -> bool:
        return False

    def on_checkpoint(self, path: Path, sha256: str) -> None:
        pass

    @property
    def failing(self) -> bool:
        """The server failed the last FAILING_AFTER tries (this sink's, or its worker's)."""
        return max(self._failures, _shared_failures()) >= FAILING_AFTER

    def warnings(self) -> list[str]:
        """For the job's result, at its end: what it will not wait for."""
        if self._done.is_set() or not self.failing:
            return []
        return [f"MLflow at {self.tracking_uri} is not answering ({max(self._failures, _shared_failures())} failed "
                "tries in a row): this job's last metrics and files are not logged there; the job did not wait"]

    def close(self, outcome: dict | None = None) -> bool:
        """Hand over the job's end (`{"status", "result", "step"}`, None when this worker lost the
        job) and wait up to `flush_s` for everything to be sent, unless the server is failing;
        True when it was sent."""
        with self._lock:
            self._final = outcome or {"status": None}
        self._wake.set()
        deadline = time.monotonic() + self.flush_s
        while not self._done.is_set() and not self.failing and time.monotonic() < deadline:
            self._done.wait(min(0.2, max(0.0, deadline - time.monotonic())))  # a failure ends the wait
        sent = self._done.is_set()
        if not sent and self.failing:
            log.warning("job %s: MLflow at %s is failing; not waiting for it: the run's last %d metrics rows and "
                        "files are not logged there", self.job.id, self.tracking_uri, len(self._rows))
        elif not sent:
            log.warning("job %s: MLflow at %s did not take the run's last %d metrics rows and files within "
                        "%.0f s (DCL_MLFLOW_FLUSH_SECONDS); they are not logged there", self.job.id,
                        self.tracking_uri, len(self._rows), self.flush_s)
        self._done.set()  # the thread gives up at its next wake-up
        self._wake.set()
        return sent

    # -- the sending thread ----------------------------------------------------------
    def _run(self) -> None:
        client = None
        delay = 0.5
        while not self._done.is_set():
            try:
                if client is None:
                    try:
                        client = _client(self.tracking_uri)
                    except ImportError:
                        log.error("job %s: DCL_MLFLOW_TRACKING_URI is set but mlflow is not installed "
                                  "(pip install mlflow-skinny); not tracked", self.job.id)
                        self._done.set()
                        return
                if self._send(client):
                    _shared_failures(0)
                    self._done.set()
                    return
                _shared_failures(0)
                if self._failures:
                    log.info("job %s: MLflow at %s reachable again", self.job.id, self.tracking_uri)
                self._failures, delay = 0, 0.5
                self._wake.wait()
                self._wake.clear()
            except Exception as exc:
                self._failures += 1
                _shared_failures(1)
                if self._failures == 1 or self._failures % 20 == 0:
                    log.warning("job %s: MLflow at %s failed (%s: %s); retrying, the job goes on",
                                self.job.id, self.tracking_uri, type(exc).__name__, exc)
                self._wake.wait(delay)
                self._wake.clear()
                delay = min(self.retry_max_s, delay * 2)

    def _send(self, client) -> bool:
        """Send what is buffered; True once the final outcome is sent too (nothing more to do)."""
        from mlflow.entities import Metric, Param

        if self.run_id is None:
            self.run_id = self._find_or_create_run(client)
        if not self._params_logged:
            params = [Param(k, v) for k, v in job_params(self.job).items()]
            for i in range(0, len(params), BATCH_PARAMS):
                client.log_batch(self.run_id, params=params[i:i + BATCH_PARAMS])
            self._params_logged = True
        while True:
            with self._lock:
                rows, final = list(self._rows), self._final
            if not rows:
                break
            metrics, taken = [], 0
            now = int(time.time() * 1000)
            for step, values in rows:
                if metrics and len(metrics) + len(values) > BATCH_METRICS:
                    break
                metrics += [Metric(k, v, now, step) for k, v in values.items()]
                taken += 1
            if metrics:
                client.log_batch(self.run_id, metrics=metrics)
            with self._lock:  # only what was sent is dropped (rows may have arrived meanwhile)
                del self._rows[:taken]
        if final is None:
            return False
        self._send_final(client, final)
        return True

    def _find_or_create_run(self, client) -> str:
        name = experiment_name(str(self.job.owner or "local"))
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        job_id = self.job.id
        found = client.search_runs([experiment_id], f"tags.`{JOB_TAG}` = '{job_id}'", max_results=1)
        if found:
            return found[0].info.run_id
        run = client.create_run(experiment_id, run_name=job_id,
                                tags={JOB_TAG: job_id, "dcl.job_type": str(self.job.type)})
        return run.info.run_id

    def _send_final(self, client, final: dict) -> None:
        from mlflow.entities import Metric

        status = final.get("status")
        if status is None:  # the job was lost to another worker: it logs the rest into this run
            return
        step = int(final.get("step") or 0)
        now = int(time.time() * 1000)
        scores = [Metric(f"final.{k}", v, now, step)
                  for k, v in ((k, _number(v)) for k, v in final_scores(final.get("result") or {}).items())
                  if v is not None]
        for i in range(0, len(scores), BATCH_METRICS):
            client.log_batch(self.run_id, metrics=scores[i:i + BATCH_METRICS])
        for name in final.get("artifacts") or []:
            path = self.run_dir / name
            if name in NOT_LOGGED or not path.is_file():
                continue
            folder = str(Path(name).parent) if Path(name).parent != Path(".") else None
            client.log_artifact(self.run_id, str(path), folder)
        client.set_tag(self.run_id, "dcl.status", status)
        client.set_terminated(self.run_id, {"succeeded": "FINISHED", "cancelled": "KILLED"}.get(status, "FAILED"))


def _client(tracking_uri: str):
    # Our thread retries; MLflow's own retries (7, with backoff: minutes) would only delay that.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def preload(settings) -> None:
    """Import the MLflow client in the worker's main process when tracking is on: importing it
    takes seconds, and every job's child would otherwise pay that again."""
    if settings.mlflow_tracking_uri:
        arm()
        try:
            import mlflow.tracking  # noqa: F401
        except ImportError:
            log.warning("DCL_MLFLOW_TRACKING_URI is set but mlflow is not installed (pip install mlflow-skinny)")


def job_sinks(job, run_dir: Path, settings) -> list:
    """The tracking sinks this job gets from the settings (none when nothing is configured)."""
    uri = settings.mlflow_tracking_uri
    if not uri:
        return []
    return [MlflowSink(uri, job, run_dir, flush_s=float(settings.mlflow_flush_seconds))]
