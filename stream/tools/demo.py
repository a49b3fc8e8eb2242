"""``scoring demo``: the whole pipeline on an embedded broker and Redis, in one command.

It starts a fresh local broker and Redis on free loopback ports, a worker process, and
the simulator; shows progress from the worker's own metrics; and ends with a summary
read from the output topics, as a downstream team would see them.
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
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TextIO

import redis.asyncio as aioredis
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from consumers.alerts import CAUGHT_UP_SECONDS, watch
from consumers.audit import audit
from stream.runtime.registry import ModelRegistry
from stream.settings import Settings
from stream.tools import localstack, simulator
from stream.topics import ensure_topics
from stream.usecases import USE_CASES, all_topics


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
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
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


@dataclasses.dataclass(frozen=True)
class Progress:
    predictions: float
    dead_letters: float
    labels_done: float  # joined or dead-lettered
    joined: float
    learned: float  # by the learners

    @classmethod
    def of(cls, samples: Mapping[str, float]) -> Progress:
        def total(prefix: str, keep: Callable[[str], bool] = lambda _: True) -> float:
            return sum(v for k, v in samples.items() if k.startswith(prefix) and keep(k))

        labels = "scoring_labels_total"
        return cls(
            predictions=total("scoring_predictions_total"),
            dead_letters=total("scoring_dead_letters_total"),
            labels_done=total(labels, lambda k: not any(o in k for o in _PENDING_LABEL_OUTCOMES)),
            joined=total(labels, lambda k: "outcome=joined" in k),
            learned=total("scoring_learner_labels_learned"),
        )


def run(
    config: simulator.SimulationConfig,
    start: dt.datetime | None = None,
    out: TextIO = sys.stdout,
    timeout: float = 300.0,
) -> int:
    """Run the demo on the stream that ends at ``start`` (default now); returns a process exit code."""
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
        log_path = Path(tmp) / "worker.log"
        with worker_process(settings, log_path) as worker:
            messages = list(simulator.generate(config, start=start))
            events = sum(1 for m in messages if m.kind == "event")
            labels = sum(1 for m in messages if m.kind == "label")
            malformed = sum(1 for m in messages if m.kind == "malformed")
            print(
                f"simulating {events} events, {labels} labels, {malformed} malformed payloads "
                f"at {config.rate:g} events/s",
                file=out,
            )
            producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
            started = time.monotonic()
            for first in range(0, len(messages), 500):
                chunk = messages[first : first + 500]
                if config.rate > 0:  # keep to the schedule a chunk at a time
                    time.sleep(max(0.0, chunk[0].at - (time.monotonic() - started)))
                simulator.send(chunk, producer, settings.topic, realtime=False)
                _show(scrape(settings.metrics_port), events, labels, out)
            del producer  # flushed by send(); closed before the stack stops
            deadline = time.monotonic() + timeout
            samples = scrape(settings.metrics_port)
            while time.monotonic() < deadline and worker.poll() is None:
                samples = scrape(settings.metrics_port)
                p = Progress.of(samples)
                _show(samples, events, labels, out)
                if (
                    p.predictions >= events
                    and p.dead_letters >= malformed
                    and p.labels_done >= labels
                    and p.learned >= p.joined
                ):
                    break
                time.sleep(0.5)
            print(file=out)
            if worker.poll() is not None:
                print(f"the worker stopped unexpectedly; its log:\n{log_path.read_text()[-3000:]}", file=out)
                return 1
        print(f"\nsent {events} events, {malformed} malformed payloads and {labels} labels", file=out)
        print(summary(settings, samples), file=out)
    return 0


def _show(samples: Mapping[str, float], events: int, labels: int, out: TextIO) -> None:
    p = Progress.of(samples)
    out.write(
        f"\r  predictions {p.predictions:>7.0f}/{events}  dead letters {p.dead_letters:>5.0f}  "
        f"labels joined {p.joined:>7.0f}/{labels}  learned {p.learned:>7.0f}   "
    )
    out.flush()


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
    client = aioredis.Redis.from_url(settings.redis_url)
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
