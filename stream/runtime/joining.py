"""Joining labels to the features and prediction their event was scored with, each once.

:class:`LabelJoiner` takes the labels of one batch and settles each against its event in
Redis, atomically (:meth:`stream.runtime.state.StateStore.settle`): a label whose event is
scored is joined and goes to the use case's journal, where the learner learns it; a label
that comes before its event is scored waits (parked) until it is, or until
``label_wait_seconds`` pass. A redelivered label is recognised by its source and changes
nothing; any other second label for an event is a dead letter.

Under a use case's implicit label policy, an event that no label reached within its
maturity window is learned with the implicit target (:meth:`LabelJoiner.mature`), through
the same journal, once; a label that comes after that is a dead letter (``matured_event``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from stream.records import Rejection, parse
from stream.runtime import metrics
from stream.runtime.outbox import Message, Outbox, TopicOrder
from stream.runtime.state import ArrivedLabel, LabelSource, Outcome, ParkedLabel, Settlement, StateStore
from stream.settings import Settings
from stream.usecases import DEADLETTER_TOPIC, UseCase

# Outcomes that are not dead letters: the label is learned, waits, or was already counted.
_KEPT: frozenset[Outcome] = frozenset({"learn", "parked", "redelivered"})

_DETAIL: dict[Outcome, str] = {
    "duplicate_label": "event {} has already been learned from another label",
    "matured_event": "event {} matured without a label and was learned with the implicit target",
    "unknown_event": "no event with id {} was scored within {} s of its label",
    "expired_event": "event {} waited longer than the label TTL",
}


class LabelJoiner:
    """Joins label batches to their scored events for a set of use cases, each label once."""

    def __init__(self, settings: Settings, state: StateStore) -> None:
        self.settings = settings
        self.state = state
        self._order = TopicOrder()
        self._dead_letters = settings.topic(DEADLETTER_TOPIC)

    async def join(self, use_case: UseCase[Any, Any], batch: Sequence[Message]) -> Outbox:
        """Join a batch of labels; a joined label goes to the use case's journal."""
        outbox = Outbox()
        valid = []
        for message in batch:
            label = parse(use_case.label_type, message.value)
            if isinstance(label, Rejection):
                outbox.dead_letter(self._dead_letters, message, label.reason, label.detail)
                metrics.LABELS.labels(use_case.name, label.reason).inc()
            else:
                valid.append((message, label))
        arrived = []
        for message, label in valid:
            y = float(use_case.target(label))
            arrived.append(ArrivedLabel(label.event_id, message.source, _parked(message, y), y))
        async with self._order.of(batch):
            settlements = await self.state.settle(use_case, arrived, self.settings.label_wait_seconds)
        await self._conclude(use_case, outbox, valid, settlements)
        return outbox

    async def unpark(self, use_case: UseCase[Any, Any], limit: int = 1000) -> Outbox:
        """Join the parked labels whose event is scored now; dead-letter those that waited too long."""
        outbox = Outbox()
        concluded = []
        for settlement in await self.state.unpark(use_case, limit):
            if settlement.parked is not None:
                message = Message(**settlement.parked["message"], value=settlement.parked["value"].encode())
                label = use_case.label_type.model_validate_json(message.value)
                concluded.append(((message, label), settlement))
        await self._conclude(use_case, outbox, [m for m, _ in concluded], [s for _, s in concluded])
        return outbox

    async def mature(self, use_case: UseCase[Any, Any], limit: int = 1000) -> None:
        """Learn the events that matured without a label, with the implicit target; count them."""
        if use_case.labels.implicit_target is None:
            return
        matured = sum(s.outcome == "learn" for s in await self.state.mature(use_case, time.time(), limit))
        if matured:
            metrics.LABELS.labels(use_case.name, "matured").inc(matured)

    async def _conclude(
        self,
        use_case: UseCase[Any, Any],
        outbox: Outbox,
        labels: Sequence[tuple[Message, Any]],
        settlements: Sequence[Settlement],
    ) -> None:
        outcomes: Counter[str] = Counter()
        delay = metrics.LABEL_DELAY.labels(use_case.name)
        now = time.time()
        for (message, label), settlement in zip(labels, settlements, strict=True):
            outcome: str = settlement.outcome
            if settlement.outcome == "learn" and settlement.scored_at is not None:
                # Joined: the label is in the journal, for the learner, and its value in the
                # entity's label statistic, which later events' features read.
                delay.observe(max(0.0, now - settlement.scored_at))
                outcome = "joined"
            elif settlement.outcome not in _KEPT:
                detail = _DETAIL[settlement.outcome].format(label.event_id, self.settings.label_wait_seconds)
                outbox.dead_letter(self._dead_letters, message, settlement.outcome, detail)
            outcomes[outcome] += 1
        for outcome, count in outcomes.items():
            metrics.LABELS.labels(use_case.name, outcome).inc(count)


def _parked(message: Message, y: float) -> bytes:
    """What a parked label keeps: enough to join it, or dead-letter it, later."""
    where = LabelSource(topic=message.topic, partition=message.partition, offset=message.offset)
    parked = ParkedLabel(source=message.source, message=where, value=message.value.decode(), y=y)
    return orjson.dumps(parked)
