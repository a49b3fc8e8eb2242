"""Consuming the input topics in batches, acknowledged only once their output is delivered.

The worker's scoring path does not go through Faust's per-message stream machinery: it
costs about 70 µs a message (a do-nothing Faust agent with batching and manual acks tops
out near 14k messages/s here), more than the whole budget of a worker that scores 20k
events/s. A confluent-kafka consumer hands over whole batches fetched by librdkafka's own
thread, at about 1 µs a message; Faust still runs the worker around it (its lifecycle,
timers, the learners' tasks).

Delivery stays at least once: a batch's offsets are stored only after everything the
batch produced was delivered (and the batches before it too), and librdkafka commits stored
offsets every ``AUTO_COMMIT_MS``, when partitions are revoked, and on close. A worker that
dies mid-batch leaves those messages to the next owner of their partitions, which the
scorer recognises by their source (topic/partition/offset).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from stream.kafka import KafkaLog, kafka_config
from stream.runtime import metrics
from stream.runtime.outbox import Message
from stream.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[Message]], Awaitable[None]]

AUTO_COMMIT_MS = 1000
# Batches handled at once. Two overlap one batch's Redis and broker waits with the next one's
# scoring; more only split a light load into more, smaller batches that queue for the event
# loop (README: Performance, the worker on Apache Kafka).
MAX_IN_FLIGHT = 2
# Prefetched messages librdkafka keeps per consumer: bounds the worker's memory.
PREFETCH_KBYTES = 32 * 1024


def consumer_config(settings: Settings) -> dict[str, str | int | float | bool]:
    """The worker's consumer: manual offset storing, the deployment's group and timeouts."""
    own = {
        "group.id": settings.consumer_group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": AUTO_COMMIT_MS,
        "session.timeout.ms": int(settings.session_timeout_seconds * 1000),
        "heartbeat.interval.ms": int(settings.heartbeat_interval_seconds * 1000),
        "fetch.wait.max.ms": settings.fetch_max_wait_ms,
        "queued.max.messages.kbytes": PREFETCH_KBYTES,
        # Topics are created before the worker subscribes; this only bounds how long a
        # topic created later goes unnoticed (librdkafka's default is 5 minutes).
        "topic.metadata.refresh.interval.ms": 30_000,
    }
    return kafka_config(settings, own)


class BatchConsumer:
    """Feeds batches of the subscribed topics to ``handle`` until :meth:`stop`.

    Parameters
    ----------
    settings
        Broker, group, batch size and window, fetch wait.
    topics
        The (namespaced) topics to consume.
    handle
        Processes a batch and returns once everything it produced is delivered; it must
        not raise (the service retries transient errors and dead-letters the rest
        itself). Up to ``MAX_IN_FLIGHT`` batches are handled at once, so the worker
        scores one while Redis or the broker works on another; their offsets are stored
        in batch order. ``handle`` keeps what must stay in order in order (the scorer
        claims a partition's events one batch after the other).
    """

    def __init__(self, settings: Settings, topics: Sequence[str], handle: Handler) -> None:
        self._settings = settings
        self._topics = list(topics)
        self._handle = handle
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopped.set()  # until run starts
        self._kafka_log = KafkaLog(settings.kafka_bootstrap)

    async def run(self) -> None:
        self._stopped.clear()
        consumer = Consumer({**consumer_config(self._settings), **self._kafka_log.options()})
        consumer.subscribe(self._topics, on_assign=_assigned, on_revoke=_unassigned, on_lost=_unassigned)
        in_flight: InFlight = deque()
        try:
            while not self._stopping.is_set():
                batch = await asyncio.to_thread(
                    consumer.consume, self._settings.batch_size, self._settings.batch_window_seconds
                )
                messages = [_message(m) for m in batch if _usable(m, self._kafka_log)]
                if messages:
                    handled = asyncio.ensure_future(self._handle(messages))
                    in_flight.append((handled, _next_offsets(messages)))
                await _store_delivered(consumer, in_flight, MAX_IN_FLIGHT)
            await _store_delivered(consumer, in_flight, 0)
        finally:
            await asyncio.to_thread(consumer.close)  # commits what was stored, leaves the group
            self._stopped.set()

    async def stop(self) -> None:
        """Finish the batches in hand, commit, and leave the group."""
        self._stopping.set()
        await self._stopped.wait()


InFlight = deque[tuple[asyncio.Future[None], list[TopicPartition]]]


async def _store_delivered(consumer: Consumer, in_flight: InFlight, keep: int) -> None:
    """Store the offsets of the handled batches, in order, until at most ``keep`` are in flight."""
    while in_flight and (in_flight[0][0].done() or len(in_flight) > keep):
        handled, offsets = in_flight.popleft()
        await handled
        try:
            consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # revoked meanwhile: their new owner consumes them again
            log.info("consumer: offsets not stored (%s); the partitions' new owner redelivers them", exc)


def _assigned(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
    metrics.ASSIGNED_PARTITIONS.inc(len(partitions))


def _unassigned(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
    metrics.ASSIGNED_PARTITIONS.dec(len(partitions))


def _usable(message: KafkaMessage, kafka_log: KafkaLog) -> bool:
    """Whether it is a message, not an error in its place (logged like librdkafka's own)."""
    error = message.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        kafka_log.error(error)
    return False


def _message(m: KafkaMessage) -> Message:
    kind, ms = m.timestamp()
    return Message(
        m.topic() or "", m.partition() or 0, m.offset() or 0, m.value() or b"", ms / 1000.0 if kind else None
    )


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """The offset after the last message of each partition: what to commit."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        last[(m.topic, m.partition)] = max(m.offset, last.get((m.topic, m.partition), -1))
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]
