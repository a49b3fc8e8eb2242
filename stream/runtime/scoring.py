"""Batch scoring: consumed events in, predictions to publish out.

:class:`Scorer` holds no Kafka client: it takes the events of one batch, does all its Redis
work in two round trips (claim, record), scores with the live model version and returns
what must be published. Publishing and acknowledging are the caller's job, in that order,
so delivery is at least once. A redelivered event is recognised by its source
(topic/partition/offset) and gets the same prediction again, never a second scoring.
Scored events go to the use case's journal, in the same atomic step, for the learner
(:mod:`stream.runtime.learner`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson

from models.online import Features
from stream.records import Rejection, parse, prediction_json
from stream.runtime import metrics
from stream.runtime.keys import entity_key
from stream.runtime.outbox import Message, Outbox, PartitionOrder
from stream.runtime.served import Served, ServedModels
from stream.runtime.state import Arrival, Pending, Scored, StateStore
from stream.settings import Settings
from stream.usecases import DEADLETTER_TOPIC, UseCase, entity_name

log = logging.getLogger(__name__)


class Scorer:
    """Scores event batches for a set of use cases; one prediction per event id."""

    def __init__(self, settings: Settings, state: StateStore, models: ServedModels) -> None:
        self.settings = settings
        self.state = state
        self.models = models
        self._order = PartitionOrder()
        self._dead_letters = settings.topic(DEADLETTER_TOPIC)

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
                outbox.dead_letter(self._dead_letters, message, event.reason, event.detail)
            elif (untimely := self._check_time(event.ts, now)) is not None:
                outbox.dead_letter(self._dead_letters, message, untimely.reason, untimely.detail)
            else:
                valid.append((message, event, use_case.entity(event)))

        arrivals = [
            Arrival(event.event_id, entity_key(ids), m.source, use_case.features.observe(event))
            for m, event, ids in valid
        ]
        async with self._order.of(batch):
            claims = await self.state.observe(use_case, arrivals)
        to_score = []
        prediction_topic = self.settings.topic(use_case.prediction_topic)
        for (message, event, ids), arrival, claim in zip(valid, arrivals, claims, strict=True):
            if claim.source != message.source:
                outbox.dead_letter(
                    self._dead_letters,
                    message,
                    "duplicate_event",
                    f"event id {event.event_id} was first read at {claim.source}",
                )
            elif claim.status != "claimed":
                # A redelivery of an event already scored: publish the same prediction again.
                outbox.add(prediction_topic, entity_name(ids), claim.prediction)
                metrics.EVENTS.labels(message.topic, "redelivered").inc()
            else:
                if claim.prior.is_out_of_order(event.ts.timestamp()):
                    metrics.OUT_OF_ORDER.labels(use_case.name).inc()
                    log.debug("out-of-order event %s at %s", event.event_id, message.source)
                x = use_case.features.compute(event, claim.prior)
                to_score.append((message, event, entity_name(ids), arrival.entity, x))

        if not to_score:
            return outbox
        served_by, outputs = self._predict(use_case, to_score)
        scored_at = dt.datetime.now(dt.UTC)
        scored_text = scored_at.isoformat().replace("+00:00", "Z")
        scored_ts = scored_at.timestamp()
        metrics.SCORING_LATENCY.labels(use_case.name).observe(scored_ts - now)
        records = []
        for (message, event, name, key, x), served, y in zip(to_score, served_by, outputs, strict=True):
            latency = max(0.0, scored_ts - message.timestamp) if message.timestamp else 0.0
            prediction = prediction_json(
                event.event_id,
                use_case.name,
                served.version,
                scored_text,
                round(latency * 1000, 3),
                name,
                use_case.output_field,
                y,
                served.arm,
            )
            pending = Pending(x=x, y_pred=y, entity=key, model_version=served.version, scored_at=scored_ts)
            records.append(Scored(event.event_id, key, prediction, orjson.dumps(pending)))
            outbox.add(prediction_topic, name, prediction)
            if message.timestamp:
                outbox.predicted.append((use_case.name, message.timestamp))
        await self.state.record(use_case, records, scored_ts)
        canaries = sum(served.arm == "canary" for served in served_by)
        metrics.PREDICTIONS.labels(use_case.name, "live").inc(len(records) - canaries)
        if canaries:
            metrics.PREDICTIONS.labels(use_case.name, "canary").inc(canaries)
        metrics.EVENTS.labels(batch[0].topic, "scored").inc(len(records))
        return outbox

    def _predict(
        self, use_case: UseCase[Any, Any], to_score: Sequence[tuple[Any, Any, str, Any, Features]]
    ) -> tuple[list[Served], list[float]]:
        """The version serving each event (its entity's arm) and its prediction, one
        ``predict_many`` per version."""
        live, canary = self.models[use_case.name], self.models.canary(use_case.name)
        if canary is None:
            return [live] * len(to_score), live.model.predict_many([x for *_, x in to_score])
        served_by = [canary if canary.serves(name) else live for _, _, name, _, _ in to_score]
        outputs = [0.0] * len(to_score)
        for served in (live, canary):
            at = [i for i, by in enumerate(served_by) if by is served]
            for i, y in zip(at, served.model.predict_many([to_score[i][4] for i in at]), strict=True):
                outputs[i] = y
        return served_by, outputs
