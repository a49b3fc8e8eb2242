"""Erasing an entity's data from Redis: ``scoring erase`` and ``DELETE /v1/entities/...``.

:func:`erase` removes, for one entity of a use case (an account; a product at a store):

- its state, ``entity:<entity>`` (with the values it was seen with, and its label
  statistic);
- each of its events still remembered: the event's record ``event:<id>`` (claim, pending
  record or what is kept once learned), its place in the ``maturing`` set, its route
  ``route:<id>`` (with several buckets) and a label parked for it (``parked:labels`` and
  ``parked:due``, in its id's bucket);
- its entries in the journal that the learner has not trimmed yet (scored events and joined
  labels, which name the entity).

Keys are found from the layout (:func:`stream.runtime.keys.buckets`): the entity's keys
are in its bucket, so the entity's own keys are named directly, and its events are found by
a ``SCAN`` of that bucket's event records, filtered in Redis (a script call per 1,000 keys)
by the entity their header names (its key: with ``SCORING_PII_KEY`` its keyed hash,
:func:`stream.runtime.keys.entity_key`). On a Redis Cluster the scan visits every master,
each walking its own keys. It costs a walk of Redis' keys and a read of the entity's
bucket's event records and journal: erasing is rare, and nothing has to be kept per event
for it.

What it does not reach: a label parked for an event that was never scored (it names no
entity), what was published on Kafka topics, and what the models learned (README: Personal
data). An event of the entity that
arrives after the erase is scored as a new entity's first. Erasing again removes nothing
more (it is idempotent), and completes an erase cut short by an outage.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from stream.redis_client import RedisClient
from stream.runtime.keys import EntityKey, buckets, entity_key, recorded_name
from stream.runtime.state import journaled
from stream.settings import Settings
from stream.usecases import UseCase

_CHUNK = 1000  # keys or journal entries read per round trip


@dataclass(frozen=True)
class Erased:
    """What an erase removed: keys deleted (the events' among them), journal entries and parked
    labels. ``target`` names the entity as Redis records it (:func:`~stream.runtime.keys.recorded_name`:
    with a PII key its keyed hash, never the clear id), for the audit record and the answer."""

    use_case: str
    target: str
    keys: int
    events: int
    journal_entries: int
    parked_labels: int

    @property
    def detail(self) -> str:
        return (
            f"removed {self.keys} keys ({self.events} events), {self.journal_entries} journal entries "
            f"and {self.parked_labels} parked labels"
        )

    def body(self) -> dict[str, Any]:
        """The API's answer."""
        return {
            "use_case": self.use_case,
            "entity": self.target,
            "keys_removed": self.keys,
            "events": self.events,
            "journal_entries": self.journal_entries,
            "parked_labels": self.parked_labels,
        }


async def erase(
    client: RedisClient, settings: Settings, use_case: UseCase[Any, Any], ids: Sequence[str]
) -> Erased:
    """Remove from Redis every key and entry of the entity of ``use_case`` named by ``ids``."""
    secret = settings.pii_secret
    entity = entity_key(ids, secret)
    recorded = recorded_name(ids, secret)
    layout = buckets(settings, use_case.name)
    home = layout.prefixes[layout.of(entity)]
    events = await _events(client, home, entity)
    by_bucket: dict[str, list[str]] = {}  # the events' ids by the prefix of their ids' bucket
    for event_id in events:
        by_bucket.setdefault(layout.prefixes[layout.of(event_id)], []).append(event_id)
    doomed = [f"{home}entity:{entity}", *(f"{home}event:{event_id}" for event_id in events)]
    if layout.routed:
        doomed += [
            f"{where}route:{event_id}" for where, in_bucket in by_bucket.items() for event_id in in_bucket
        ]
    # What the event records lead to goes first, so that an erase cut short finds it again.
    pipe = client.pipeline(transaction=False)
    for where, in_bucket in by_bucket.items():
        pipe.hdel(f"{where}parked:labels", *in_bucket)
        pipe.zrem(f"{where}parked:due", *in_bucket)
    if events:
        pipe.zrem(f"{home}maturing", *events)
    parked = sum((await pipe.execute())[: 2 * len(by_bucket) : 2])
    pipe = client.pipeline(transaction=False)
    for key in doomed:
        pipe.delete(key)
    keys = sum(await pipe.execute())
    journal = await _erase_journal(client, f"{home}journal", entity)
    return Erased(use_case.name, recorded, keys, len(events), journal, parked)


# Which of the event records KEYS (of one bucket: one slot) are of entity ARGV[1]: a record
# starts `<status><entity>\n` (state.lua). Filtered where they are, rather than every record
# sent to be read here.
_NAMING = """
local out, entity = {}, ARGV[1] .. '\\n'
for _, key in ipairs(KEYS) do
  if redis.call('GETRANGE', key, 1, #entity) == entity then
    out[#out + 1] = key
  end
end
return out
"""


async def _events(client: RedisClient, home: str, entity: EntityKey) -> list[str]:
    """The encoded ids of the events in bucket ``home`` whose record names ``entity``."""
    naming = client.register_script(_NAMING)
    needle = entity.encode()
    found: list[bytes] = []
    batch: list[bytes] = []
    async for key in client.scan_iter(match=_glob(home) + "event:*", count=_CHUNK):
        batch.append(key)
        if len(batch) == _CHUNK:
            found += await naming(keys=batch, args=[needle])
            batch = []
    if batch:
        found += await naming(keys=batch, args=[needle])
    start = len(home) + len("event:")
    return [key[start:].decode() for key in found]


async def _erase_journal(client: RedisClient, journal: str, entity: EntityKey) -> int:
    """Remove the entries of ``journal`` whose record names ``entity``; how many."""
    removed, after, needle = 0, "-", entity.encode()
    while True:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(journal, min=after, count=_CHUNK)
        )
        if not entries:
            return removed
        mine = [entry_id for entry_id, fields in entries if journaled(fields)[0] == needle]
        if mine:
            removed += await client.xdel(journal, *mine)
        after = "(" + entries[-1][0].decode()


def _glob(text: str) -> str:
    """``text`` matched literally by a ``SCAN`` pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
