"""The delivery half of :class:`pipelines.tracking.RunLogger`: flushing, retries, outages, the spill file.

What it guarantees (never letting a tracking-server outage kill training, the resume
rule) is described in :mod:`pipelines.tracking.logger`. :class:`Delivery` holds no state
of its own: :class:`~pipelines.tracking.logger.RunLogger` creates the buffers, locks and
counters annotated on it.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pipelines.tracking.redact import redact_value
from pipelines.tracking.store import setup

log = logging.getLogger(__package__)  # "pipelines.tracking": one logger name for the whole package

BATCH_METRICS = 1000    # MlflowClient.log_batch limits
BATCH_PARAMS_TAGS = 100


@dataclasses.dataclass
class Outage:
    """One period during which the tracking server could not be reached."""

    since: float
    until: float | None = None
    buffered_at_start: int = 0
    error: str = ""


class Delivery:
    """Sends a :class:`~pipelines.tracking.logger.RunLogger`'s buffers to MLflow.

    A background thread (or a direct :meth:`flush`) delivers params, tags, spilled and
    buffered metrics and staged artifacts; a failure starts or extends an :class:`Outage`
    and schedules the next attempt with exponential backoff.
    """

    # State owned by RunLogger.__init__ (see there).
    experiment: str
    enabled: bool
    uri: str
    flush_every_s: float
    backoff_s: tuple[float, float]
    run_id: str | None
    outages: list[Outage]
    spill_path: Path
    _client: object | None
    _run_name: str | None
    _metrics: collections.deque[tuple[str, float, int, int]]
    _params: dict[str, str]
    _tags: dict[str, str]
    _artifacts: list[tuple[str, str | None]]
    _logged_params: dict[str, str]
    _changed_params: set[str]
    _lock: threading.Lock
    _flush_lock: threading.Lock
    _wake: threading.Event
    _stop: threading.Event
    _failures: int
    _next_attempt: float
    _outage: Outage | None
    _spilled: int

    # -- flushing ------------------------------------------------------------------------------

    def flush(self) -> bool:
        """Try to deliver everything buffered now; returns whether the buffers are empty."""
        if not self.enabled:
            return True
        if self._run_name is None and self.run_id is None:
            return False  # start() not called yet: keep buffering
        with self._flush_lock:
            try:
                self._deliver()
            except Exception as exc:  # noqa: BLE001 - any failure means "retry later"
                self._on_failure(exc)
                return False
            self._on_success()
            return True

    def flush_if_reachable(self) -> bool:
        """Deliver everything buffered now unless the server is known to be down; whether it was.

        What the training loop calls before it reports a checkpoint: every metric logged up to
        the checkpoint is then in MLflow, not lost with the node if it dies within the next
        ``flush_every_s``. During an outage it only wakes the flush thread, whose backoff decides
        when to try again, so a checkpoint never waits on a dead server.
        """
        if not self.enabled:
            return True
        if self._failures:
            self._wake.set()
            return False
        return self.flush()

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            retry_in = self._next_attempt - time.time()
            self._wake.wait(timeout=self.flush_every_s if self._failures == 0 else max(0.05, retry_in))
            self._wake.clear()
            if self._stop.is_set():
                break
            if time.time() >= self._next_attempt:
                self.flush()

    def _mlflow(self):
        if self._client is None:
            import mlflow

            self._client = mlflow.MlflowClient(self.uri)
        return self._client

    def _check_server(self) -> None:
        """Raise ConnectionError fast when an HTTP tracking server does not answer ``/health``.

        MLflow's own client retries a refused connection for minutes; this check keeps a
        flush during an outage to one short request.
        """
        if not self.uri.startswith(("http://", "https://")):
            return
        import requests

        try:
            ok = requests.get(self.uri.rstrip("/") + "/health", timeout=3).status_code == 200
        except requests.RequestException as exc:
            raise ConnectionError(f"{type(exc).__name__}") from exc
        if not ok:
            raise ConnectionError("health check failed")

    def _deliver(self) -> None:
        self._check_server()
        client = self._mlflow()
        if self.run_id is None:
            self._open_run()
        if self._outage is not None:  # report the outage on the run itself
            with self._lock:
                self._tags["tracking_outages"] = str(len(self.outages) + 1)
        with self._lock:
            params = {k: v for k, v in self._params.items() if k not in self._logged_params}
            changed = {k for k, v in self._params.items() if self._logged_params.get(k, v) != v}
            if changed - self._changed_params:
                self._changed_params |= changed
                self._tags["resume_changed_params"] = ",".join(sorted(self._changed_params))
            tags = dict(self._tags)
        self._send_params_tags(client, params, tags)
        self._send_spilled(client)
        while True:
            with self._lock:  # take a chunk out; log_metrics may spill the rest meanwhile
                chunk = [self._metrics.popleft() for _ in range(min(BATCH_METRICS, len(self._metrics)))]
            if not chunk:
                break
            try:
                self._send_metrics(client, chunk)
            except Exception:
                with self._lock:
                    self._metrics.extendleft(reversed(chunk))
                raise
        while self._artifacts:
            local, artifact_path = self._artifacts[0]
            if Path(local).is_dir():
                client.log_artifacts(self.run_id, local, artifact_path)
            else:
                client.log_artifact(self.run_id, local, artifact_path)
            with self._lock:
                self._artifacts.pop(0)

    def _open_run(self) -> None:
        from mlflow.entities import RunStatus

        client = self._mlflow()
        exp_id = setup(self.experiment, self.uri)
        name = self._run_name.replace("'", "\\'")
        runs = client.search_runs([exp_id], filter_string=f"attributes.run_name = '{name}'",
                                  order_by=["attributes.start_time DESC"], max_results=50)
        resumable = [r for r in runs if r.info.status in ("RUNNING", "FAILED", "KILLED")]
        if resumable:
            run = resumable[0]
            client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            self._logged_params = dict(run.data.params)
            resumed = int(run.data.tags.get("resume_count", "0")) + 1
            with self._lock:
                self._tags["resume_count"] = str(resumed)
            log.info("resuming MLflow run %s (%s, was %s)", run.info.run_id, self._run_name, run.info.status)
        else:
            run = client.create_run(exp_id, run_name=self._run_name)
            log.info("MLflow run %s (%s) in experiment %s at %s", run.info.run_id, self._run_name,
                     self.experiment, redact_value(self.uri))
        self.run_id, self.experiment_id = run.info.run_id, run.info.experiment_id

    def _send_params_tags(self, client, params: dict[str, str], tags: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        items = [("p", k, v) for k, v in params.items()] + [("t", k, v) for k, v in tags.items()]
        for i in range(0, len(items), BATCH_PARAMS_TAGS):
            chunk = items[i:i + BATCH_PARAMS_TAGS]
            client.log_batch(self.run_id, params=[Param(k, v) for kind, k, v in chunk if kind == "p"],
                             tags=[RunTag(k, v) for kind, k, v in chunk if kind == "t"], synchronous=True)
            with self._lock:
                for kind, k, v in chunk:
                    if kind == "p":
                        self._logged_params[k] = v
                    elif self._tags.get(k) == v:
                        del self._tags[k]

    def _send_metrics(self, client, rows: Sequence[Sequence]) -> None:
        from mlflow.entities import Metric
        from mlflow.exceptions import MlflowException

        metrics = [Metric(key, value, ts, step) for key, value, ts, step in rows]
        try:
            client.log_batch(self.run_id, metrics=metrics, synchronous=True)
        except MlflowException as exc:
            # A 4xx (a bad key) would be rejected forever: drop it and report, keep the rest flowing.
            if exc.get_http_status_code() < 500 and exc.error_code not in ("TEMPORARILY_UNAVAILABLE",
                                                                           "REQUEST_LIMIT_EXCEEDED"):
                log.error("MLflow rejected %d metrics (%s); dropped", len(metrics), exc.message[:200])
                return
            raise

    # -- outages and the spill file ------------------------------------------------------------

    def _on_failure(self, exc: Exception) -> None:
        self._failures += 1
        first, largest = self.backoff_s
        delay = min(largest, first * 2 ** (self._failures - 1))
        self._next_attempt = time.time() + random.uniform(0.5 * delay, delay)
        if self._outage is None:
            self._outage = Outage(since=time.time(), buffered_at_start=self.buffered,
                                  error=redact_value(f"{type(exc).__name__}: {str(exc)[:200]}"))
            since = datetime.datetime.fromtimestamp(self._outage.since).isoformat(timespec="seconds")
            log.warning("tracking server unreachable since %s, %d metrics buffered (%s); training "
                        "continues, retrying with backoff", since, self.buffered, self._outage.error)
        else:
            log.debug("MLflow flush attempt %d failed: %s", self._failures, redact_value(str(exc)))

    def _on_success(self) -> None:
        self._failures = 0
        self._next_attempt = 0.0
        if self._outage is not None:
            self._outage.until = time.time()
            self.outages.append(self._outage)
            log.warning("tracking server reachable again after %.1fs; buffered metrics delivered",
                        self._outage.until - self._outage.since)
            self._outage = None

    @property
    def buffered(self) -> int:
        """Metrics not yet delivered (in memory and spilled)."""
        return len(self._metrics) + self._spilled

    def _spill(self, everything: bool = False) -> None:
        """Move the oldest half (or all) of the in-memory metrics to the JSONL spill file."""
        with self._lock:
            n = len(self._metrics) if everything else len(self._metrics) // 2
            rows = [self._metrics.popleft() for _ in range(n)]
            if not rows:
                return
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spill_path, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            self._spilled += len(rows)

    def _send_spilled(self, client) -> None:
        """Replay spilled metrics (oldest first); only the flush thread touches the ``.sending`` file."""
        sending = self.spill_path.with_suffix(".sending")
        with self._lock:  # take the spill file over; new spills start a fresh one
            if not sending.exists() and self.spill_path.exists():
                self.spill_path.rename(sending)
        if not sending.exists():
            return
        rows = [json.loads(line) for line in sending.read_text().splitlines() if line]
        for i in range(0, len(rows), BATCH_METRICS):
            try:
                self._send_metrics(client, rows[i:i + BATCH_METRICS])
            except Exception:
                sending.write_text("".join(json.dumps(r) + "\n" for r in rows[i:]))
                raise
            with self._lock:
                self._spilled -= len(rows[i:i + BATCH_METRICS])
        sending.unlink()
        if self._spilled:  # spilled while we were sending
            self._send_spilled(client)
