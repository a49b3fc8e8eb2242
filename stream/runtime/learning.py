"""The learner process of a worker: learning runs beside scoring, never in its event loop.

A worker's event loop scores events and joins labels; learning them (River's updates, the
drift monitor, the gate) and pickling, signing and publishing a checkpoint every second
would take turns with it, and in one process they would also hold the interpreter lock
scoring needs. So each worker starts one **learner process**, which runs the learners of
every use case (:class:`stream.runtime.learner.Learner`: only the holder of a use case's
lease learns, as before) on an event loop of its own, with its own Redis connection and
producer. The worker (:class:`LearnerProcess`):

- starts it (``python -m stream.runtime.learning``, the worker's settings in its
  environment) and, should it die, starts it again after the backoff of the error policy;
- serves its metrics on the worker's ``/metrics`` (:class:`WorkerMetrics` asks the process
  for them at each scrape), so a worker still exports one set of metrics;
- stops it when the worker stops: SIGTERM, and its learners checkpoint and hand their leases over.

The process runs ``SCORING_LEARNER_NICENESS`` nicer than its worker: on cores both want, the
kernel runs the worker as soon as it wakes (an event arrived, Redis answered) instead of
letting it wait out the learner's time slice. Learning lags under such load and catches up
when a core is free; scoring does not wait for it.

The process ends at once, without a checkpoint, when its worker is gone, killed with
``kill -9`` too: it reads the worker's requests from a pipe only the worker holds, and takes
the pipe's end as the worker's. Its leases then lapse and a learner takes over from the last
checkpoint, exactly as when a worker with its learners inside was killed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection

import uvloop
from prometheus_client import REGISTRY, CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from stream import logs
from stream.backoff import Backoff
from stream.redis_client import redis_client
from stream.runtime import collector, metrics
from stream.runtime.learner import Learner
from stream.runtime.publisher import Publisher
from stream.runtime.registry import ModelRegistry
from stream.runtime.retry import ErrorPolicy
from stream.runtime.state import StateStore
from stream.settings import Settings
from stream.usecases import ALERTS_TOPIC

log = logging.getLogger(__name__)

LEARNER_METRICS = (
    metrics.ALERT_CHANGES,
    metrics.CALIBRATION_ERROR,
    metrics.CANARY_LOSS,
    metrics.CANARY_OUTCOMES,
    metrics.CANARY_STATISTIC,
    metrics.CHECKPOINT_AGE,
    metrics.DRIFT_STATISTIC,
    metrics.DRIFT_THRESHOLD,
    metrics.ESTIMATED,
    metrics.ESTIMATE_VALID,
    metrics.GATE_DECISIONS,
    metrics.GATE_LOSS_RATIO,
    metrics.LABELS_LEARNED,
    metrics.LEARNER_LABELS,
    metrics.LEARNER_LAG,
    metrics.LEARNER_LEADER,
    metrics.OPEN_ALERTS,
    metrics.PREQUENTIAL,
    metrics.PROMOTION_STATISTIC,
    metrics.PUBLICATIONS,
    metrics.PUBLISHED_VERSION,
    metrics.REALIZED,
    metrics.RETRIES,  # the learners' own retries, beside the worker's
    metrics.ROLLBACKS,
    metrics.WATCH_STATISTIC,
    metrics.WATCH_THRESHOLD,
)
"""What the learner process exports through its worker's ``/metrics``."""

METRICS_TIMEOUT_SECONDS = 2.0
"""How long a scrape waits for the learner process's metrics (without them, the worker's alone)."""
STOP_TIMEOUT_SECONDS = 15.0
"""How long a stopping worker waits for its learners' last checkpoint before it kills the process."""
STABLE_SECONDS = 60.0
"""A learner process that ran this long before it died is started again without waiting longer."""


class LearnerProcess:
    """The worker's side of its learner process: start, supervise, scrape, stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None  # to the process: the pipe whose end is ours
        self._replies: Connection | None = None
        self._lock = threading.Lock()  # one scrape at a time, and not while the pipes change
        self._asked = 0
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The pid of the learner process started last (``None`` before the first)."""
        return None if self._process is None else self._process.pid

    async def run(self) -> None:
        """Keep the learner process running until :meth:`stop`."""
        backoff = Backoff()
        while not self._stopping:
            started = time.monotonic()
            process = self._start()
            code = await asyncio.to_thread(process.wait)
            if self._stopping:
                return
            if time.monotonic() - started > STABLE_SECONDS:
                backoff.reset()
            delay = backoff.next()
            log.error("the learner process exited with code %s; starting it again in %.1f s", code, delay)
            await asyncio.sleep(delay)

    def _start(self) -> subprocess.Popen[bytes]:
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        process = subprocess.Popen(
            [sys.executable, "-m", "stream.runtime.learning", str(requests_read), str(replies_write)],
            env=self.settings.child_environment(),
            pass_fds=(requests_read, replies_write),
        )
        os.close(requests_read)
        os.close(replies_write)
        with self._lock:
            self._close_pipes()
            self._process = process
            self._requests = Connection(requests_write, readable=False)
            self._replies = Connection(replies_read, writable=False)
        log.info("learner process %d started", process.pid)
        return process

    async def stop(self) -> None:
        """Stop the process: its learners checkpoint and hand their leases over (killed after
        ``STOP_TIMEOUT_SECONDS``)."""
        self._stopping = True
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("the learner process did not stop within %.0f s: killed", STOP_TIMEOUT_SECONDS)
                process.kill()
                await asyncio.to_thread(process.wait)
        with self._lock:
            self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self._requests, self._replies):
            if pipe is not None:
                pipe.close()
        self._requests = self._replies = None

    def metrics(self) -> list[Metric]:
        """The learner process's metrics now; none if it does not answer in time (or runs not)."""
        with self._lock:
            if self._requests is None or self._replies is None:
                return []
            self._asked += 1
            deadline = time.monotonic() + METRICS_TIMEOUT_SECONDS
            try:
                self._requests.send_bytes(b"%d" % self._asked)
                while self._replies.poll(max(0.0, deadline - time.monotonic())):
                    asked, _, text = self._replies.recv_bytes().partition(b"\n")
                    if int(asked) == self._asked:  # not the late answer to a scrape that gave up
                        return list(text_string_to_metric_families(text.decode()))
            except (OSError, EOFError):  # the process is gone: its supervisor starts another
                pass
            return []


class WorkerMetrics(Collector):
    """What a worker's ``/metrics`` serves: its own metrics and its learner process's, merged."""

    def __init__(self, learning: LearnerProcess) -> None:
        self._learning = learning

    def collect(self) -> Iterator[Metric]:
        theirs = {family.name: family for family in self._learning.metrics()}
        for family in REGISTRY.collect():
            learned = theirs.pop(family.name, None)
            if learned is not None:  # defined in both processes; each has samples of its own
                family.samples = [*family.samples, *learned.samples]
            yield family
        yield from theirs.values()


def worker_registry(learning: LearnerProcess) -> CollectorRegistry:
    """The registry a worker serves on ``/metrics``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerMetrics(learning))
    return registry


# The learner process ------------------------------------------------------------------


async def serve(settings: Settings) -> None:
    """Run the learners of every use case until SIGTERM or SIGINT, then checkpoint them."""
    policy = ErrorPolicy(settings)
    client = redis_client(settings)
    store, registry = StateStore(client, settings), ModelRegistry(client, settings)
    publisher = Publisher(settings)
    alerts = settings.topic(ALERTS_TOPIC)
    learners = [
        Learner(
            settings,
            use_case,
            store,
            registry,
            lambda records: policy.retrying(alerts, lambda: publisher.publish(records)),
            policy,
        )
        for use_case in settings.use_cases
    ]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    running = [asyncio.create_task(learner.run()) for learner in learners]
    collector.settle()
    await stopping.wait()
    for learner in learners:
        await learner.stop()
    await asyncio.gather(*running)
    await asyncio.to_thread(publisher.close)
    await client.aclose()


def answer(requests: Connection, replies: Connection) -> None:
    """Answer the worker's scrapes with the learners' metrics; end the process when it is gone."""
    exported = CollectorRegistry(auto_describe=False)
    for metric in LEARNER_METRICS:
        exported.register(metric)
    while True:
        try:
            asked = requests.recv_bytes()
        except (EOFError, OSError):
            log.warning("the worker is gone: its learner process ends now, without a checkpoint")
            os._exit(1)
        replies.send_bytes(asked + b"\n" + generate_latest(exported))


def main(argv: list[str]) -> None:
    """The learner process: ``python -m stream.runtime.learning <requests fd> <replies fd>``."""
    settings = Settings.from_env()
    os.nice(settings.learner_niceness)  # a core the worker and the learner both want goes to scoring
    logs.setup(settings.log_level)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # a counter's ``_created`` would come back to the worker as a family apart
    requests, replies = Connection(int(argv[0]), writable=False), Connection(int(argv[1]), readable=False)
    threading.Thread(target=answer, args=(requests, replies), name="worker", daemon=True).start()
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main(sys.argv[1:])
