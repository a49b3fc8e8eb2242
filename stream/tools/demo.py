"""``scoring demo``: the whole pipeline on an embedded broker and Redis, in one command.

It starts a fresh local broker and Redis on free loopback ports, bootstraps both use cases
from 30 days of simulated history before the stream (``scoring bootstrap``), starts a worker
process, waits until the worker has joined its consumer group and its learners have published
their first versions, then sends the simulator's stream in real time (``--rate``), so that
the labels of earlier events are learned while later events are scored. It shows progress
from the worker's own metrics (live bars on a terminal, a plain line every
:data:`PLAIN_LINE_SECONDS` in a log) and ends with a summary read from the output topics,
as a downstream team would see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import rich.progress
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from consumers.alerts import CAUGHT_UP_SECONDS, watch
from consumers.audit import audit
from stream.kafka import ensure_topics, kafka_config
from stream.redis_client import redis_client
from stream.runtime.registry import ModelRegistry
from stream.settings import Settings
from stream.tools import localstack, simulator
from stream.tools.bootstrap import bootstrap
from stream.tools.progress import PLAIN_LINE_SECONDS
from stream.usecases import USE_CASES, all_topics, use_case


@contextlib.contextmanager
def worker_process(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``scoring worker`` with ``settings`` in a child process; stop it on exit."""
    env = {**os.environ, **settings.environment()}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream.tools.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes], signum: int = signal.SIGINT, timeout: float = 20.0) -> None:
    """Send ``process`` ``signum``, then SIGKILL it if it has not ended within ``timeout`` seconds;
    reap it either way."""
    if process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def scrape(port: int) -> dict[str, float]:
    """The worker's metric samples, summed over labels except ``outcome``/``reason``/``model``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    totals: defaultdict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(
                f"{{{k}={v}}}"
                for k, v in sorted(sample.labels.items())
                if k in ("outcome", "reason", "model")
            )
            totals[key] += sample.value
    return dict(totals)


# Label outcomes that are not final: the label is still waiting, or was already counted.
_PENDING_LABEL_OUTCOMES = ("outcome=parked", "outcome=redelivered")
READY_TIMEOUT_SECONDS = 60.0
HISTORY_DAYS = 30
"""Days of simulated history the demo bootstraps both use cases from, before its stream."""


@dataclasses.dataclass(frozen=True)
class Progress:
    """What the worker's metrics say it has done."""

    predictions: float
    dead_letters: float
    labels_done: float  # joined or dead-lettered
    joined: float
    learned: float  # by the learners
    assigned_partitions: float
    learners: int  # use cases whose learner has published a version (.0 as it starts)
    served: tuple[str, ...]  # the version each use case is scored with

    @classmethod
    def of(cls, samples: Mapping[str, float]) -> Progress:
        def total(prefix: str, keep: Callable[[str], bool] = lambda _: True) -> float:
            return sum(v for k, v in samples.items() if k.startswith(prefix) and keep(k))

        def per_use_case(metric: str) -> dict[str, float]:
            keys = {uc.name: f"{metric}{{model={uc.name}}}" for uc in USE_CASES}
            return {name: samples[key] for name, key in keys.items() if key in samples}

        labels = "scoring_labels_total"
        served = per_use_case("scoring_served_model_version")
        return cls(
            predictions=total("scoring_predictions_total"),
            dead_letters=total("scoring_dead_letters_total"),
            labels_done=total(labels, lambda k: not any(o in k for o in _PENDING_LABEL_OUTCOMES)),
            joined=total(labels, lambda k: "outcome=joined" in k),
            learned=total("scoring_learner_labels_learned"),
            assigned_partitions=total("scoring_assigned_partitions"),
            learners=len(per_use_case("scoring_published_model_version")),
            served=tuple(f"{uc.name}.{served.get(uc.name, 0):.0f}" for uc in USE_CASES),
        )

    @property
    def ready(self) -> bool:
        """The worker has joined its group, and every use case's learner has published its first version."""
        return self.assigned_partitions > 0 and self.learners == len(USE_CASES)

    def caught_up(self, events: int, malformed: int, labels: int) -> bool:
        """Every event scored, every malformed payload rejected, every label joined and learned."""
        return (
            self.predictions >= events
            and self.dead_letters >= malformed
            and self.labels_done >= labels
            and self.learned >= self.joined
        )

    def line(self, events: int, labels: int) -> str:
        return (
            f"events {self.predictions + self.dead_letters:,.0f}/{events:,} scored or rejected, "
            f"labels {self.labels_done:,.0f}/{labels:,} joined, {self.learned:,.0f} learned; "
            f"serving {', '.join(self.served)}"
        )


def run(
    config: simulator.SimulationConfig,
    start: dt.datetime | None = None,
    out: TextIO = sys.stdout,
    timeout: float = 300.0,
    history_days: int = HISTORY_DAYS,
) -> int:
    """Run the demo on the stream that ends at ``start`` (default now); returns a process exit code.

    Both use cases are first bootstrapped from ``history_days`` of simulated history before
    the stream (0: they start untrained). ``timeout`` bounds the wait for the worker once
    everything is sent.
    """
    with (
        tempfile.TemporaryDirectory(prefix="scoring-demo-") as tmp,
        localstack.running_stack(Path(tmp)) as stack,
    ):
        settings = Settings.from_env().replace(
            kafka_bootstrap=stack.kafka_bootstrap,
            redis_url=stack.redis_url,
            namespace=f"demo{int(time.time())}",
            session_timeout_seconds=2.0,
            heartbeat_interval_seconds=0.5,
            metrics_port=localstack.free_port(),
            state_dir=tmp,
            max_event_age_seconds=0,  # a --start in the past makes old events, none of them late
        )
        print(
            f"broker {stack.kafka_bootstrap}, redis {stack.redis_url}, namespace {settings.namespace}",
            file=out,
        )
        ensure_topics(settings, all_topics())
        start = start or dt.datetime.now(dt.UTC)
        if history_days:
            bootstrap_from_history(settings, config, start, history_days, Path(tmp), out)
        messages = list(simulator.generate(config, start=start))
        kinds = Counter(m.kind for m in messages)
        events, labels, malformed = kinds["event"], kinds["label"], kinds["malformed"]
        duration = messages[-1].at if messages else 0.0
        log_path = Path(tmp) / "worker.log"
        with worker_process(settings, log_path) as worker:
            # Sent earlier, the stream would wait for the worker and be scored at once, all of
            # it by the untrained version .0.
            print("waiting for the worker to join its consumer group and its learners to start", file=out)
            ready_by = time.monotonic() + READY_TIMEOUT_SECONDS
            while not Progress.of(scrape(settings.metrics_port)).ready:
                if worker.poll() is not None or time.monotonic() > ready_by:
                    print(f"the worker did not get ready; its log:\n{log_path.read_text()[-3000:]}", file=out)
                    return 1
                time.sleep(0.2)
            print(
                f"sending {events:,} events, {malformed:,} malformed payloads and {labels:,} labels "
                f"at {config.rate:g} events/s (~{duration:.0f} s; labels "
                f"{config.label_delay[0]:g}-{config.label_delay[1]:g} s after their events)",
                file=out,
            )
            producer = Producer(kafka_config(settings, {"linger.ms": 5}))
            with (
                ThreadPoolExecutor(max_workers=1) as pool,
                progress_view(out, events + malformed, labels) as show,
            ):
                sending = pool.submit(simulator.send, messages, producer, settings.topic)
                deadline = time.monotonic() + duration + timeout
                samples = scrape(settings.metrics_port)
                while time.monotonic() < deadline and worker.poll() is None:
                    samples = scrape(settings.metrics_port)
                    progress = Progress.of(samples)
                    show(progress, time.monotonic())
                    if sending.done() and progress.caught_up(events, malformed, labels):
                        break
                    time.sleep(0.5)
            del producer  # flushed by send(); closed before the stack stops
            if worker.poll() is not None:
                print(f"the worker stopped unexpectedly; its log:\n{log_path.read_text()[-3000:]}", file=out)
                return 1
        print(f"\nsent {events} events, {malformed} malformed payloads and {labels} labels", file=out)
        print(summary(settings, samples), file=out)
    return 0


def bootstrap_from_history(
    settings: Settings,
    config: simulator.SimulationConfig,
    start: dt.datetime,
    days: int,
    folder: Path,
    out: TextIO,
) -> None:
    """Write the history before the stream and bootstrap each use case from it."""
    files = simulator.write_history(folder / "history.csv", config, start=start, days=days)
    print(f"bootstrapping from {days} days of history before the stream", file=out)
    for written in files:
        outcome = asyncio.run(
            bootstrap(settings, use_case(written.use_case, settings.use_cases), written.path, out=out)
        )
        print(*outcome.lines[-3:], sep="\n", file=out)


@contextlib.contextmanager
def progress_view(out: TextIO, events: int, labels: int) -> Iterator[Callable[[Progress, float], None]]:
    """Shows progress: ``show(progress, now)``.

    On a terminal, live bars; otherwise (a log, CI) a plain line every
    :data:`PLAIN_LINE_SECONDS` and one at the end, never carriage-return frames.
    """
    console = Console(file=out)
    if console.is_terminal:
        bars = rich.progress.Progress(
            rich.progress.TextColumn("{task.description:<36}"),
            rich.progress.BarColumn(),
            rich.progress.MofNCompleteColumn(),
            rich.progress.TimeElapsedColumn(),
            console=console,
        )
        scored = bars.add_task("events scored or rejected", total=events)
        joined = bars.add_task("labels joined", total=labels)
        learned = bars.add_task("labels learned", total=labels)

        def update(p: Progress, _now: float) -> None:
            bars.update(scored, completed=p.predictions + p.dead_letters)
            bars.update(joined, completed=p.labels_done)
            bars.update(learned, completed=p.learned, description=f"labels learned ({', '.join(p.served)})")

        with bars:
            yield update
        return
    lines = _PlainLines(out, events, labels)
    yield lines.show
    lines.close()


class _PlainLines:
    """Progress as a line every :data:`PLAIN_LINE_SECONDS`, and the latest one when it closes."""

    def __init__(self, out: TextIO, events: int, labels: int) -> None:
        self._out = out
        self._events, self._labels = events, labels
        self._began: float | None = None
        self._due = 0.0  # seconds after the first line
        self._unprinted = ""

    def show(self, p: Progress, now: float) -> None:
        self._began = now if self._began is None else self._began
        elapsed = now - self._began
        self._unprinted = f"{elapsed:4.0f} s  {p.line(self._events, self._labels)}"
        if elapsed >= self._due:
            self._due = elapsed + PLAIN_LINE_SECONDS
            self.close()

    def close(self) -> None:
        if self._unprinted:
            print(self._unprinted, file=self._out, flush=True)
            self._unprinted = ""


def summary(settings: Settings, samples: Mapping[str, float]) -> str:
    """What a downstream team sees on the output topics, what the learners published, and ops' alerts."""
    alerts = io.StringIO()
    board = watch(settings, out=alerts, idle_timeout=CAUGHT_UP_SECONDS)
    return "\n".join(
        [
            "",
            "Summary (read back from the output topics)",
            audit(settings).format(),
            "",
            "Models (from the registry)",
            *asyncio.run(_models(settings)),
            "",
            f"Alerts on alerts.drift ({board.changes} changes)",
            *([alerts.getvalue().rstrip()] if board.changes else []),
            board.render(),
        ]
    )


async def _models(settings: Settings) -> list[str]:
    client = redis_client(settings)
    registry = ModelRegistry(client, settings)
    lines = []
    try:
        for use_case in USE_CASES:
            live = await registry.live(use_case.name)
            if live is None:
                lines.append(f"{use_case.name}: no version published")
                continue
            record = await registry.record(live)
            scores = ", ".join(f"{k} {v:.4f}" for k, v in sorted(record["metrics"].items()))
            lines.append(
                f"{use_case.name}: live {live} ({record['pipeline']}, {record['learner_labels']} labels "
                f"learned; {scores}; challenger {record['challenger'] or '-'})"
            )
    finally:
        await client.aclose()
    return lines
