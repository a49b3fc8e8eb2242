"""What a step consumes and what it leaves to publish: messages, outboxes, dead letters.

A step (scoring events, joining labels) takes the :class:`Message` s of one batch and
returns an :class:`Outbox`: the records to publish before the batch is acknowledged, so
delivery is at least once. A rejected message is not an exception but a record of its own
(errors as data): a dead letter with a stable reason, counted and logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from stream.kafka import ProducerRecord
from stream.records import DeadLetter, payload_text
from stream.runtime import metrics

log = logging.getLogger(__name__)


class Message(NamedTuple):
    """A consumed message, as the steps need it (a named tuple: one is made per message)."""

    topic: str
    partition: int
    offset: int
    value: bytes
    timestamp: float | None = None  # broker timestamp, seconds

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass
class Outbox:
    """Records a batch produced, to be published before the batch is acknowledged."""

    records: list[ProducerRecord] = field(default_factory=list)
    predicted: list[tuple[str, float]] = field(default_factory=list)  # model, event's broker time

    def add(self, topic: str, key: str, value: bytes) -> None:
        self.records.append((topic, key.encode(), value))

    def dead_letter(self, topic: str, message: Message, reason: str, detail: str) -> None:
        """Keep a rejected message, with its reason, on the dead-letter ``topic``."""
        payload, encoding = payload_text(message.value)
        record = DeadLetter(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            reason=reason,
            detail=detail,
            payload=payload,
            payload_encoding=encoding,
            at=dt.datetime.now(dt.UTC),
        )
        self.add(topic, message.source, record.to_json())
        metrics.DEAD_LETTERS.labels(message.topic, reason).inc()
        log.warning("dead letter %s at %s: %s", reason, message.source, detail)

    def delivered(self) -> None:
        """Count the end-to-end latency of the predictions, now that they are delivered."""
        now = time.time()
        histograms = {
            model: metrics.END_TO_END_LATENCY.labels(model) for model in {m for m, _ in self.predicted}
        }
        for model, since in self.predicted:
            histograms[model].observe(max(0.0, now - since))


class TopicOrder:
    """Keeps a topic's batches reaching Redis in the order they came.

    Several batches are handled at once; a topic's share of each takes its lock (first come,
    first served) around the step that claims or joins, so an entity's events (which share a
    partition of the topic) change its state in their order.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def of(self, batch: Sequence[Message]) -> asyncio.Lock:
        """The lock of the topic ``batch`` (one topic's messages) came from."""
        return self._locks.setdefault(batch[0].topic, asyncio.Lock())
