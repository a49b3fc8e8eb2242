"""What a bench run measures against: a fresh broker, Tansu or Apache Kafka, and a fresh Redis.

Tansu (the local stack's) is the default. ``apache-kafka`` is Apache Kafka 0.9.0.1
(:mod:`bench.apache_kafka`), the only Apache Kafka the registries here hold: the same load
on a real Apache Kafka, with what its clients need given as ``SCORING_KAFKA_OPTIONS``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench import apache_kafka, measure
from stream.kafka import ensure_topics
from stream.settings import Settings
from stream.tools import localstack

BROKERS = ("tansu", "apache-kafka")
CACHE = Path.home() / ".cache" / "scoring"
"""Where ``apache-kafka`` keeps the distribution it fetches."""


@dataclass(frozen=True)
class Broker:
    """A running broker as the bench sees it."""

    bootstrap: str
    pids: tuple[int, ...]
    """Its processes, whose CPU counts as the broker's."""
    create_topics: Callable[[Sequence[str]], None]
    """Creates topics (full names) that do not exist yet."""
    kafka_options: str = ""
    """What its clients need: ``SCORING_KAFKA_OPTIONS``."""

    def cpu_seconds(self) -> float:
        return sum(measure.cpu_seconds(pid) for pid in self.pids)


@dataclass(frozen=True)
class Services:
    """A running broker and Redis."""

    broker: Broker
    redis_url: str
    redis_pid: int


@contextlib.contextmanager
def running(broker: str, work: Path, cache: Path = CACHE) -> Iterator[Services]:
    """A fresh broker of kind ``broker`` (one of :data:`BROKERS`) and a fresh Redis, their files
    in ``work``, for the ``with`` block."""
    if broker == "apache-kafka":
        with (
            apache_kafka.running_kafka(work / "apache-kafka", cache) as kafka,
            localstack.running_redis(work / "redis") as redis_url,
        ):
            options = json.dumps(apache_kafka.CLIENT_OPTIONS)
            yield Services(
                Broker(kafka.bootstrap, kafka.pids, kafka.create_topics, options),
                redis_url,
                _pid(work / "redis" / "redis.pid"),
            )
        return
    with localstack.running_stack(work / "stack") as stack:
        settings = Settings.defaults().replace(kafka_bootstrap=stack.kafka_bootstrap)
        yield Services(
            Broker(
                stack.kafka_bootstrap,
                (_pid(work / "stack" / "broker.pid"),),
                partial(ensure_topics, settings),
            ),
            stack.redis_url,
            _pid(work / "stack" / "redis.pid"),
        )


def _pid(pid_file: Path) -> int:
    return int(pid_file.read_text())
