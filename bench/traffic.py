"""Kafka traffic of the benchmark: prefilling, paced producing, reading predictions, the broker floor.

Every consumer here is assigned its partitions (no group: no join delay) and reads from the
beginning of topics created before it starts.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from stream.kafka import kafka_config
from stream.settings import Settings
from stream.tools import simulator

WARMUP_TIMEOUT_SECONDS = 15.0
LINGER_MS = 5
"""librdkafka's default linger, used by every paced producer here. With 0, each message is a
request of its own: at 2,000 messages/s the local broker then burns a whole core, and the
latency measured is the broker's overload (p99 ~50 ms, against ~12 ms with 5 ms)."""


def producer(settings: Settings, linger_ms: int = 20) -> Producer:
    return Producer(kafka_config(settings, {"linger.ms": linger_ms}))


def prefill(settings: Settings, messages: Iterable[simulator.Message]) -> int:
    """Produce ``messages`` to their namespaced topics at full speed; returns how many were delivered."""
    stats = simulator.send(messages, producer(settings), settings.topic, realtime=False)
    if stats.failed:
        raise RuntimeError(f"prefill: {stats.failed} of {stats.total} messages were not delivered")
    return stats.total


@dataclass(frozen=True, slots=True)
class Paced:
    """One message of an offered load: logical topic, key, value, when it is due (s), event id."""

    topic: str
    key: bytes | None
    value: bytes
    at: float
    event_id: str | None


@dataclass
class Sent:
    """What :func:`send_paced` sent: ``time.time()`` of each event id, and how far behind its
    schedule it fell at worst (the broker not taking the messages as fast: its queue full)."""

    at: dict[str, float] = field(default_factory=dict)
    behind_seconds: float = 0.0


def send_paced(settings: Settings, messages: Sequence[Paced]) -> Sent:
    """Produce each message at its ``at`` (seconds from now), or as soon as the producer's queue
    has room again."""
    out = producer(settings, linger_ms=LINGER_MS)
    names = {m.topic: settings.topic(m.topic) for m in messages}
    sent = Sent()
    begin = time.monotonic()
    for message in messages:
        while (wait := begin + message.at - time.monotonic()) > 0:
            time.sleep(min(wait, 0.01))
        while True:
            try:
                out.produce(names[message.topic], message.value, message.key)
                break
            except BufferError:  # the local queue is full: wait for deliveries
                out.poll(0.01)
        if message.event_id is not None:
            sent.at[message.event_id] = time.time()
        sent.behind_seconds = max(sent.behind_seconds, -wait)
        out.poll(0)
    if out.flush(30.0):
        raise RuntimeError("paced producer: messages undelivered after 30 s")
    return sent


def _assigned_consumer(settings: Settings, topics: Sequence[str], **config: str | int) -> Consumer:
    consumer = Consumer(
        kafka_config(settings, {"group.id": "bench-reader", "enable.auto.commit": False, **config})
    )
    metadata = consumer.list_topics(timeout=10)
    partitions = [
        TopicPartition(topic, p, OFFSET_BEGINNING)
        for topic in topics
        for p in metadata.topics[topic].partitions
    ]
    consumer.assign(partitions)
    return consumer


@dataclass
class PredictionReader:
    """Reads prediction topics: how many, when the first and the last were produced, and when each
    event's was, per event id, when asked.

    A broker that keeps no CreateTime (Kafka 0.9): the span from first to last is that of the
    ``scored_at`` the records carry (the scorer's clock, like a CreateTime), since predictions read
    in one fetch would arrive at one time; an event's, for its latency, is when it is read.
    """

    settings: Settings
    topics: Sequence[str]
    count: int = 0
    first: float = float("inf")
    last: float = float("-inf")
    by_event: dict[str, float] = field(default_factory=dict)
    track_events: bool = False

    def __post_init__(self) -> None:
        self._consumer = _assigned_consumer(self.settings, self.topics)

    def reset(self, *, track_events: bool) -> None:
        """Forget what was read so far (the position stays) and say whether to keep event ids."""
        self.count, self.first, self.last = 0, float("inf"), float("-inf")
        self.by_event, self.track_events = {}, track_events

    def poll(self, timeout: float = 0.05) -> None:
        """Read what has arrived, waiting at most ``timeout`` seconds for a first message."""
        first = self._consumer.poll(timeout)  # returns as soon as one is there
        if first is None:
            return
        for message in [first, *self._consumer.consume(num_messages=20_000, timeout=0)]:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            kind, ms = message.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE:
                # Set by the scorer's producer, in whole milliseconds: +0.5 ms is unbiased.
                produced = seen = (ms + 0.5) / 1000.0
            else:
                produced, seen = scored_at(message.value() or b"{}"), time.time()
            self.count += 1
            self.first = min(self.first, produced)
            self.last = max(self.last, produced)
            if self.track_events:
                self.by_event.setdefault(orjson.loads(message.value() or b"{}")["event_id"], seen)

    def close(self) -> None:
        self._consumer.close()


def scored_at(prediction: bytes) -> float:
    """The epoch seconds of a prediction's ``scored_at``.

    >>> scored_at(b'{"event_id": "e1", "scored_at": "2026-01-05T03:00:00.250000Z"}')
    1767582000.25
    """
    return dt.datetime.fromisoformat(orjson.loads(prediction)["scored_at"]).timestamp()


def broker_floor(settings: Settings, topic: str, rate: float, seconds: float) -> list[float]:
    """Round trips (s) of small messages, produce -> consume, at ``rate`` for ``seconds``.

    The consumer's fetch waits at most 10 ms for data; each message carries its send time.
    """
    consumer = _assigned_consumer(settings, [topic], **{"fetch.wait.max.ms": 10})
    out = producer(settings, linger_ms=LINGER_MS)
    latencies: list[float] = []
    received = threading.Event()
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            message = consumer.poll(0.05)  # returns as soon as a message is there
            if message is None:
                continue
            now = time.time()
            if message.error() is None and message.value() != b"warmup":
                latencies.append(now - float(message.value() or b"0"))
            received.set()

    reader = threading.Thread(target=consume, name="floor-reader")
    reader.start()
    try:
        deadline = time.monotonic() + WARMUP_TIMEOUT_SECONDS
        while not received.is_set():  # until the consumer fetches: the first round trips are not the floor
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker floor: nothing consumed within {WARMUP_TIMEOUT_SECONDS:.0f} s")
            out.produce(topic, b"warmup")
            out.poll(0)
            received.wait(0.1)
        n = round(rate * seconds)
        begin = time.monotonic()
        for i in range(n):
            while (wait := begin + i / rate - time.monotonic()) > 0:
                time.sleep(min(wait, 0.01))
            out.produce(topic, repr(time.time()).encode())
            out.poll(0)
        out.flush(30.0)
        deadline = time.monotonic() + 30.0
        while len(latencies) < n and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        reader.join()
        consumer.close()
    return latencies
