"""Batch scoring and label joining: consumed messages in, records to publish out.

:class:`Scorer` holds no Kafka client: it takes the messages of one batch, does all its
Redis work in a few pipelined round trips, scores with the live model version and returns
what must be published. Publishing and acknowledging are the caller's job, in that order,
so delivery is at least once. Redelivered messages are recognised by their source
(topic/partition/offset) and give the same outcome again, never a second scoring or a
second join. Scored events and joined labels go to the use case's journal, in the same
atomic step, for the learner (:mod:`stream.runtime.learner`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from stream.records import DeadLetter, Rejection, parse, payload_text, prediction_json
from stream.runtime import metrics
from stream.runtime.served import ServedModels
from stream.runtime.state import Settlement, StateStore
from stream.settings import Settings
from stream.usecases import DEADLETTER_TOPIC, UseCase

log = logging.getLogger(__name__)


class Message(NamedTuple):
    """A consumed message, as the scorer needs it (a named tuple: one is made per message)."""

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

    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # topic, key, value
    predicted: list[tuple[str, float]] = field(default_factory=list)  # model, event's broker time

    def add(self, topic: str, key: str, value: bytes) -> None:
        self.records.append((topic, key.encode(), value))

    def delivered(self) -> None:
        """Count the end-to-end latency of the predictions, now that they are delivered."""
        now = time.time()
        histograms = {
            model: metrics.END_TO_END_LATENCY.labels(model) for model in {m for m, _ in self.predicted}
        }
        for model, since in self.predicted:
            histograms[model].observe(max(0.0, now - since))


class Scorer:
    """Scores event batches and joins label batches for a set of use cases."""

    def __init__(self, settings: Settings, state: StateStore, models: ServedModels) -> None:
        self.settings = settings
        self.state = state
        self.models = models
        self._partition_locks: dict[tuple[str, int], asyncio.Lock] = {}

    def _in_order(self, batch: Sequence[Message]) -> asyncio.Lock:
        """The lock that keeps one partition's batches reaching Redis in the order they came.

        Several batches are handled at once; a partition's batches each take this lock
        (first come, first served) around the step that claims or joins, so an entity's
        events change its state in their partition's order.
        """
        where = (batch[0].topic, batch[0].partition)
        return self._partition_locks.setdefault(where, asyncio.Lock())

    def dead_letter(self, outbox: Outbox, message: Message, reason: str, detail: str) -> None:
        """Keep a rejected message, with its reason, on the dead-letter topic."""
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
        outbox.add(self.settings.topic(DEADLETTER_TOPIC), message.source, record.to_json())
        metrics.DEAD_LETTERS.labels(message.topic, reason).inc()
        log.warning("dead letter %s at %s: %s", reason, message.source, detail)

    def _check_time(self, ts: dt.datetime, now: float) -> Rejection | None:
        age = now - ts.timestamp()
        if age < -self.settings.max_clock_skew_seconds:
            return Rejection(
                reason="out_of_range", detail=f"ts {ts.isoformat()} is {-age:.0f} s in the future"
            )
        if self.settings.max_event_age_seconds and age > self.settings.max_event_age_seconds:
            return Rejection(reason="late_event", detail=f"ts {ts.isoformat()} is {age:.0f} s old")
        return None

    async def score(self, use_case: UseCase[Any, Any], batch: Sequence[Message]) -> Outbox:
        """Validate, featurise and score a batch of events; one prediction per new event id."""
        outbox = Outbox()
        now = time.time()
        valid = []
        for message in batch:
            event = parse(use_case.event_type, message.value)
            if isinstance(event, Rejection):
                self.dead_letter(outbox, message, event.reason, event.detail)
            elif (untimely := self._check_time(event.ts, now)) is not None:
                self.dead_letter(outbox, message, untimely.reason, untimely.detail)
            else:
                valid.append((message, event, use_case.entity(event)))

        observations = [
            (event.event_id, entity, m.source, use_case.observe(event)) for m, event, entity in valid
        ]
        async with self._in_order(batch):
            claims = await self.state.observe(use_case.name, observations)
        to_score = []
        prediction_topic = self.settings.topic(use_case.prediction_topic)
        for (message, event, entity), claim in zip(valid, claims, strict=True):
            if claim.source != message.source:
                self.dead_letter(
                    outbox,
                    message,
                    "duplicate_event",
                    f"event id {event.event_id} was first read at {claim.source}",
                )
            elif claim.status != "claimed":
                # A redelivery of an event already scored: publish the same prediction again.
                outbox.add(prediction_topic, entity, claim.prediction)
                metrics.EVENTS.labels(message.topic, "redelivered").inc()
            else:
                if claim.prior.is_out_of_order(event.ts.timestamp()):
                    metrics.OUT_OF_ORDER.labels(use_case.name).inc()
                    log.debug("out-of-order event %s at %s", event.event_id, message.source)
                to_score.append((message, event, entity, use_case.features(event, claim.prior)))

        if not to_score:
            return outbox
        served = self.models[use_case.name]
        outputs = served.model.predict_many([x for _, _, _, x in to_score])
        scored_at = dt.datetime.now(dt.UTC)
        scored_text = scored_at.isoformat().replace("+00:00", "Z")
        scored_ts = scored_at.timestamp()
        metrics.SCORING_LATENCY.labels(use_case.name).observe(scored_ts - now)
        records = []
        for (message, event, entity, x), y in zip(to_score, outputs, strict=True):
            latency = max(0.0, scored_ts - message.timestamp) if message.timestamp else 0.0
            prediction = prediction_json(
                event.event_id,
                use_case.name,
                served.version,
                scored_text,
                round(latency * 1000, 3),
                entity,
                use_case.output_field,
                y,
            )
            pending = orjson.dumps(
                {
                    "x": x,
                    "y_pred": y,
                    "entity": entity,
                    "model_version": served.version,
                    "scored_at": scored_ts,
                }
            )
            records.append((event.event_id, prediction, pending))
            outbox.add(prediction_topic, entity, prediction)
            if message.timestamp:
                outbox.predicted.append((use_case.name, message.timestamp))
        await self.state.record(use_case.name, records)
        metrics.PREDICTIONS.labels(use_case.name).inc(len(records))
        metrics.EVENTS.labels(batch[0].topic, "scored").inc(len(records))
        return outbox

    async def join(self, use_case: UseCase[Any, Any], batch: Sequence[Message]) -> Outbox:
        """Join labels to the features and prediction cached at scoring time, each once.

        A joined label goes to the use case's journal, where the learner learns it.
        """
        outbox = Outbox()
        valid = []
        for message in batch:
            label = parse(use_case.label_type, message.value)
            if isinstance(label, Rejection):
                self.dead_letter(outbox, message, label.reason, label.detail)
                metrics.LABELS.labels(use_case.name, label.reason).inc()
            else:
                valid.append((message, label))
        targets = [float(use_case.target(label)) for _, label in valid]
        labels = [
            (label.event_id, message.source, _parked(message, y), y)
            for (message, label), y in zip(valid, targets, strict=True)
        ]
        async with self._in_order(batch):
            settlements = await self.state.settle(use_case.name, labels, self.settings.label_wait_seconds)
        await self._conclude(use_case, outbox, valid, settlements)
        return outbox

    async def unpark(self, use_case: UseCase[Any, Any], limit: int = 1000) -> Outbox:
        """Join the parked labels whose event is scored now; dead-letter those that waited too long."""
        outbox = Outbox()
        concluded = []
        for settlement in await self.state.unpark(use_case.name, limit):
            if settlement.parked is not None:
                message = Message(**settlement.parked["message"], value=settlement.parked["value"].encode())
                concluded.append(
                    ((message, use_case.label_type.model_validate_json(message.value)), settlement)
                )
        await self._conclude(use_case, outbox, [m for m, _ in concluded], [s for _, s in concluded])
        return outbox

    async def _conclude(
        self,
        use_case: UseCase[Any, Any],
        outbox: Outbox,
        labels: Sequence[tuple[Message, Any]],
        settlements: Sequence[Settlement],
    ) -> None:
        joined = []
        outcomes: Counter[str] = Counter()
        delay = metrics.LABEL_DELAY.labels(use_case.name)
        now = time.time()
        for (message, label), settlement in zip(labels, settlements, strict=True):
            outcome = settlement.outcome
            if outcome == "learn" and settlement.pending is not None:
                # Joined: the label is in the journal, for the learner. Its value also
                # feeds the entity's label statistic, which later events' features read.
                joined.append((settlement.pending["entity"], float(use_case.target(label))))
                if "scored_at" in settlement.pending:
                    delay.observe(max(0.0, now - settlement.pending["scored_at"]))
                outcome = "joined"
            elif outcome not in ("parked", "redelivered"):
                detail = _LABEL_DETAIL[outcome].format(label.event_id, self.settings.label_wait_seconds)
                self.dead_letter(outbox, message, outcome, detail)
            outcomes[outcome] += 1
        for outcome, count in outcomes.items():
            metrics.LABELS.labels(use_case.name, outcome).inc(count)
        if joined:
            await self.state.update(use_case.name, "label", joined)


def _parked(message: Message, y: float) -> bytes:
    """What a parked label keeps: enough to join it, or dead-letter it, later."""
    where = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
    return orjson.dumps({"source": message.source, "message": where, "value": message.value.decode(), "y": y})


_LABEL_DETAIL = {
    "duplicate_label": "event {} has already been learned from another label",
    "unknown_event": "no event with id {} was scored within {} s of its label",
    "expired_event": "event {} waited longer than the label TTL",
}
