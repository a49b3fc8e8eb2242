"""The learner processes of a worker: learning runs beside scoring, never in its event loop.

A worker's event loop scores events and joins labels; learning them (River's updates, the
drift monitor, the gate) and pickling, signing and publishing a checkpoint every second
would take turns with it, and in one process they would also hold the interpreter lock
scoring needs. So each worker starts a **learner process** per use case, which runs that
use case's learner (:class:`stream.runtime.learner.Learner`: only the holder of the use
case's lease learns) on an event loop of its own, with its own Redis connection and
producer. One learner is sequential by design; the use cases' learners, a process each,
learn on as many cores as there are, and one use case's slow model never holds up another's
learning. The worker (:class:`Learning`, a :class:`LearnerProcess` per use case):

- starts them (``python -m stream.runtime.learning <use case>``, the worker's settings in
  their environment) and, should one die, starts it again after the backoff of the error
  policy;
- serves their metrics on the worker's ``/metrics`` (:class:`WorkerMetrics` asks each process
  for them at each scrape), so a worker still exports one set of metrics;
- stops them when the worker stops: SIGTERM, and each learner checkpoints and hands its
  lease over.

Each process runs ``SCORING_LEARNER_NICENESS`` nicer than its worker: on cores both want, the
kernel runs the worker as soon as it wakes (an event arrived, Redis answered) instead of
letting it wait out the learner's time slice. Learning lags under such load and catches up
when a core is free; scoring does not wait for it.

A learner process ends at once, without a checkpoint, when its worker is gone, killed with
``kill -9`` too: it reads the worker's requests from a pipe only the worker holds, and takes
the pipe's end as the worker's. Its lease then lapses and a learner takes over from the last
checkpoint, exactly as when a worker with its learners inside was killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from typing import Any

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
from stream.usecases import ALERTS_TOPIC, UseCase, use_case

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
"""How long a scrape waits for a learner process's metrics (without them, the others' alone)."""
STOP_TIMEOUT_SECONDS = 15.0
"""How long a stopping worker waits for a learner's last checkpoint before it kills its process."""
STABLE_SECONDS = 60.0
"""A learner process that ran this long before it died is started again without waiting longer."""


class LearnerProcess:
    """The worker's side of the learner process of one use case: start, supervise, scrape, stop."""

    def __init__(self, settings: Settings, use_case: str) -> None:
        self.settings = settings
        self.use_case = use_case
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
            log.error(
                "the learner process of %s exited with code %s; starting it again in %.1f s",
                self.use_case,
                code,
                delay,
            )
            await asyncio.sleep(delay)

    def _start(self) -> subprocess.Popen[bytes]:
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        command = [sys.executable, "-m", "stream.runtime.learning", self.use_case]
        process = subprocess.Popen(
            [*command, str(requests_read), str(replies_write)],
            env=self.settings.child_environment(),
            pass_fds=(requests_read, replies_write),
        )
        # Nicer at once, from the parent: its imports alone take about a second of CPU, which
        # a worker starting beside it wants too.
        nicer = min(19, os.getpriority(os.PRIO_PROCESS, 0) + self.settings.learner_niceness)
        with contextlib.suppress(ProcessLookupError):  # gone already: run() starts another
            os.setpriority(os.PRIO_PROCESS, process.pid, nicer)
        os.close(requests_read)
        os.close(replies_write)
        with self._lock:
            self._close_pipes()
            self._process = process
            self._requests = Connection(requests_write, readable=False)
            self._replies = Connection(replies_read, writable=False)
        log.info("learner process %d of %s started", process.pid, self.use_case)
        return process

    async def stop(self) -> None:
        """Stop the process: its learner checkpoints and hands its lease over (killed after
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
                log.error(
                    "the learner process of %s did not stop within %.0f s: killed",
                    self.use_case,
                    STOP_TIMEOUT_SECONDS,
                )
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
        """The process's metrics now; none if it does not answer in time (or runs not)."""
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


class Learning:
    """The worker's learner processes: one per use case, started, supervised and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.processes = [LearnerProcess(settings, use_case.name) for use_case in settings.use_cases]

    @property
    def pids(self) -> dict[str, int | None]:
        """Use case -> the pid of its learner process started last (``None`` before the first)."""
        return {process.use_case: process.pid for process in self.processes}

    async def run(self) -> None:
        """Keep every learner process running until :meth:`stop`."""
        await asyncio.gather(*(process.run() for process in self.processes))

    async def stop(self) -> None:
        """Stop every learner process; each learner checkpoints and hands its lease over."""
        await asyncio.gather(*(process.stop() for process in self.processes))

    def metrics(self) -> list[Metric]:
        """The metrics of every learner process now, one family per name (see :func:`merged`)."""
        return merged(family for process in self.processes for family in process.metrics())


def merged(families: Iterable[Metric]) -> list[Metric]:
    """``families`` of several processes as one family per name, with the samples of each; a
    sample of the same name and labels in several is summed (a counter several count, such as
    ``scoring_retries``), so that no series is exported twice."""
    by_name: dict[str, Metric] = {}
    for family in families:
        into = by_name.setdefault(family.name, family)
        if into is family:
            continue
        index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(into.samples)}
        for sample in family.samples:
            i = index.get((sample.name, tuple(sorted(sample.labels.items()))))
            if i is None:
                into.samples.append(sample)
            else:
                into.samples[i] = into.samples[i]._replace(value=into.samples[i].value + sample.value)
    return list(by_name.values())


class WorkerMetrics(Collector):
    """What a worker's ``/metrics`` serves: its own metrics and its learner processes', merged."""

    def __init__(self, learning: Learning) -> None:
        self._learning = learning

    def collect(self) -> Iterator[Metric]:
        return iter(merged([*REGISTRY.collect(), *self._learning.metrics()]))


def worker_registry(learning: Learning) -> CollectorRegistry:
    """The registry a worker serves on ``/metrics``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerMetrics(learning))
    return registry


# The learner process ------------------------------------------------------------------


async def serve(settings: Settings, use_case: UseCase[Any, Any]) -> None:
    """Run the learner of ``use_case`` until SIGTERM or SIGINT, then checkpoint it."""
    policy = ErrorPolicy(settings)
    client = redis_client(settings)
    publisher = Publisher(settings)
    alerts = settings.topic(ALERTS_TOPIC)
    learner = Learner(
        settings,
        use_case,
        StateStore(client, settings),
        ModelRegistry(client, settings),
        lambda records: policy.retrying(alerts, lambda: publisher.publish(records)),
        policy,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    running = asyncio.create_task(learner.run())
    collector.settle()
    await stopping.wait()
    await learner.stop()
    await running
    await asyncio.to_thread(publisher.close)
    await client.aclose()


def answer(requests: Connection, replies: Connection) -> None:
    """Answer the worker's scrapes with the learner's metrics; end the process when it is gone."""
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
    """The learner process of a use case:
    ``python -m stream.runtime.learning <use case> <requests fd> <replies fd>``."""
    settings = Settings.from_env()
    learned = use_case(argv[0], settings.use_cases)
    logs.setup(settings.log_level)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # a counter's ``_created`` would come back to the worker as a family apart
    requests, replies = Connection(int(argv[1]), writable=False), Connection(int(argv[2]), readable=False)
    threading.Thread(target=answer, args=(requests, replies), name="worker", daemon=True).start()
    uvloop.run(serve(settings, learned))


if __name__ == "__main__":
    main(sys.argv[1:])
