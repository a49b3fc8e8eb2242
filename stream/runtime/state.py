"""Redis state of the service: entity features, event claims and pending labels.

Every change goes through ``lua/state.lua`` so that it is atomic per event and per
entity: two workers never corrupt one entity's state, and an event id is claimed once.
Each call handles a whole batch in one script call: one round trip, and Redis pays the
script's dispatch once per batch rather than once per event.

Ids enter keys only through :mod:`stream.runtime.keys`: an event id or an entity's ids are
data, never key syntax. Keys (all under the namespace prefix; ``<id>`` is an encoded id,
``<entity>`` an encoded :data:`~stream.runtime.keys.EntityKey`):

- ``<use case>:event:<id>`` hash: source (topic/partition/offset), prior entity
  state, status (:data:`ClaimStatus`), published prediction. Lives
  2 x ``label_ttl_seconds``: long enough to tell a duplicate or expired label from an
  unknown one.
- ``<use case>:pending:<id>``: the :class:`Pending` record a label needs; lives
  ``label_ttl_seconds``.
- ``<use case>:entity:<entity>``: the entity's state, one JSON document (count, last
  time seen, ``{"stats": {field: [n, mean, var]}}``), and ``<use case>:seen:<field>:<entity>``
  sets of the values it was seen with, as the use case's features declare them
  (:class:`stream.features.FeatureSet`); forgotten after ``entity_ttl_seconds`` idle.
- ``<use case>:parked:labels`` hash and ``<use case>:parked:due`` sorted set, both by
  encoded event id: labels that arrived before their event was scored, waiting at most
  ``label_wait_seconds``.
- ``<use case>:maturing`` sorted set, by encoded event id: under an implicit label
  policy, when each scored event matures (is learned with the implicit target unless
  a label came first).
- ``<use case>:journal`` stream: what the learner reads, in order: one entry per scored
  event and one per label joined to its event (see :class:`JournalEntry`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, NamedTuple, TypedDict, cast, get_args

import orjson
import redis.asyncio as aioredis

from stream.features import LABEL, EntityState, Features, Observation, Prior, Stat
from stream.runtime.keys import EntityKey, encode
from stream.settings import Settings
from stream.usecases import UseCase

_SCRIPT = resources.files("stream.runtime").joinpath("lua/state.lua").read_text()

ClaimStatus = Literal["claimed", "scored", "learned"]
"""An event id's status: claimed (its entity state applied), scored (prediction published
and pending record stored), learned (its label joined)."""

Outcome = Literal[
    "learn",
    "parked",
    "redelivered",
    "duplicate_label",
    "matured_event",
    "expired_event",
    "unknown_event",
    "waiting",
    "gone",
]
"""What became of a label: ``learn`` (joined to its event, in the journal), ``parked`` (its
event is not scored yet), ``redelivered`` (the same label message again), the dead-letter
reasons ``duplicate_label``, ``matured_event`` (learned with the implicit target already),
``expired_event`` and ``unknown_event``; for a parked label tried again, ``waiting``
(still) or ``gone`` (settled by another worker). A maturing event is ``learn`` (with the
implicit target) or ``gone`` (a label came first)."""

_OUTCOMES = frozenset(get_args(Outcome))
_STATUSES = frozenset(get_args(ClaimStatus))


class Pending(TypedDict):
    """What a scored event leaves for its label: stored at scoring, read by the learner."""

    x: Features
    y_pred: float
    entity: EntityKey
    model_version: str
    scored_at: float


class LabelSource(TypedDict):
    topic: str
    partition: int
    offset: int


class ParkedLabel(TypedDict):
    """What a label waiting for its event keeps: enough to join it, or dead-letter it, later."""

    source: str
    message: LabelSource
    value: str
    y: float


class Arrival(NamedTuple):
    """An event to claim: its id, its entity, where it was read, what it adds to the entity."""

    event_id: str
    entity: EntityKey
    source: str
    observation: Observation


class Scored(NamedTuple):
    """An event scored: its id, the prediction published, the pending record (JSON of :class:`Pending`)."""

    event_id: str
    prediction: bytes
    pending: bytes


class ArrivedLabel(NamedTuple):
    """A label to join: its event's id, where it was read, its record if parked, its target."""

    event_id: str
    source: str
    parked: bytes
    y: float


@dataclass(frozen=True)
class Claim:
    """What Redis knew of an event id when an event arrived (its first claim, if any)."""

    source: str
    prior: Prior
    status: ClaimStatus
    prediction: bytes


@dataclass(frozen=True)
class Settlement:
    """Outcome of joining a label to its event.

    ``learn`` carries the pending record; a settlement of a parked label carries the
    record it was parked with.
    """

    outcome: Outcome
    pending: Pending | None = None
    parked: ParkedLabel | None = None


@dataclass(frozen=True)
class JournalEntry:
    """One journal entry: a scored event, or a label joined to its scored event.

    ``id`` is the Redis stream id (``<ms>-<seq>``): its time is the entry's stream time.
    ``pending`` is what was recorded at scoring time; a label adds its target ``y`` and
    ``source`` (topic/partition/offset).
    """

    id: str
    pending: Pending
    y: float | None = None
    source: str | None = None

    @property
    def time(self) -> float:
        """Stream time of the entry, epoch seconds."""
        return int(self.id.split("-", 1)[0]) / 1000.0

    @classmethod
    def decode(cls, entry_id: bytes, fields: dict[bytes, bytes]) -> JournalEntry:
        y = fields.get(b"y")
        source = fields.get(b"s")
        return cls(
            id=entry_id.decode(),
            pending=orjson.loads(fields[b"p"]),
            y=float(y) if y is not None else None,
            source=source.decode() if source is not None else None,
        )


class ScriptError(RuntimeError):
    """The state script answered with an unexpected reply: a bug, never an outage."""


def _checked(value: bytes, allowed: frozenset[str], what: str) -> Any:
    text = value.decode()
    if text not in allowed:
        raise ScriptError(f"state.lua answered {what} {text!r}")
    return text


def _settlements(replies: Sequence[bytes]) -> list[Settlement]:
    return [
        Settlement(
            outcome=_checked(outcome, _OUTCOMES, "outcome"),
            pending=orjson.loads(pending) if pending else None,
            parked=orjson.loads(parked) if parked else None,
        )
        for outcome, pending, parked in zip(replies[::3], replies[1::3], replies[2::3], strict=True)
    ]


def _decode_prior(raw: bytes, members: Sequence[str]) -> Prior:
    doc = orjson.loads(raw)
    state = doc["state"]  # {"n": 3, "last_ts": "<float>", "stats": {"<field>": [n, mean, var]}}
    last_ts = state.get("last_ts")
    seen = doc["seen"]  # a list, or {} for an empty one (cjson cannot tell them apart)
    return Prior(
        state.get("n", 0),
        float(last_ts) if last_ts is not None else None,
        {name: Stat(*value) for name, value in state.get("stats", {}).items()},
        dict(zip(members, seen, strict=False)) if isinstance(seen, list) else {},
    )


class StateStore:
    """Batched, atomic access to the service's Redis state."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._script = client.register_script(_SCRIPT)
        self._event_ttl = 2 * settings.label_ttl_seconds

    async def _call(
        self, command: str, use_case: str, params: dict[str, Any], blobs: Sequence[bytes] = ()
    ) -> list[Any]:
        prefix = self._settings.key(use_case, "")
        return cast(list[Any], await self._script(args=[command, prefix, orjson.dumps(params), *blobs]))

    async def observe(self, use_case: UseCase[Any, Any], events: Sequence[Arrival]) -> list[Claim]:
        """Claim each event and apply its observation to its entity.

        An event id already claimed is left untouched: its claim is returned as it was.
        """
        if not events:
            return []
        names, members = use_case.features.stats, use_case.features.members
        replies = await self._call(
            "observe",
            use_case.name,
            {
                "event_ttl": self._event_ttl,
                "entity_ttl": self._settings.entity_ttl_seconds,
                "decay": use_case.features.decay,
                "stats": names,
                "members": members,
                "events": [
                    [
                        encode(event_id),
                        entity,
                        source,
                        obs.ts,
                        [obs.stats[n] for n in names],
                        [obs.members[m] for m in members],
                    ]
                    for event_id, entity, source, obs in events
                ],
            },
        )
        return [
            Claim(
                source=replies[i].decode(),
                prior=_decode_prior(replies[i + 1], members),
                status=_checked(replies[i + 2], _STATUSES, "status"),
                prediction=replies[i + 3],
            )
            for i in range(0, len(replies), 4)
        ]

    async def record(self, use_case: UseCase[Any, Any], scored: Sequence[Scored], at: float) -> list[bytes]:
        """Store the published prediction and the pending record of each event scored at ``at``.

        Under an implicit label policy each event also starts maturing. Returns, for each
        event, ``b""`` when this call recorded it, else the prediction recorded first: two
        scorings of one claim can race (a redelivery, an API request repeated while the first
        is in flight), and only the first is recorded.
        """
        if not scored:
            return []
        maturity = use_case.labels.maturity_seconds
        raced = await self._call(
            "record",
            use_case.name,
            {
                "label_ttl": self._settings.label_ttl_seconds,
                "journal_max": self._settings.journal_max_entries,
                "matures_at": None if maturity is None else at + maturity,
                "event_ids": [encode(event_id) for event_id, _, _ in scored],
            },
            [blob for _, prediction, pending in scored for blob in (prediction, pending)],
        )
        earlier = [b""] * len(scored)
        for index, prediction in zip(raced[::2], raced[1::2], strict=True):  # the script's are 1-based
            earlier[index - 1] = prediction
        return earlier

    async def settle(
        self, use_case: str, labels: Sequence[ArrivedLabel], wait_seconds: float
    ) -> list[Settlement]:
        """Join each label to its event, once per event.

        A joined label goes to the journal. A label whose event is not scored yet is parked
        with its record (which must hold the target as ``y``) for ``wait_seconds``.
        """
        if not labels:
            return []
        params = {
            "deadline": time.time() + wait_seconds,
            "journal_max": self._settings.journal_max_entries,
            "labels": [
                [encode(event_id), source, parked.decode(), y] for event_id, source, parked, y in labels
            ],
        }
        return _settlements(await self._call("settle", use_case, params))

    async def unpark(self, use_case: str, limit: int) -> list[Settlement]:
        """Settle the oldest parked labels whose event got scored or whose wait is over."""
        due = self._settings.key(use_case, "parked", "due")
        event_ids = [raw.decode() for raw in cast(list[bytes], await self._redis.zrange(due, 0, limit - 1))]
        if not event_ids:
            return []
        params = {
            "now": time.time(),
            "journal_max": self._settings.journal_max_entries,
            "event_ids": event_ids,
        }
        return _settlements(await self._call("unpark", use_case, params))

    async def mature(self, use_case: UseCase[Any, Any], now: float, limit: int) -> list[Settlement]:
        """Learn, with the implicit target, the oldest events that matured by ``now`` without a label."""
        target = use_case.labels.implicit_target
        if target is None:
            return []
        maturing = self._settings.key(use_case.name, "maturing")
        due = cast(list[bytes], await self._redis.zrangebyscore(maturing, "-inf", now, start=0, num=limit))
        if not due:
            return []
        params = {
            "journal_max": self._settings.journal_max_entries,
            "target": target,
            "event_ids": [raw.decode() for raw in due],
        }
        replies = await self._call("mature", use_case.name, params)
        return _settlements(replies)

    def journal_key(self, use_case: str) -> str:
        return self._settings.key(use_case, "journal")

    async def read_journal(
        self, use_case: str, after: str, count: int, block_ms: int | None = None
    ) -> list[JournalEntry]:
        """Up to ``count`` journal entries after id ``after``, waiting up to ``block_ms`` for one."""
        key = self.journal_key(use_case)
        reply = cast(
            list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
            await self._redis.xread({key: after}, count=count, block=block_ms),
        )
        return [JournalEntry.decode(i, f) for _, entries in reply for i, f in entries]

    async def journal_head(self, use_case: str) -> str | None:
        """Id of the newest journal entry, if any."""
        newest = await self._redis.xrevrange(self.journal_key(use_case), count=1)
        return cast(bytes, newest[0][0]).decode() if newest else None

    async def trim_journal(self, use_case: str, before: float) -> None:
        """Forget the journal entries older than ``before`` (epoch seconds)."""
        await self._redis.xtrim(self.journal_key(use_case), minid=str(int(before * 1000)), approximate=True)

    async def restore_entities(
        self, use_case: UseCase[Any, Any], states: Iterable[tuple[EntityKey, EntityState]], chunk: int = 2000
    ) -> int:
        """Write entity states an offline replay reached, as ``state.lua`` keeps them: the
        stream's features continue from them. Returns how many entities were written."""
        ttl, written = self._settings.entity_ttl_seconds, 0
        pipe = self._redis.pipeline(transaction=False)
        for entity, state in states:
            pipe.set(
                self._settings.key(use_case.name, "entity", entity), orjson.dumps(state.document()), ex=ttl
            )
            for field, values in state.seen.items():
                key = self._settings.key(use_case.name, "seen", field, entity)
                pipe.delete(key)
                if values:
                    pipe.sadd(key, *values)
                    pipe.expire(key, ttl)
            written += 1
            if written % chunk == 0:
                await pipe.execute()
        await pipe.execute()
        return written

    async def entity(self, use_case: str, entity: EntityKey) -> dict[str, Any]:
        """An entity's state as stored: ``{"n": ..., "last_ts": ..., "stats": {field: [n, mean, var]}}``."""
        raw = await self._redis.get(self._settings.key(use_case, "entity", entity))
        return cast(dict[str, Any], orjson.loads(raw)) if raw else {}

    async def learn_labels(
        self, use_case: UseCase[Any, Any], values: Sequence[tuple[EntityKey, float]]
    ) -> None:
        """Fold each (entity, target) into the entity's label statistic."""
        if not values:
            return
        await self._call(
            "update",
            use_case.name,
            {
                "stat": LABEL,
                "decay": use_case.features.decay,
                "entity_ttl": self._settings.entity_ttl_seconds,
                "entities": [entity for entity, _ in values],
                "values": [value for _, value in values],
            },
        )
