"""The scoring service: scorer, Redis, publisher, and the error policy around a batch.

Error policy, per batch (:mod:`stream.runtime.retry` decides what is transient, and the
backoff):

- invalid input never raises: the scorer turns it into dead letters;
- a Redis or Kafka outage is retried with backoff until it ends (the batch is neither
  acknowledged nor lost meanwhile; redoing it is safe because the scorer is idempotent);
- any other error is a bug: the batch is split and the failing messages are dead-lettered
  as ``internal_error`` with the exception, so the worker keeps running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from stream.redis_client import redis_client
from stream.runtime import metrics
from stream.runtime.batches import BatchConsumer
from stream.runtime.joining import LabelJoiner
from stream.runtime.learning import Learning
from stream.runtime.outbox import Message, Outbox
from stream.runtime.publisher import Publisher
from stream.runtime.registry import ModelRegistry
from stream.runtime.retry import TRANSIENT_ERRORS, ErrorPolicy, reason
from stream.runtime.scoring import Scorer
from stream.runtime.served import ServedModels
from stream.runtime.state import StateStore
from stream.settings import Settings
from stream.usecases import DEADLETTER_TOPIC, UseCase

log = logging.getLogger(__name__)

Step = Callable[[Sequence[Message]], Awaitable[Outbox]]


class ScoringService:
    """Everything a worker process needs to handle batches of events and labels."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = ErrorPolicy(settings)
        self.redis = redis_client(settings)
        state = StateStore(self.redis, settings)
        registry = ModelRegistry(self.redis, settings)
        self.models = ServedModels(settings, registry, settings.use_cases)
        self.scorer = Scorer(settings, state, self.models)
        self.joiner = LabelJoiner(settings, state)
        self.publisher = Publisher(settings)
        self.learning = Learning(settings)  # the learners run in processes of their own
        self._steps: dict[str, Step] = {}
        for uc in settings.use_cases:
            self._steps[settings.topic(uc.event_topic)] = partial(self.scorer.score, uc)
            self._steps[settings.topic(uc.label_topic)] = partial(self.joiner.join, uc)
        self.consumer = BatchConsumer(settings, list(self._steps), self.handle)

    async def handle(self, batch: Sequence[Message]) -> None:
        """Score the events and join the labels of a batch; return once all it produced is delivered.

        Each topic's messages are handled concurrently with the others': while Redis runs
        one topic's script, the worker scores another's. A topic's messages go to Redis
        together, whatever their partition: each group costs its own round trips, which a
        light load's small batches, split finer, would multiply.
        """
        groups: dict[str, list[Message]] = {}
        for message in batch:
            groups.setdefault(message.topic, []).append(message)
        outboxes = await asyncio.gather(*(self._process(group) for group in groups.values()))
        await self._publish("publish", outboxes)

    async def handle_waiting_labels(self, use_case: UseCase[Any, Any]) -> None:
        """Join the parked labels whose event is scored now, and learn the events that matured."""
        topic = self.settings.topic(use_case.label_topic)
        outbox = await self.policy.retrying(topic, lambda: self.joiner.unpark(use_case))
        await self._publish(topic, [outbox])
        await self.policy.retrying(topic, lambda: self.joiner.mature(use_case))

    async def refresh_models(self) -> None:
        await self.policy.retrying("models", self.models.refresh)

    async def close(self) -> None:
        await self.consumer.stop()
        await self.learning.stop()
        await asyncio.to_thread(self.publisher.close)
        await self.redis.aclose()

    async def _process(self, group: Sequence[Message]) -> Outbox:
        topic = group[0].topic
        step = self._steps[topic]
        metrics.CONSUMED.labels(topic).inc(len(group))
        with metrics.BATCH_SECONDS.labels(topic).time():
            return await self.policy.retrying(topic, lambda: self._isolating(group, step))

    async def _publish(self, topic: str, outboxes: Sequence[Outbox]) -> None:
        """Publish what the outboxes hold, retried until Kafka answers; then count their latency."""
        records = [record for outbox in outboxes for record in outbox.records]
        await self.policy.retrying(topic, lambda: self.publisher.publish(records))
        for outbox in outboxes:
            outbox.delivered()

    async def _isolating(self, batch: Sequence[Message], step: Step) -> Outbox:
        try:
            return await step(batch)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            if len(batch) > 1:
                log.exception(
                    "batch of %d from %s failed; isolating the failing messages", len(batch), batch[0].topic
                )
                outbox = Outbox()
                for message in batch:
                    outbox.records += (await self._isolating([message], step)).records
                return outbox
            log.exception("internal error on %s", batch[0].source)
            outbox = Outbox()
            # reason(), not repr(): a Redis error's repr hides its message (WRONGTYPE, ...).
            outbox.dead_letter(self.settings.topic(DEADLETTER_TOPIC), batch[0], "internal_error", reason(exc))
            return outbox
