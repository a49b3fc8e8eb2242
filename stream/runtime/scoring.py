"""Scoring events: consumed batches, or one request of the HTTP API, in; predictions out.

:class:`Scorer` holds no Kafka client. Its steps are shared by the worker and the API
(:mod:`stream.api`): :meth:`~Scorer.accept` validates an event, :meth:`~Scorer.predict`
reads the events' entities' states from Redis (one round trip for a batch), applies each
event to its entity's state and scores it with the version serving it, then records it,
writes the state and journals it (a second round trip, atomic per event and entity).
:meth:`~Scorer.score` is the worker's batch: it returns what must be published; publishing
and acknowledging are the caller's job, in that order, so delivery is at least once. A
redelivered event is recognised by its source (topic/partition/offset) and gets the same
prediction again, never a second scoring; an event the API scored first (source
:data:`API_SOURCE`) is not scored again either, and its prediction, which the API
published, is not published twice.

With a PII key (``SCORING_PII_KEY``), entities are keyed by a keyed hash of their ids
(:func:`~stream.runtime.keys.entity_key`), and the prediction recorded in Redis names its
entity by that key: the published prediction, which downstream consumers read, keeps the
entity's clear name (:meth:`Scorer.published` gives it back to a prediction read again).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from models.online import Features
from stream.features import EntityState
from stream.records import Rejection, parse, prediction_json
from stream.runtime import metrics
from stream.runtime.keys import EntityKey, entity_key, observed, recorded_name
from stream.runtime.outbox import Message, Outbox, TopicOrder
from stream.runtime.pending import Recorded, layout_of, scored_text
from stream.runtime.served import Served, ServedModels
from stream.runtime.state import Arrival, Changed, Claim, Scored, StateStore, entity_layout
from stream.settings import Settings
from stream.usecases import DEADLETTER_TOPIC, UseCase, entity_name

log = logging.getLogger(__name__)

API_SOURCE = "api"
"""Where an event scored through the HTTP API was read (a consumed event's source is its
``topic/partition/offset``): the same for every API process, so that a repeated request is
the same event whichever process answers it (with several buckets, one repeated after a
process died between routing the id and recording it finds the route its own)."""


MAX_ROUNDS = 100
"""How many times a batch's events are read and scored again, their entities having changed
meanwhile, before the batch fails (:mod:`stream.runtime.retry`): more would be a livelock."""


class Accepted(NamedTuple):
    """A valid event, ready to claim.

    Attributes
    ----------
    event
        The validated record.
    ids, key
        Its entity's ids, and their encoding in Redis keys (a keyed hash with a PII key).
    source
        Where it was read: ``topic/partition/offset``, or :data:`API_SOURCE`.
    arrived
        When it reached the service (epoch seconds: a message's broker timestamp, a
        request's receipt), if known: the prediction's ``latency_ms`` runs from there.
    """

    event: Any
    ids: tuple[str, ...]
    key: EntityKey
    source: str
    arrived: float | None


class Predicted(NamedTuple):
    """An event's prediction, made and recorded now, and its entity's name (the prediction's key)."""

    prediction: bytes
    entity: str


class Scorer:
    """Scores events for a set of use cases; one prediction per event id."""

    def __init__(self, settings: Settings, state: StateStore, models: ServedModels) -> None:
        self.settings = settings
        self.state = state
        self.models = models
        self._order = TopicOrder()
        self._dead_letters = settings.topic(DEADLETTER_TOPIC)
        self._secret = settings.pii_secret
        for name in models.use_cases:
            metrics.RESCORED.labels(name)  # exported from the start: 0 until an entity changes mid-batch

    def accept(
        self, use_case: UseCase[Any, Any], payload: bytes, source: str, arrived: float | None, now: float
    ) -> Accepted | Rejection:
        """Validate a payload as an event of ``use_case`` at time ``now``, or say why it is rejected."""
        event = parse(use_case.event_type, payload)
        if isinstance(event, Rejection):
            return event
        age = now - event.ts.timestamp()
        if age < -self.settings.max_clock_skew_seconds:
            return Rejection(
                reason="out_of_range", detail=f"ts {event.ts.isoformat()} is {-age:.0f} s in the future"
            )
        if self.settings.max_event_age_seconds and age > self.settings.max_event_age_seconds:
            return Rejection(reason="late_event", detail=f"ts {event.ts.isoformat()} is {age:.0f} s old")
        ids = use_case.entity(event)
        # tuple.__new__: a named tuple made without its Python-level constructor (one an event).
        return tuple.__new__(Accepted, (event, ids, entity_key(ids, self._secret), source, arrived))

    def recorded_entity(self, accepted: Accepted) -> str:
        """How a prediction recorded in Redis names ``accepted``'s entity: its name, or with a PII
        key its key."""
        return recorded_name(accepted.ids, self._secret)

    def published(self, accepted: Accepted, recorded: bytes) -> bytes:
        """A prediction recorded for ``accepted``'s entity, as it was published: naming the entity."""
        if self._secret is None:
            return recorded
        return orjson.dumps(orjson.loads(recorded) | {"entity": entity_name(accepted.ids)})

    async def predict(
        self, use_case: UseCase[Any, Any], events: Sequence[Accepted], now: float
    ) -> list[Predicted | Claim]:
        """Score each new event with the version serving it (the live one, or a canary for its
        entity); record and journal it. An event id recorded before (on a cluster, or routed
        by another message) keeps its first record: its claim says by whom (its source) and,
        recorded, its prediction.

        Each event is applied to its entity's state as read (after the batch's earlier events
        of that entity) and scored from the state before it; one whose entity changed in
        Redis meanwhile (another worker, the API, a label) is read and scored again. ``now``
        is when the events were accepted (the scoring latency's start).
        """
        outcomes: dict[int, Predicted | Claim] = {}
        todo = list(range(len(events)))
        for _ in range(MAX_ROUNDS):
            if not todo:
                break
            reading = await self.state.read(
                use_case, [Arrival(events[i].event.event_id, events[i].key, events[i].source) for i in todo]
            )
            new = []
            for i, claim in zip(todo, reading.claims, strict=True):
                if claim is None:
                    new.append(i)
                else:
                    outcomes[i] = claim
            scored = await self._score(use_case, [events[i] for i in new], reading.entities, now)
            todo = [i for i, outcome in zip(new, scored, strict=True) if outcome == "changed"]
            outcomes |= {i: outcome for i, outcome in zip(new, scored, strict=True) if outcome != "changed"}
            if todo:
                metrics.RESCORED.labels(use_case.name).inc(len(todo))
        if todo:
            raise RuntimeError(f"{use_case.name}: entities changed while scored, {MAX_ROUNDS} times over")
        return [outcomes[i] for i in range(len(events))]

    async def _score(
        self,
        use_case: UseCase[Any, Any],
        events: Sequence[Accepted],
        entities: dict[EntityKey, bytes],
        now: float,
    ) -> list[Predicted | Claim | Changed]:
        """Apply each event to its entity's state as ``entities`` hold them (as read), score it
        and record it: see :meth:`predict`."""
        if not events:
            return []
        features, packing = use_case.features, entity_layout(use_case.features)
        states: dict[EntityKey, EntityState] = {}
        stored = dict(entities)
        xs, reads, writes, out_of_order = [], [], [], []
        for accepted in events:
            key = accepted.key
            state = states.get(key)
            if state is None:
                state = states[key] = packing.unpack(stored[key])
            prior = state.observe(observed(features, accepted.event, self._secret), features.decay)
            out_of_order.append(prior.is_out_of_order(accepted.event.ts.timestamp()))
            reads.append(stored[key])
            stored[key] = packing.pack(state)
            writes.append(stored[key])
            xs.append(features.compute(accepted.event, prior))
        names = [entity_name(accepted.ids) for accepted in events]
        served_by, outputs = self._predict(use_case, names, xs)
        # The published time (to the microsecond) is the recorded one: the journal's scored_at
        # is its prediction's.
        scored_ts = dt.datetime.now(dt.UTC).timestamp()
        scored = scored_text(scored_ts)
        metrics.SCORING_LATENCY.labels(use_case.name).observe(scored_ts - now)
        layout = layout_of(use_case)
        records, predictions = [], []
        for accepted, name, served, x, y, read, write in zip(
            events, names, served_by, xs, outputs, reads, writes, strict=True
        ):
            event, _, key, source, arrived = accepted
            latency = round(max(0.0, scored_ts - arrived) * 1000, 3) if arrived else 0.0
            predictions.append(
                prediction_json(
                    event.event_id,
                    use_case.name,
                    served.version,
                    scored,
                    latency,
                    name,
                    use_case.output_field,
                    y,
                    served.arm,
                )
            )
            # Recorded naming its entity as Redis may (with a PII key, by its key: no clear id).
            made = Recorded(served.version, served.arm, scored_ts, latency, y, self.recorded_entity(accepted))
            records.append(Scored(event.event_id, key, source, read, write, layout.encode(x, made, key)))
        outcomes = await self.state.score(use_case, records, scored_ts)
        recorded = [i for i, outcome in enumerate(outcomes) if outcome is None]
        canaries = sum(served_by[i].arm == "canary" for i in recorded)
        metrics.PREDICTIONS.labels(use_case.name, "live").inc(len(recorded) - canaries)
        if canaries:
            metrics.PREDICTIONS.labels(use_case.name, "canary").inc(canaries)
        for i in recorded:
            if out_of_order[i]:
                metrics.OUT_OF_ORDER.labels(use_case.name).inc()
                log.debug("out-of-order event %s at %s", events[i].event.event_id, events[i].source)
        return [
            tuple.__new__(Predicted, (first, name)) if outcome is None else outcome
            for first, name, outcome in zip(predictions, names, outcomes, strict=True)
        ]

    async def score(self, use_case: UseCase[Any, Any], batch: Sequence[Message]) -> Outbox:
        """Validate, featurise and score a batch of consumed events; one prediction per new event id."""
        outbox = Outbox()
        now = time.time()
        valid = []
        for message in batch:
            accepted = self.accept(use_case, message.value, message.source, message.timestamp, now)
            if isinstance(accepted, Rejection):
                outbox.dead_letter(self._dead_letters, message, accepted.reason, accepted.detail)
            else:
                valid.append((message, accepted))
        if not valid:
            return outbox
        # From the read to the record: an entity's events change its state in their order.
        async with self._order.of(batch):
            outcomes = await self.predict(use_case, [accepted for _, accepted in valid], now)
        prediction_topic = self.settings.topic(use_case.prediction_topic)
        scored = 0
        for (message, accepted), outcome in zip(valid, outcomes, strict=True):
            if isinstance(outcome, Predicted):
                outbox.add(prediction_topic, outcome.entity, outcome.prediction)
                if accepted.arrived:
                    outbox.predicted.append((use_case.name, accepted.arrived))
                scored += 1
            elif outcome.source == API_SOURCE:
                # The API scored it (or is scoring it) and publishes its prediction itself.
                metrics.EVENTS.labels(message.topic, "scored_by_api").inc()
            elif outcome.source != message.source:
                outbox.dead_letter(
                    self._dead_letters,
                    message,
                    "duplicate_event",
                    f"event id {accepted.event.event_id} was first read at {outcome.source}",
                )
            else:
                # A redelivery of an event already scored: publish the same prediction again.
                outbox.add(
                    prediction_topic, entity_name(accepted.ids), self.published(accepted, outcome.prediction)
                )
                metrics.EVENTS.labels(message.topic, "redelivered").inc()
        if scored:
            metrics.EVENTS.labels(batch[0].topic, "scored").inc(scored)
        return outbox

    def _predict(
        self, use_case: UseCase[Any, Any], names: Sequence[str], xs: Sequence[Features]
    ) -> tuple[list[Served], list[float]]:
        """The version serving each event (the arm of its entity, named ``names[i]``) and its
        prediction, one ``predict_many`` per version."""
        live, canary = self.models[use_case.name], self.models.canary(use_case.name)
        if canary is None:
            return [live] * len(xs), live.model.predict_many(xs)
        served_by = [canary if canary.serves(name) else live for name in names]
        outputs = [0.0] * len(xs)
        for served in (live, canary):
            at = [i for i, by in enumerate(served_by) if by is served]
            for i, y in zip(at, served.model.predict_many([xs[i] for i in at]), strict=True):
                outputs[i] = y
        return served_by, outputs
