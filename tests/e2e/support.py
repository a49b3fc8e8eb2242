"""Helpers of the end-to-end tests: produce, read a worker's metrics, wait."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any, TypeVar

import orjson
from confluent_kafka import Producer

from consumers.reader import read
from stream.records import DeadLetter, Prediction
from stream.redis_client import redis_client
from stream.runtime.registry import ModelRegistry
from stream.runtime.state import StateStore
from stream.settings import Settings
from stream.tools import simulator
from stream.tools.demo import scrape, worker_process
from stream.usecases import UseCase

T = TypeVar("T")

START = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
"""Where every simulated stream of these tests ends: the same events whatever the clock says."""


def produce(settings: Settings, messages: list[simulator.Message], realtime: bool = False) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    simulator.send(messages, producer, settings.topic, realtime=realtime)


def counter(settings: Settings, name: str, **labels: str) -> float:
    suffix = "".join(f"{{{k}={v}}}" for k, v in sorted(labels.items()))
    return scrape(settings.metrics_port).get(name + suffix, 0.0)


_WATCHED: list[tuple[Popen[bytes], Path]] = []
"""The workers :func:`wait_until` checks are alive, with their logs (see :func:`watched_worker`)."""


@contextlib.contextmanager
def watching(process: Popen[bytes], log: Path) -> Iterator[Popen[bytes]]:
    """While inside, :func:`wait_until` fails at once, with the end of ``log``, if ``process`` exits."""
    _WATCHED.append((process, log))
    try:
        yield process
    finally:
        _WATCHED.remove((process, log))


@contextlib.contextmanager
def watched_worker(settings: Settings, log: Path) -> Iterator[Popen[bytes]]:
    """A worker process (:func:`~stream.tools.demo.worker_process`) that must not exit on its
    own: see :func:`watching`. A test that kills its worker on purpose starts it with
    ``worker_process``."""
    with worker_process(settings, log) as process, watching(process, log):
        yield process


def wait_until(condition: Callable[[], bool], timeout: float = 120.0, what: str = "the worker") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for process, log in _WATCHED:
            if process.poll() is not None:
                raise AssertionError(
                    f"waiting for {what}, the worker exited with code {process.returncode}:\n"
                    + log.read_text(errors="replace")[-3000:]
                )
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def total(settings: Settings, name: str, outcome: str | None = None) -> float:
    extra = {"outcome": outcome} if outcome else {}
    return sum(counter(settings, name, model=model, **extra) for model in ("fraud", "demand"))


def event_id(message: simulator.Message) -> str:
    return str(orjson.loads(message.value)["event_id"])


def with_registry(settings: Settings, use: Callable[[ModelRegistry, StateStore], Awaitable[T]]) -> T:
    async def run() -> T:
        client = redis_client(settings)
        try:
            return await use(ModelRegistry(client, settings), StateStore(client, settings))
        finally:
            await client.aclose()

    return asyncio.run(run())


def live_record(settings: Settings, model: str = "fraud") -> dict[str, Any] | None:
    """The registry record of ``model``'s live version (``None`` before the first)."""

    async def use(registry: ModelRegistry, _: StateStore) -> dict[str, Any] | None:
        live = await registry.live(model)
        return await registry.record(live) if live else None

    return with_registry(settings, use)


def predictions(settings: Settings, model: str = "fraud") -> list[Prediction]:
    """Every prediction message of ``model`` on the output topic."""
    records = [m.parse() for m in read(settings, [f"predictions.{model}"], idle_timeout=2.0)]
    return [r for r in records if isinstance(r, Prediction)]


def dead_letters(settings: Settings) -> set[tuple[bytes, str]]:
    """The payload (as it was sent) and reason of each dead letter on the topic."""
    records = [m.parse() for m in read(settings, ["deadletter"], idle_timeout=2.0)]
    return {
        (base64.b64decode(r.payload) if r.payload_encoding == "base64" else r.payload.encode(), r.reason)
        for r in records
        if isinstance(r, DeadLetter)
    }


def send_on_schedule(settings: Settings, messages: list[simulator.Message]) -> None:
    """Send ``messages`` on schedule once the worker's consumer has its partitions and its
    learners lead (so that what is due at a second is done at that second, as in a backtest)."""
    wait_until(lambda: counter(settings, "scoring_assigned_partitions") > 0, what="the consumer")
    wait_until(lambda: total(settings, "scoring_learner_leader") == 2, what="the learners")
    produce(settings, messages, realtime=True)


def served_values(
    settings: Settings, use_case: UseCase[Any, Any], events: list[dict[str, Any]]
) -> list[float]:
    """What the worker served for each event, in their order (one prediction per event)."""
    by_id: dict[str, float] = {}
    for prediction in predictions(settings, use_case.name):
        value = getattr(prediction, use_case.output_field)
        assert value is not None and by_id.setdefault(prediction.event_id, value) == value
    assert len(by_id) == len(events)
    return [by_id[event["event_id"]] for event in events]
