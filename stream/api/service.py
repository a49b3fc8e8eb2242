"""What the scoring API does, without HTTP's plumbing: each call returns an :class:`Answer`.

Scoring an event (:meth:`ScoringApi.score`) takes the worker's steps
(:class:`~stream.runtime.scoring.Scorer`), with :data:`~stream.runtime.scoring.API_SOURCE` as
the event's source:

1. validate the body as the use case's event (422 with the dead-letter reason code);
2. score it as a worker does: read its entity's state, score it with the live version this
   process follows, then record it, write the state and journal it in one atomic step, so
   that its label joins and is learned as any other. An id recorded before keeps its first
   prediction: the same request again, or the same event read from the topic first, returns
   the prediction recorded then, byte for byte, and nothing is scored or published again
   (409 when the id was scored for another entity, or, with several Redis buckets, while a
   worker that claimed it has not recorded it yet);
3. answer, and publish it on the prediction topic. The answer does not wait for the broker
   (about a millisecond more): what makes the prediction the event's is its record, made
   already, which a repeated request returns. The publication is retried until the broker
   takes it, and a stopping process publishes what it holds first; only a process killed in
   the moment between recording and the broker's acknowledgement loses the publication (not
   the prediction, nor its label's learning). A worker that then reads the same event from
   its topic finds the API's record and neither scores nor publishes it: one prediction per
   event id across the API and the stream.

Each step is batched (:mod:`stream.api.batching`): the requests that arrive while Redis or the
broker answers one call share the next, as a worker's batches do, so that under load a round
trip serves many requests. Two requests for one new event racing (a client retrying while the
first is in flight, on one process or two) may both score the event; only the first recorded
is kept, answered to both and published once. Every process keeps nothing the others need: any
number of them can serve behind a load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import orjson
from confluent_kafka import KafkaException

from stream.api import metrics as api_metrics
from stream.api.batching import Batcher
from stream.cards import version_card
from stream.kafka import deliver, ensure_topics
from stream.records import AuditRecord, Rejection
from stream.redis_client import redis_client
from stream.runtime import erase
from stream.runtime.publisher import FLUSH_TIMEOUT_SECONDS, Publisher
from stream.runtime.registry import ModelRegistry, RegistryError, audit_message
from stream.runtime.retry import REDIS_OUTAGES, TRANSIENT_ERRORS, ErrorPolicy, reason
from stream.runtime.scoring import API_SOURCE, Accepted, Predicted, Scorer
from stream.runtime.served import ServedModels
from stream.runtime.state import Claim, StateStore
from stream.settings import Settings
from stream.usecases import UseCase, all_topics, entity_name

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 1.0
"""Longest Redis or the broker may take to answer a request or a readiness check."""


class Answer(NamedTuple):
    """What to answer: an HTTP status and a JSON body."""

    status: int
    body: bytes


def refusal(status: int, reason_code: str, detail: str) -> Answer:
    """An answer that is not the result asked for: ``{"reason": ..., "detail": ...}``."""
    return Answer(status, orjson.dumps({"reason": reason_code, "detail": detail}))


def ok(body: Any) -> Answer:
    """The result asked for, as JSON."""
    return Answer(200, orjson.dumps(body))


class ScoringApi:
    """The scoring API of one process: scoring, the registry's views, readiness.

    :meth:`running` must surround its use: it follows the live model versions, and
    publishes what is in flight before closing.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = ErrorPolicy(settings)
        # Timeouts: a request fails fast (503) rather than waiting for a Redis that hangs.
        self.redis = redis_client(
            settings, socket_timeout=CHECK_TIMEOUT_SECONDS, socket_connect_timeout=CHECK_TIMEOUT_SECONDS
        )
        self.registry = ModelRegistry(self.redis, settings)
        self.models = ServedModels(settings, self.registry, settings.use_cases)
        self.scorer = Scorer(settings, StateStore(self.redis, settings), self.models)
        self.use_cases = {uc.name: uc for uc in settings.use_cases}
        self._steps = {uc.name: _Steps(self, uc) for uc in settings.use_cases}

    publisher: Publisher
    """The prediction topics' producer, made by :meth:`running` (it connects when made)."""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Follow the live model versions (and create the topics) while the API serves."""
        self.publisher = Publisher(self.settings)
        stopping = asyncio.Event()
        tasks = [
            asyncio.ensure_future(self._follow_models(stopping)),
            asyncio.ensure_future(self._create_topics()),
        ]
        try:
            yield
        finally:
            stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close()

    async def _follow_models(self, stopping: asyncio.Event) -> None:
        # Until ``stopping`` too, not only until cancelled: on Python 3.11, a cancellation that
        # lands in the ``wait_for`` of redis-py's socket timeout as the write completes is lost.
        while not stopping.is_set():  # as a worker's timer does
            await self.policy.retrying("models", self.models.refresh)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.settings.model_poll_seconds)

    async def _create_topics(self) -> None:
        await self.policy.retrying(
            "start",
            lambda: asyncio.to_thread(ensure_topics, self.settings, all_topics(), CHECK_TIMEOUT_SECONDS),
        )

    async def _close(self) -> None:
        for name, steps in self._steps.items():
            if not await steps.publish.drained(FLUSH_TIMEOUT_SECONDS):
                log.error("%s: predictions recorded but not published: the broker did not answer", name)
        await asyncio.to_thread(self.publisher.close)
        await self.redis.aclose()

    # Scoring ------------------------------------------------------------------------------

    async def score(self, use_case: str, payload: bytes, received: float) -> Answer:
        """Score the event ``payload`` of ``use_case``, received at ``received`` (epoch seconds)."""
        outcome, answer = await self._score(self.use_cases[use_case], payload, received)
        api_metrics.REQUESTS.labels(use_case, outcome).inc()
        api_metrics.REQUEST_SECONDS.labels(use_case).observe(time.time() - received)
        return answer

    async def _score(
        self, use_case: UseCase[Any, Any], payload: bytes, received: float
    ) -> tuple[str, Answer]:
        now = time.time()
        accepted = self.scorer.accept(use_case, payload, API_SOURCE, received, now)
        if isinstance(accepted, Rejection):
            return accepted.reason, refusal(422, accepted.reason, accepted.detail)
        if not self.models.published(use_case.name):
            return "not_ready", refusal(503, "not_ready", f"{use_case.name}: no model version loaded yet")
        steps = self._steps[use_case.name]
        try:
            predicted = await steps.predict.submit(accepted)
        except REDIS_OUTAGES as exc:
            return "unavailable", self._outage(exc)
        self.policy.redis.answered()
        if isinstance(predicted, Claim):
            return _scored_before(self.scorer, accepted, predicted)
        # Retried until the broker takes it: no other request or worker will publish it.
        steps.publish.submitted(predicted).add_done_callback(_log_unpublished)
        return "scored", Answer(200, predicted.prediction)

    async def publish(self, use_case: UseCase[Any, Any], predictions: Sequence[Predicted]) -> list[None]:
        """Publish predictions on the use case's topic; return once the broker has them all."""
        topic = self.settings.topic(use_case.prediction_topic)
        records = [(topic, p.entity.encode(), p.prediction) for p in predictions]
        await self.policy.retrying(topic, lambda: self.publisher.publish(records))
        return [None] * len(records)  # counted in scoring_predictions_total when predicted

    def _outage(self, exc: Exception) -> Answer:
        self.policy.redis.failed(exc)  # logged once per try of the outage, however many requests meet it
        return refusal(503, "unavailable", reason(exc))

    # Administration -------------------------------------------------------------------------

    async def erase(self, use_case: str, ids: Sequence[str]) -> Answer:
        """Erase an entity's data from Redis (:mod:`stream.runtime.erase`) and record it on ``audit``.

        200 with what was removed and the audit record's id; 503 ``unavailable`` if Redis does not
        answer; 503 ``audit_unavailable``, with the record, if the erase is done but the broker did
        not take its record (erasing again removes nothing more and is recorded).
        """
        try:
            erased = await erase.erase(self.redis, self.settings, self.use_cases[use_case], ids)
        except REDIS_OUTAGES as exc:
            return self._outage(exc)
        self.policy.redis.answered()
        record = AuditRecord.now(
            "erase",
            f"api@{socket.gethostname()}",  # whoever holds SCORING_API_TOKEN
            model=use_case,
            target=erased.target,
            detail=erased.detail,
        )
        audit = [audit_message(self.settings, record)]
        try:
            await asyncio.to_thread(deliver, self.settings, audit)
        except KafkaException as exc:
            log.error("erased %s, but its audit record was not delivered: %s", erased.target, exc)
            detail = f"erased, but the audit record was not delivered ({exc}): erase again to record it"
            body = {"reason": "audit_unavailable", "detail": detail, "record": orjson.loads(record.to_json())}
            return Answer(503, orjson.dumps(body))
        return ok({**erased.body(), "audit_record": record.id})

    # Views ----------------------------------------------------------------------------------

    async def live_versions(self) -> Answer:
        """Each use case's live version in the registry, and the version this process serves."""
        try:
            live = {name: await self.registry.live(name) for name in self.use_cases}
        except REDIS_OUTAGES as exc:
            return self._outage(exc)
        return ok({name: {"live": live[name], "served": self._served(name)} for name in self.use_cases})

    async def version(self, model: str, version: str) -> Answer:
        """A version's registry record and its model card (``version``: ``<model>.<n>`` or ``<n>``)."""
        if model not in self.use_cases:
            return refusal(404, "unknown_model", f"no model {model!r} (one of: {', '.join(self.use_cases)})")
        name = version if version.startswith(f"{model}.") else f"{model}.{version}"
        try:
            record = await self.registry.record(name)
            card = await version_card(self.registry, record, self.settings.use_cases)
        except RegistryError as exc:
            return refusal(404, "unknown_version", str(exc))
        except REDIS_OUTAGES as exc:
            return self._outage(exc)
        return ok({"record": record, "card": card})

    async def readiness(self) -> Answer:
        """200 when Redis and the broker answer and every use case has a model version loaded."""
        redis, broker = await asyncio.gather(
            _answers(self.redis.ping), _answers(lambda: self.publisher.check(CHECK_TIMEOUT_SECONDS))
        )
        models = {name: self._served(name) for name in self.use_cases}
        ready = redis == broker == "ok" and all(models.values())
        body = {"ready": ready, "redis": redis, "broker": broker, "models": models}
        return Answer(200 if ready else 503, orjson.dumps(body))

    def _served(self, use_case: str) -> str | None:
        """The published version this process scores ``use_case`` with (``None``: not ready)."""
        return self.models[use_case].version if self.models.published(use_case) else None


class _Steps:
    """The steps of scoring one use case's events, each batched (:class:`~stream.api.batching.Batcher`)."""

    def __init__(self, api: ScoringApi, use_case: UseCase[Any, Any]) -> None:
        # The scoring latency runs from the batch's first request, as a worker's from its batch.
        self.predict: Batcher[Accepted, Predicted | Claim] = Batcher(
            lambda events: api.scorer.predict(use_case, events, min(a.arrived or 0.0 for a in events))
        )
        self.publish = Batcher(partial(api.publish, use_case))


def _scored_before(scorer: Scorer, accepted: Accepted, claim: Claim) -> tuple[str, Answer]:
    """The answer for an event id claimed before: its prediction, unless it is not one to give."""
    event_id = accepted.event.event_id
    if claim.status == "claimed":  # routed by a worker that has not recorded it (yet)
        return "in_flight", refusal(
            409, "in_flight", f"event id {event_id} is being scored from {claim.source}: repeat the request"
        )
    if orjson.loads(claim.prediction)["entity"] != scorer.recorded_entity(accepted):
        return "duplicate_event", refusal(
            409,
            "duplicate_event",
            f"event id {event_id} was scored for another entity than {entity_name(accepted.ids)}",
        )
    return "repeated", Answer(200, scorer.published(accepted, claim.prediction))


def _log_unpublished(publishing: asyncio.Future[None]) -> None:
    """A publication that failed other than by an outage (which is retried): a bug."""
    if not publishing.cancelled() and (exc := publishing.exception()) is not None:
        log.error("a prediction recorded was not published: %s", reason(exc), exc_info=exc)


async def _answers(check: Callable[[], Awaitable[Any]]) -> str:
    """``"ok"`` when ``check()`` succeeds, else why it failed (an outage)."""
    try:
        await check()
    except TRANSIENT_ERRORS as exc:
        return reason(exc)
    return "ok"
