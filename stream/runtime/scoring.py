"""Scoring events: consumed batches, or one request of the HTTP API, in; predictions out.

:class:`Scorer` holds no Kafka client. Its steps are shared by the worker and the API
(:mod:`stream.api`): :meth:`~Scorer.accept` validates an event, :meth:`~Scorer.claim`
claims its id and applies it to its entity's state in Redis (one round trip for a batch),
and :meth:`~Scorer.predict` scores claimed events with the live model version and records
them (a second round trip), the journal included. :meth:`~Scorer.score` is the worker's
batch: it returns what must be published; publishing and acknowledging are the caller's
job, in that order, so delivery is at least once. A redelivered event is recognised by its
source (topic/partition/offset) and gets the same prediction again, never a second scoring;
an event the API scored first (source :data:`API_SOURCE`) is not scored again either, and
its prediction, which the API published, is not published twice.

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
from stream.records import Rejection, parse, prediction_json
from stream.runtime import metrics
from stream.runtime.keys import EntityKey, entity_key, observed, recorded_name
from stream.runtime.outbox import Message, Outbox, PartitionOrder
from stream.runtime.served import Served, ServedModels
from stream.runtime.state import Arrival, Claim, Pending, Scored, StateStore
from stream.settings import Settings
from stream.usecases import DEADLETTER_TOPIC, UseCase, entity_name

log = logging.getLogger(__name__)

API_SOURCE = "api"
"""Where an event scored through the HTTP API was read (a consumed event's source is its
``topic/partition/offset``): the same for every API process, so that a request repeated after
a process died between claiming and recording finds its own claim and is scored from it."""


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
    """An event's prediction as recorded in Redis, its entity's name (the prediction's key),
    and whether this scoring recorded it (``False``: an earlier scoring of the claim did)."""

    prediction: bytes
    entity: str
    first: bool


class Scorer:
    """Scores events for a set of use cases; one prediction per event id."""

    def __init__(self, settings: Settings, state: StateStore, models: ServedModels) -> None:
        self.settings = settings
        self.state = state
        self.models = models
        self._order = PartitionOrder()
        self._dead_letters = settings.topic(DEADLETTER_TOPIC)
        self._secret = settings.pii_secret

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

    async def claim(self, use_case: UseCase[Any, Any], events: Sequence[Accepted]) -> list[Claim]:
        """Claim each event's id and apply the event to its entity's state, in one round trip.

        An id claimed before is left as it was: its claim says by whom (its source), and
        whether it was scored since.
        """
        return await self.state.observe(
            use_case,
            [
                Arrival(a.event.event_id, a.key, a.source, observed(use_case.features, a.event, self._secret))
                for a in events
            ],
        )

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
        self, use_case: UseCase[Any, Any], claimed: Sequence[tuple[Accepted, Claim]], now: float
    ) -> list[Predicted]:
        """Score claimed events with the version serving each (the live one, or a canary for its
        entities); record and journal them.

        Each event is scored from the entity state its claim holds, so scoring a claim again
        (a redelivery that finds it unrecorded) gives the same features. ``now`` is when the
        events were accepted (the scoring latency's start).
        """
        xs = []
        for accepted, claim in claimed:
            if claim.prior.is_out_of_order(accepted.event.ts.timestamp()):
                metrics.OUT_OF_ORDER.labels(use_case.name).inc()
                log.debug("out-of-order event %s at %s", accepted.event.event_id, accepted.source)
            xs.append(use_case.features.compute(accepted.event, claim.prior))
        names = [entity_name(accepted.ids) for accepted, _ in claimed]
        served_by, outputs = self._predict(use_case, names, xs)
        scored_at = dt.datetime.now(dt.UTC)
        scored_text = scored_at.isoformat().replace("+00:00", "Z")
        scored_ts = scored_at.timestamp()
        metrics.SCORING_LATENCY.labels(use_case.name).observe(scored_ts - now)
        records = []
        published = []
        for ((event, _, key, _, arrived), _), name, served, x, y in zip(
            claimed, names, served_by, xs, outputs, strict=True
        ):
            latency = max(0.0, scored_ts - arrived) if arrived else 0.0
            head = (event.event_id, use_case.name, served.version, scored_text, round(latency * 1000, 3))
            tail = (use_case.output_field, y, served.arm)
            prediction = prediction_json(*head, name, *tail)
            published.append(prediction)
            if self._secret is not None:  # recorded naming its entity by its key: no clear id in Redis
                prediction = prediction_json(*head, key, *tail)
            pending = Pending(x=x, y_pred=y, entity=key, model_version=served.version, scored_at=scored_ts)
            records.append(Scored(event.event_id, key, prediction, orjson.dumps(pending)))
        earlier = await self.state.record(use_case, records, scored_ts)
        canaries = sum(served.arm == "canary" for served in served_by)
        metrics.PREDICTIONS.labels(use_case.name, "live").inc(len(records) - canaries)
        if canaries:
            metrics.PREDICTIONS.labels(use_case.name, "canary").inc(canaries)
        return [
            tuple.__new__(
                Predicted, (self.published(accepted, before) if before else first, name, not before)
            )
            for (accepted, _), first, name, before in zip(claimed, published, names, earlier, strict=True)
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
        async with self._order.of(batch):
            claims = await self.claim(use_case, [accepted for _, accepted in valid])
        to_score = []
        prediction_topic = self.settings.topic(use_case.prediction_topic)
        for (message, accepted), claim in zip(valid, claims, strict=True):
            if claim.source == API_SOURCE:
                # The API scored it (or is scoring it) and publishes its prediction itself.
                metrics.EVENTS.labels(message.topic, "scored_by_api").inc()
            elif claim.source != message.source:
                outbox.dead_letter(
                    self._dead_letters,
                    message,
                    "duplicate_event",
                    f"event id {accepted.event.event_id} was first read at {claim.source}",
                )
            elif claim.status != "claimed":
                # A redelivery of an event already scored: publish the same prediction again.
                outbox.add(
                    prediction_topic, entity_name(accepted.ids), self.published(accepted, claim.prediction)
                )
                metrics.EVENTS.labels(message.topic, "redelivered").inc()
            else:
                to_score.append((accepted, claim))
        if not to_score:
            return outbox
        for (accepted, _), predicted in zip(
            to_score, await self.predict(use_case, to_score, now), strict=True
        ):
            outbox.add(prediction_topic, predicted.entity, predicted.prediction)
            if accepted.arrived:
                outbox.predicted.append((use_case.name, accepted.arrived))
        metrics.EVENTS.labels(batch[0].topic, "scored").inc(len(to_score))
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
