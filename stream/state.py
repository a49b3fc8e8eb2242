"""Redis state of the service: entity features, event claims and pending labels.

Every change goes through ``lua/state.lua`` so that it is atomic per event and per
entity: two workers never corrupt one entity's state, and an event id is claimed once.
Calls are pipelined per batch: one round trip to Redis for a whole batch of events.

Keys (all under the namespace prefix):

- ``<use case>:event:<event id>`` hash: source (topic/partition/offset), prior entity
  state, status (claimed, scored, learned), published prediction. Lives
  2 x ``label_ttl_seconds``: long enough to tell a duplicate or expired label from an
  unknown one.
- ``<use case>:pending:<event id>``: features and prediction a label needs; lives
  ``label_ttl_seconds``.
- ``<use case>:entity:<entity id>`` hash and ``...:<member>`` sets: the entity's state;
  forgotten after ``entity_ttl_seconds`` idle.
- ``<use case>:parked:labels`` hash and ``<use case>:parked:due`` sorted set: labels that
  arrived before their event was scored, waiting at most ``label_wait_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from stream.features import ALPHA, Observation, Prior, Stat
from stream.settings import Settings

_SCRIPT = resources.files("stream").joinpath("lua/state.lua").read_text()


@dataclass(frozen=True)
class Claim:
    """What Redis knew of an event id when an event arrived."""

    is_new: bool
    source: str
    prior: Prior
    status: str
    prediction: bytes


@dataclass(frozen=True)
class Settlement:
    """Outcome of joining a label to its event.

    ``learn`` carries the pending record; a settlement of a parked label carries the
    record it was parked with.
    """

    outcome: str
    pending: dict[str, Any] | None = None
    parked: dict[str, Any] | None = None


def _settlement(reply: list[bytes]) -> Settlement:
    def decoded(i: int) -> dict[str, Any] | None:
        return orjson.loads(reply[i]) if len(reply) > i and reply[i] else None

    return Settlement(outcome=reply[0].decode(), pending=decoded(1), parked=decoded(2))


def _decode_prior(raw: bytes, members: Sequence[str]) -> Prior:
    doc = orjson.loads(raw)
    flat = doc["state"] or []
    fields = {
        flat[i].decode() if isinstance(flat[i], bytes) else flat[i]: flat[i + 1]
        for i in range(0, len(flat), 2)
    }
    stats: dict[str, Stat] = {}
    for name in {f.rsplit(":", 1)[0] for f in fields if ":" in f}:
        stats[name] = Stat(
            n=int(fields[f"{name}:n"]), mean=float(fields[f"{name}:mean"]), var=float(fields[f"{name}:var"])
        )
    seen_flags = doc["seen"] if isinstance(doc["seen"], list) else []
    last_ts = fields.get("last_ts")
    return Prior(
        n=int(fields.get("n", 0)),
        last_ts=float(last_ts) if last_ts is not None else None,
        stats=stats,
        seen=dict(zip(members, seen_flags, strict=False)),
    )


class StateStore:
    """Batched, atomic access to the service's Redis state."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._script = client.register_script(_SCRIPT)
        self._event_ttl = 2 * settings.label_ttl_seconds

    def _key(self, use_case: str, kind: str, ident: str) -> str:
        return self._settings.key(use_case, kind, ident)

    async def observe(
        self, use_case: str, events: Sequence[tuple[str, str, str, Observation]]
    ) -> list[Claim]:
        """Claim each (event id, entity id, source, observation) and apply it to its entity.

        An event id already claimed is left untouched: its claim is returned as it was.
        """
        pipe = self._redis.pipeline(transaction=False)
        for event_id, entity, source, obs in events:
            entity_key = self._key(use_case, "entity", entity)
            names = list(obs.stats)
            await self._script(
                keys=[
                    self._key(use_case, "event", event_id),
                    entity_key,
                    *(f"{entity_key}:{member}" for member in obs.members),
                ],
                args=[
                    "observe",
                    source,
                    repr(obs.ts),
                    self._event_ttl,
                    self._settings.entity_ttl_seconds,
                    ALPHA,
                    len(names),
                    *names,
                    *(repr(obs.stats[n]) for n in names),
                    *obs.members.values(),
                ],
                client=pipe,
            )
        replies = await pipe.execute()
        return [
            Claim(
                is_new=reply[0] == 1,
                source=reply[1].decode(),
                prior=_decode_prior(reply[2], list(obs.members)),
                status=reply[3].decode(),
                prediction=reply[4],
            )
            for reply, (_, _, _, obs) in zip(replies, events, strict=True)
        ]

    async def record(self, use_case: str, scored: Sequence[tuple[str, bytes, bytes]]) -> None:
        """Store (event id, published prediction, pending record) for each scored event."""
        pipe = self._redis.pipeline(transaction=False)
        for event_id, prediction, pending in scored:
            await self._script(
                keys=[self._key(use_case, "event", event_id), self._key(use_case, "pending", event_id)],
                args=["record", prediction, pending, self._settings.label_ttl_seconds],
                client=pipe,
            )
        await pipe.execute()

    async def settle(
        self, use_case: str, labels: Sequence[tuple[str, str, bytes]], wait_seconds: float
    ) -> list[Settlement]:
        """Join each (event id, label source, parked record) to its event, at most once per event.

        A label whose event is not scored yet is parked with its record for ``wait_seconds``.
        """
        deadline = time.time() + wait_seconds
        pipe = self._redis.pipeline(transaction=False)
        for event_id, source, parked in labels:
            await self._script(
                keys=self._label_keys(use_case, event_id),
                args=["settle", event_id, source, parked, repr(deadline)],
                client=pipe,
            )
        return [_settlement(reply) for reply in await pipe.execute()]

    async def unpark(self, use_case: str, limit: int) -> list[Settlement]:
        """Settle the oldest parked labels whose event got scored or whose wait is over."""
        due = self._settings.key(use_case, "parked", "due")
        event_ids = cast(list[bytes], await self._redis.zrange(due, 0, limit - 1))
        now = repr(time.time())
        pipe = self._redis.pipeline(transaction=False)
        for raw in event_ids:
            event_id = raw.decode()
            await self._script(
                keys=self._label_keys(use_case, event_id), args=["unpark", event_id, now], client=pipe
            )
        return [_settlement(reply) for reply in await pipe.execute()]

    def _label_keys(self, use_case: str, event_id: str) -> list[str]:
        return [
            self._key(use_case, "event", event_id),
            self._key(use_case, "pending", event_id),
            self._settings.key(use_case, "parked", "labels"),
            self._settings.key(use_case, "parked", "due"),
        ]

    async def update(self, use_case: str, stat: str, values: Sequence[tuple[str, float]]) -> None:
        """Fold each (entity id, value) into the entity's statistic ``stat``."""
        pipe = self._redis.pipeline(transaction=False)
        for entity, value in values:
            await self._script(
                keys=[self._key(use_case, "entity", entity)],
                args=["update", stat, repr(value), ALPHA, self._settings.entity_ttl_seconds],
                client=pipe,
            )
        await pipe.execute()
