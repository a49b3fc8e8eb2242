"""Redis state of the service: entity features, event records and pending labels.

Scoring a batch takes two round trips: a read (the batch's entity states, one ``MGET`` per
bucket), then, once the worker has applied the events to their entities'
states and scored them, one ``lua/state.lua`` call per bucket that records each event and
writes its entity's state atomically, if the entity is still as read (else the event is
read and scored again): two workers never corrupt one entity's state, and an event id is
recorded once. Every other change (labels, maturing events) goes through the script too,
a whole batch's share of a bucket per call, so that Redis pays the script's dispatch once
per bucket rather than once per event.

Ids enter keys only through :mod:`stream.runtime.keys`: an event id or an entity's ids are
data, never key syntax. Keys start with a use case's bucket prefix (:func:`keys.buckets
<stream.runtime.keys.buckets>`: ``<namespace>:<use case>:`` on a single Redis; on a Redis
Cluster, one prefix with a hash tag per bucket); ``<id>`` is an encoded id, ``<entity>`` an
encoded :data:`~stream.runtime.keys.EntityKey`. In the bucket of the entity:

- ``event:<id>``: the event's record, one string (``state.lua`` says its bytes): its
  status (:data:`ClaimStatus`), entity and source (where it was read, packed:
  :class:`Sources`), then its
  pending record once scored (the compact bytes of :mod:`stream.runtime.pending`: features,
  prediction), only the prediction part of it once learned. Written with its TTL
  (:attr:`StateStore.event_ttl`): as long as an event with its id can still be accepted,
  so that a redelivered or repeated event is always recognised; a label more than
  ``label_ttl_seconds`` after its event was scored is ``expired_event``.
- ``entity:<entity>``: the entity's state, packed (:class:`EntityLayout`): count, last
  time seen, exponentially weighted statistics, then the hashes of the values it was seen
  with most recently (at most :data:`~stream.features.MEMBERS_KEPT` per field), as the
  use case's features declare them (:class:`stream.features.FeatureSet`); forgotten after
  ``entity_ttl_seconds`` idle.
- ``maturing`` sorted set, by encoded event id: under an implicit label
  policy, when each scored event matures (is learned with the implicit target unless
  a label came first).
- ``journal`` stream: what the learner reads, in order: one entry per scored
  event and one per label joined to its event (see :class:`JournalEntry`).

In the bucket of the event id:

- ``route:<id>``, with several buckets only: the bucket of the event's entity and the
  source of the message that claimed the id first (before the batch's read); what a label
  follows to its event, and what tells a duplicate event id from a new one whatever its
  entity. Lives as long as the event's record.
- ``parked:labels`` hash and ``parked:due`` sorted set, both by encoded event id: labels
  that arrived before their event was scored, waiting at most ``label_wait_seconds``.

With several buckets, the learner reads the buckets' journals merged into one order
(:meth:`StateStore.read_journal`), and a journal position names a stream id per bucket.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import math
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, NamedTuple, TypedDict, cast, get_args

import orjson
from redis.exceptions import NoScriptError

from stream.features import LABEL, MEMBERS_KEPT, EntityState, FeatureSet
from stream.redis_client import RedisClient
from stream.runtime.keys import Buckets, EntityKey, buckets, encode
from stream.runtime.pending import Layout, Pending, layout_of, natural, prediction, read_varint, varint
from stream.settings import Settings
from stream.usecases import UseCase

log = logging.getLogger(__name__)

_SCRIPT = resources.files("stream.runtime").joinpath("lua/state.lua").read_text()

ClaimStatus = Literal["claimed", "scored", "learned"]
"""An event id's status: scored (its prediction and pending record recorded), learned (its
label joined); with several buckets, claimed (routed by a message that has not recorded it
yet)."""

_STATUS: dict[bytes, ClaimStatus] = {b"S": "scored", b"L": "learned"}  # a record's first byte (state.lua)

Changed = Literal["changed"]
"""An event not recorded because its entity's state changed since it was read: to read and
score again."""

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
    """An event to score: its id, its entity, where it was read."""

    event_id: str
    entity: EntityKey
    source: str


class Scored(NamedTuple):
    """An event scored: its id, its entity, where it was read, its entity's state as read
    (``b""``: none) and with the event applied (:meth:`EntityLayout.pack`), its pending record
    (:meth:`Layout.encode <stream.runtime.pending.Layout.encode>`: features, prediction)."""

    event_id: str
    entity: EntityKey
    source: str
    read: bytes
    state: bytes
    pending: bytes


class ArrivedLabel(NamedTuple):
    """A label to join: its event's id, where it was read, its record if parked, its target."""

    event_id: str
    source: str
    parked: bytes
    y: float


@dataclass(frozen=True)
class Claim:
    """What Redis knew of an event id claimed before: where the message that claimed it was
    read, its status, its prediction (recorded: scored or learned)."""

    source: str
    status: ClaimStatus
    prediction: bytes


class Reading(NamedTuple):
    """What Redis holds for a batch of events: each event id's :class:`Claim` if another message
    claimed it (with several buckets, found by its route; else ``None``), and the stored
    states of the other events' entities (``b""``: none)."""

    claims: list[Claim | None]
    entities: dict[EntityKey, bytes]


@dataclass(frozen=True)
class Settlement:
    """Outcome of joining a label to its event.

    ``learn`` carries when its event was scored (epoch seconds); a settlement of a parked
    label carries the record it was parked with.
    """

    outcome: Outcome
    scored_at: float | None = None
    parked: ParkedLabel | None = None


START = "0-0"
"""The journal position before any entry, with one journal or several."""


@dataclass(frozen=True)
class JournalEntry:
    """One journal entry: a scored event, or a label joined to its scored event.

    ``id`` is the Redis stream id (``<ms>-<seq>``): its time is the entry's stream time.
    ``pending`` is what was recorded at scoring time (field ``r``, the event's record as
    scored: :func:`journaled`); a label adds its target ``y`` and ``source``
    (topic/partition/offset, field ``s``). With several journals merged, ``positions`` holds
    the stream id of each once the entry is read.
    """

    id: str
    pending: Pending
    y: float | None = None
    source: str | None = None
    positions: str = ""

    @property
    def time(self) -> float:
        """Stream time of the entry, epoch seconds."""
        return int(self.id.split("-", 1)[0]) / 1000.0

    @property
    def position(self) -> str:
        """The journal position once this entry is read: where a reader goes on from."""
        return self.positions or self.id

    @classmethod
    def decode(
        cls, entry_id: bytes, fields: dict[bytes, bytes], layout: Layout, positions: str = ""
    ) -> JournalEntry:
        y = fields.get(b"y")
        source = fields.get(b"s")
        entity, pending = journaled(fields)
        return cls(
            id=entry_id.decode(),
            pending=layout.decode(pending, EntityKey(entity.decode())),
            y=float(y) if y is not None else None,
            source=source.decode() if source is not None else None,
            positions=positions,
        )


def journaled(fields: dict[bytes, bytes]) -> tuple[bytes, bytes]:
    """A journal entry's encoded entity and pending record: from the event's record as scored
    (``r``: ``S``, the entity, ``\n``, its source, its pending record; :meth:`Sources.scored`),
    or, in an entry written before the journal held records, its fields ``e`` and ``p``.

    >>> journaled({b"r": Sources("t/").scored(EntityKey("a"), "t/0/7", b"<pending>")})
    (b'a', b'<pending>')
    >>> journaled({b"e": b"a", b"p": b"<pending>"})
    (b'a', b'<pending>')
    """
    record = fields.get(b"r")
    if record is None:
        return fields[b"e"], fields[b"p"]
    end = record.index(b"\n", 1)
    return record[1:end], record[Sources.end(record, end + 1) :]


def position_ms(position: str) -> int:
    """Stream time (ms) of the newest entry a journal position includes.

    >>> position_ms("1700000000123-4"), position_ms("1700000000123-4,1700000000456-0,0-0")
    (1700000000123, 1700000000456)
    """
    return max(int(stream_id.split("-", 1)[0]) for stream_id in position.split(","))


def journal_starts(position: str, journals: int) -> list[str]:
    """The stream id of each of ``journals`` journals a position includes.

    >>> journal_starts("0-0", 3)
    ['0-0', '0-0', '0-0']
    >>> journal_starts("5-0,0-0", 2)
    ['5-0', '0-0']
    """
    if position == START:
        return [START] * journals
    starts = position.split(",")
    if len(starts) != journals:
        raise ValueError(
            f"journal position {position!r} names {len(starts)} journals, the deployment has "
            f"{journals} (SCORING_REDIS_CLUSTER_BUCKETS changed, or a single Redis's position on a cluster)"
        )
    return starts


class ScriptError(RuntimeError):
    """The state script answered with an unexpected reply: a bug, never an outage."""


def _checked(value: bytes, allowed: frozenset[str], what: str) -> Any:
    text = value.decode()
    if text not in allowed:
        raise ScriptError(f"state.lua answered {what} {text!r}")
    return text


def _settlement(outcome: bytes, scored_at: bytes = b"", parked: ParkedLabel | None = None) -> Settlement:
    return Settlement(
        outcome=_checked(outcome, _OUTCOMES, "outcome"),
        scored_at=float(scored_at) if scored_at else None,
        parked=parked,
    )


class EntityLayout:
    """How Redis keeps the entity states of a declaration's features (the worker writes them,
    ``state.lua`` folds labels into them): the tag of the layout (4 bytes), float64s (count,
    last time seen or NaN, then n, mean and variance of each statistic: the declared
    fields', then the labels'), then per member field a byte counting the hashes kept and
    the 4-byte hashes, newest first."""

    def __init__(self, features: FeatureSet) -> None:
        self.stats = (*features.stats, LABEL)
        self.members = features.members
        self.tag = zlib.crc32("\n".join((*self.stats, "", *self.members)).encode())
        self.numbers = struct.Struct("<" + "d" * (2 + 3 * len(self.stats)))
        self._tag = self.tag.to_bytes(4, "little")

    @property
    def params(self) -> dict[str, Any]:
        """What ``state.lua`` needs to read and write these states."""
        return {"stats": len(self.stats), "entity_tag": self.tag}

    def unpack(self, raw: bytes) -> EntityState:
        """A stored entity state (``b""``, or one of another layout: a new one)."""
        if raw[:4] != self._tag:
            return EntityState()
        n, last_ts, *stats = self.numbers.unpack_from(raw, 4)
        state = EntityState(
            int(n),
            None if math.isnan(last_ts) else last_ts,
            {name: stats[3 * j : 3 * j + 3] for j, name in enumerate(self.stats) if stats[3 * j]},
        )
        at = 4 + self.numbers.size
        for member in self.members:  # none after a label folded into a new entity
            count = raw[at] if at < len(raw) else 0
            if count:
                state.seen[member] = list(_HASHES[count].unpack_from(raw, at + 1))
            at += 1 + 4 * count
        return state

    def pack(self, state: EntityState) -> bytes:
        """An entity state as Redis keeps it: a worker's, or one an offline replay reached."""
        numbers = [state.n, math.nan if state.last_ts is None else state.last_ts]
        for name in self.stats:
            numbers += state.stats.get(name) or _NO_STAT
        parts = [self._tag, self.numbers.pack(*numbers)]
        for member in self.members:
            hashes = state.seen.get(member, ())
            parts += (_COUNTS[len(hashes)], _HASHES[len(hashes)].pack(*hashes))
        return b"".join(parts)

    def document(self, raw: bytes) -> dict[str, Any]:
        """A stored entity state as :meth:`EntityState.document <stream.features.EntityState.document>`
        writes one (``{}`` for one of another layout)."""
        if int.from_bytes(raw[:4], "little") != self.tag:
            return {}
        return self.unpack(raw).document()


_NO_STAT = (0.0, 0.0, 0.0)
# How many hashes a member field keeps (one byte), and the hashes (4 bytes each), by count.
_COUNTS = [bytes((n,)) for n in range(MEMBERS_KEPT + 1)]
_HASHES = [struct.Struct(f"<{n}I") for n in range(MEMBERS_KEPT + 1)]


@functools.cache
def entity_layout(features: FeatureSet) -> EntityLayout:
    """The entity layout of a declaration's features (made once)."""
    return EntityLayout(features)


@dataclass(frozen=True)
class Sources:
    """Where a use case's events were read, as its records keep it (``state.lua``): for its
    own event topic, two :func:`~stream.runtime.pending.varint` s (the partition + 1, the
    offset: 2 to 6 bytes up to offset 34 billion, where its digits took up to 16);
    otherwise a zero byte, the whole source and a newline (a topic name or ``api`` holds
    none).

    Examples
    --------
    >>> sources = Sources("t1.transactions/")
    >>> sources.stored("t1.transactions/3/1000")
    b'\\x04\\xe8\\x07'
    >>> sources.read(sources.stored("t1.transactions/3/1000") + b"acc-1", 0)
    ('t1.transactions/3/1000', 3)
    >>> sources.read(sources.stored("api"), 0)
    ('api', 5)
    >>> sources.read(sources.stored("t1.transactions/3/007"), 0)  # not as Kafka writes it: kept as text
    ('t1.transactions/3/007', 23)
    """

    topic: str  # the event topic and its "/"

    def stored(self, source: str) -> bytes:
        if source.startswith(self.topic):
            partition_text, _, offset_text = source.removeprefix(self.topic).partition("/")
            partition, offset = natural(partition_text), natural(offset_text)
            if partition is not None and offset is not None:
                return varint(partition + 1) + varint(offset)
        return b"\0" + source.encode() + b"\n"

    def read(self, record: bytes, at: int) -> tuple[str, int]:
        """The source stored at ``at`` in ``record``, and where it ends."""
        if record[at] == 0:
            end = record.index(b"\n", at)
            return record[at + 1 : end].decode(), end + 1
        partition, at = read_varint(record, at)
        offset, at = read_varint(record, at)
        return f"{self.topic}{partition - 1}/{offset}", at

    def scored(self, entity: EntityKey, source: str, pending: bytes) -> bytes:
        """The record of an event of ``entity`` read from ``source``, scored (its pending
        record): what ``state.lua`` stores and journals."""
        return b"S" + entity.encode() + b"\n" + self.stored(source) + pending

    @staticmethod
    def end(record: bytes, at: int) -> int:
        """Where the source stored at ``at`` in ``record`` ends (what :meth:`read` returns
        with it, without reading it: no topic needed)."""
        if record[at] == 0:
            return record.index(b"\n", at) + 1
        return read_varint(record, read_varint(record, at)[1])[1]


def _claim(use_case: UseCase[Any, Any], sources: Sources, event_id: str, record: bytes) -> Claim:
    """What an event's record (``state.lua``'s bytes) says of its claim."""
    status = _STATUS.get(record[:1])
    if status is None:
        raise ScriptError(f"Redis holds a record of status {record[:1]!r}")
    end = record.index(b"\n", 1)
    source, at = sources.read(record, end + 1)
    tail = record[at:]
    if status == "learned":
        tail = tail.split(b"\n", 1)[1]  # after the label's source
    made = layout_of(use_case).recorded(tail, EntityKey(record[1:end].decode()))
    return Claim(source, status, prediction(use_case, event_id, made))


Order = tuple[int, int, int]
"""Where an entry comes in the merged journals: its stream time (ms), journal, sequence."""


def _order(stream_id: bytes | str, journal: int) -> Order:
    ms, _, seq = (stream_id.decode() if isinstance(stream_id, bytes) else stream_id).partition("-")
    return int(ms), journal, int(seq)


@dataclass
class _ReadAhead:
    """A use case's journals (several) as far as they were read: the entries read and not yet
    returned, waiting until every journal is known up to them. A read that goes on from
    ``position`` goes on from here, rather than read them again."""

    position: str  # the journal position once the entries returned so far are read
    read_to: list[str]  # per journal, the last stream id read
    waiting: list[deque[tuple[Order, bytes, list[bytes]]]]  # per journal, read and not returned
    known: list[Order]  # per journal, where an entry not read yet may come, at the earliest
    last: Order  # the last entry returned

    @classmethod
    def at(cls, position: str, journals: int) -> _ReadAhead:
        starts = journal_starts(position, journals)
        orders = [_order(start, journal) for journal, start in enumerate(starts)]
        return cls(position, starts, [deque() for _ in starts], orders, max(orders))

    def add(self, use_case: str, journal: int, entries: list[Any], clock: int, *, complete: bool) -> None:
        """The entries a read of ``journal`` returned, at ``clock`` (its node's, in ms), and all
        there were (``complete``) or as many as asked."""
        waiting = self.waiting[journal]
        for entry_id, fields in entries:
            order = _order(entry_id, journal)
            if order < self.last:
                log.warning(
                    "%s: journal %d holds entry %s stamped before entries already returned (its node's clock "
                    "went back, or a failover to a node behind): returned next, out of the merged order",
                    use_case,
                    journal,
                    entry_id.decode(),
                )
            waiting.append((order, entry_id, fields))
        if entries:
            self.read_to[journal] = entries[-1][0].decode()
        # An entry not read yet comes after the last one read; if the read was complete, it
        # is also stamped no earlier than the node's clock at the read.
        ms, _, seq = _order(self.read_to[journal], journal)
        after = (ms, journal, seq + 1)
        self.known[journal] = max(after, (clock, journal, 0)) if complete else after

    def take(self, count: int, layout: Layout) -> list[JournalEntry]:
        """Up to ``count`` waiting entries, in the merged order, that every journal is known up to."""
        bound = min(self.known)
        heads = [(waiting[0][0], journal) for journal, waiting in enumerate(self.waiting) if waiting]
        heapq.heapify(heads)
        positions = journal_starts(self.position, len(self.waiting))
        read: list[JournalEntry] = []
        while heads and len(read) < count and heads[0][0] < bound:
            order, journal = heapq.heappop(heads)
            waiting = self.waiting[journal]
            _, entry_id, fields = waiting.popleft()
            if waiting:
                heapq.heappush(heads, (waiting[0][0], journal))
            positions[journal] = entry_id.decode()
            record = dict(zip(fields[::2], fields[1::2], strict=True))
            read.append(JournalEntry.decode(entry_id, record, layout, ",".join(positions)))
            self.last = order
        if read:
            self.position = read[-1].position
        return read


# The fewest entries the learner reads from each of several journals at a time; how many
# times it reads again, and after how long, when it found entries of the current millisecond.
_MERGED_READ_MIN = 64
_MERGED_READ_TRIES = 3
_MERGED_READ_PAUSE = 0.002

Params = Callable[[int, list[int]], dict[str, Any]]
"""The parameters of a script call in a bucket, for the items (indices) it handles."""


class StateStore:
    """Batched, atomic access to the service's Redis state."""

    def __init__(self, client: RedisClient, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._script = client.register_script(_SCRIPT)
        age = settings.max_event_age_seconds
        self.event_ttl = (
            max(settings.label_ttl_seconds, age + settings.max_clock_skew_seconds)
            if age
            else (2 * settings.label_ttl_seconds)
        )
        """How long an event's record (and route) lives: as long as an event with its id can
        still be accepted (``max_event_age_seconds`` + ``max_clock_skew_seconds`` after it was
        claimed), so that a redelivered or repeated event is always recognised, and at least
        ``label_ttl_seconds``; without an age limit, twice that."""
        self._buckets: dict[str, Buckets] = {}
        self._ahead: dict[str, _ReadAhead] = {}  # per use case with several journals

    def sources(self, use_case: UseCase[Any, Any]) -> Sources:
        """How ``use_case``'s records keep where its events were read."""
        return Sources(self._settings.topic(use_case.event_topic) + "/")

    def buckets(self, use_case: str) -> Buckets:
        """Where ``use_case``'s keys live."""
        known = self._buckets.get(use_case)
        if known is None:
            known = self._buckets[use_case] = buckets(self._settings, use_case)
        return known

    async def _each(
        self,
        use_case: str,
        command: str,
        items: Iterable[int],
        bucket: Sequence[int],
        params: Params,
        width: int | None,
        arguments: Callable[[int], Sequence[Any]] = lambda _: (),
    ) -> dict[int, list[Any]]:
        """``command`` on ``items`` (indices), each in its bucket (``bucket[item]``): one script
        call per bucket, each on one slot, all sent together (a round trip per cluster node).
        ``arguments`` are each item's own (as many per item, after the parameters).
        Returns each item's ``width`` replies (``None``: one item per bucket, its whole reply)."""
        groups: dict[int, list[int]] = {}
        for item in items:
            groups.setdefault(bucket[item], []).append(item)
        if not groups:
            return {}
        prefixes = self.buckets(use_case).prefixes
        requests = [
            (
                prefixes[b],
                [command, orjson.dumps(params(b, group)), *(v for i in group for v in arguments(i))],
            )
            for b, group in groups.items()
        ]
        replies = await self._run(requests)
        if width is None:
            return {group[0]: reply for group, reply in zip(groups.values(), replies, strict=True)}
        return {
            item: reply[width * j : width * (j + 1)]
            for group, reply in zip(groups.values(), replies, strict=True)
            for j, item in enumerate(group)
        }

    async def _run(self, requests: Sequence[tuple[str, list[Any]]]) -> list[list[Any]]:
        """Each request's script call (its bucket's prefix, its arguments), in order."""
        if len(requests) == 1:
            ((key, args),) = requests
            return [await self._script(keys=[key], args=args)]
        replies = await self._pipelined(requests)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:  # a node that never ran it: a new master after a failover, say
            await self._redis.script_load(_SCRIPT)  # on every master of a cluster
            for i, reply in zip(missing, await self._pipelined([requests[i] for i in missing]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _pipelined(self, requests: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for key, args in requests:
            pipe.execute_command("EVALSHA", self._script.sha, 1, key, *args)
        return await pipe.execute(raise_on_error=False)

    def _everywhere(self, use_case: str) -> tuple[range, range]:
        """Items and buckets for a call in every bucket of ``use_case`` (item ``b``: bucket ``b``)."""
        every = range(len(self.buckets(use_case).prefixes))
        return every, every

    async def read(self, use_case: UseCase[Any, Any], events: Sequence[Arrival]) -> Reading:
        """The stored states of a batch's entities: one ``MGET`` per bucket.

        With several buckets, each event id is first routed to its entity's bucket (the
        first message with that id claims it): another message with that id is a duplicate,
        whatever its entity, and its claim is read (``claimed`` until that message records
        it). Otherwise an id recorded before is found when it is recorded (:meth:`score`).
        """
        layout, sources = self.buckets(use_case.name), self.sources(use_case)
        ids = [encode(event.event_id) for event in events]
        homes = [layout.of(event.entity) for event in events]
        routed: dict[int, tuple[int, str]] = {}  # an id another message claimed: its bucket, source
        if layout.routed:
            routes = await self._each(
                use_case.name,
                "claim",
                range(len(events)),
                [layout.of(event_id) for event_id in ids],
                lambda *_: {"event_ttl": self.event_ttl},
                1,
                lambda i: (ids[i], homes[i], sources.stored(events[i].source)),
            )
            for i, (route,) in routes.items():
                if route:
                    bucket, _, first = route.partition(b"|")
                    routed[i] = int(bucket), sources.read(first, 0)[0]
        keys: dict[int, list[str]] = {}
        for i, (bucket, _) in routed.items():
            keys.setdefault(bucket, []).append(f"{layout.prefixes[bucket]}event:{ids[i]}")
        entities = list(dict.fromkeys(event.entity for i, event in enumerate(events) if i not in routed))
        for entity in entities:
            bucket = layout.of(entity)
            keys.setdefault(bucket, []).append(f"{layout.prefixes[bucket]}entity:{entity}")
        values = {bucket: iter(found) for bucket, found in (await self._get(keys)).items()} if keys else {}
        claims: list[Claim | None] = [None] * len(events)
        for i, (bucket, first) in routed.items():
            record = next(values[bucket])
            claims[i] = (
                _claim(use_case, sources, events[i].event_id, record)
                if record
                else Claim(first, "claimed", b"")
            )
        stored = {entity: next(values[layout.of(entity)]) or b"" for entity in entities}
        return Reading(claims, stored)

    async def _get(self, keys: dict[int, list[str]]) -> dict[int, list[bytes | None]]:
        """The values of each bucket's keys: one ``MGET`` per bucket, all sent together."""
        if len(keys) == 1:
            ((bucket, some),) = keys.items()
            return {bucket: cast(list[bytes | None], await self._redis.mget(some))}
        pipe = self._redis.pipeline(transaction=False)
        for some in keys.values():
            pipe.execute_command("MGET", *some)  # a bucket's keys are on one slot: a cluster's too
        return dict(zip(keys, await pipe.execute(), strict=True))

    async def score(
        self, use_case: UseCase[Any, Any], scored: Sequence[Scored], at: float
    ) -> list[Claim | Changed | None]:
        """Record each event scored at ``at`` and write its entity's state, if the entity is
        still as read: one script call per bucket.

        Under an implicit label policy each event also starts maturing. Returns, for each
        event, ``None`` when this call recorded it, ``"changed"`` when its entity changed
        since it was read (nothing done), else the claim of whoever recorded it first (a
        redelivery or a repeated API request racing this one, or another message with the
        same id).
        """
        layout, sources = self.buckets(use_case.name), self.sources(use_case)
        maturity = use_case.labels.maturity_seconds
        params = {
            "event_ttl": self.event_ttl,
            "entity_ttl": self._settings.entity_ttl_seconds,
            "journal_max": self._settings.journal_max_entries,
            "matures_at": None if maturity is None else at + maturity,
        }
        replies = await self._each(
            use_case.name,
            "score",
            range(len(scored)),
            [layout.of(event.entity) for event in scored],
            lambda *_: params,
            1,
            lambda i: (
                encode(scored[i].event_id),
                scored[i].entity,
                scored[i].read,
                scored[i].state,
                sources.scored(scored[i].entity, scored[i].source, scored[i].pending),
            ),
        )
        return [
            None
            if not (reply := replies[i][0])
            else "changed"
            if reply == b"changed"
            else _claim(use_case, sources, event.event_id, reply)
            for i, event in enumerate(scored)
        ]

    def _learning(self, use_case: UseCase[Any, Any]) -> dict[str, Any]:
        """The parameters of ``state.lua``'s ``learn``: what learning an event needs."""
        return {
            **entity_layout(use_case.features).params,
            "label_ttl": self._settings.label_ttl_seconds,
            "now": time.time(),
            "decay": use_case.features.decay,
            "entity_ttl": self._settings.entity_ttl_seconds,
            "journal_max": self._settings.journal_max_entries,
        }

    async def settle(
        self, use_case: UseCase[Any, Any], labels: Sequence[ArrivedLabel], wait_seconds: float
    ) -> list[Settlement]:
        """Join each label to its event, once per event.

        A joined label goes to the journal, and its target to its entity's label statistic,
        atomically. A label whose event is not scored yet is parked
        with its record (which must hold the target as ``y``) for ``wait_seconds``, in the
        bucket of its event id: with the event when there is one bucket (one call), after
        a call in the event's bucket that found it unscored when there are several.
        """
        name, layout = use_case.name, self.buckets(use_case.name)
        learning = self._learning(use_case)
        deadline = learning["now"] + wait_seconds
        ids = [encode(label.event_id) for label in labels]
        id_buckets = [layout.of(event_id) for event_id in ids]
        homes = list(id_buckets)  # the buckets of their events: with one bucket, the ids'
        settlements: dict[int, Settlement] = {}

        def parking(i: int) -> tuple[str, str, bytes]:
            return ids[i], labels[i].source, labels[i].parked

        if layout.routed:
            routes = await self._each(
                name, "route", range(len(labels)), id_buckets, lambda *_: {"deadline": deadline}, 2, parking
            )
            for i, (outcome, bucket) in routes.items():
                if outcome == b"routed":
                    homes[i] = int(bucket)
                else:  # an event id never seen: the label waits for it (or is a second one)
                    settlements[i] = _settlement(outcome)
        joined = await self._each(
            name,
            "settle",
            (i for i in range(len(labels)) if i not in settlements),
            homes,
            lambda *_: {**learning, "deadline": deadline},
            2,
            lambda i: (*parking(i), labels[i].y, "1" if id_buckets[i] == homes[i] else ""),
        )
        settlements |= {i: _settlement(o, scored) for i, (o, scored) in joined.items() if o != b"unscored"}
        unscored = (i for i in joined if i not in settlements)
        parked = await self._each(
            name, "park", unscored, id_buckets, lambda *_: {"deadline": deadline}, 1, parking
        )
        settlements |= {i: _settlement(outcome) for i, (outcome,) in parked.items()}
        return [settlements[i] for i in range(len(labels))]

    async def unpark(self, use_case: UseCase[Any, Any], limit: int) -> list[Settlement]:
        """Settle the oldest parked labels whose event got scored or whose wait is over.

        Three steps, each a call per bucket: the parked labels (in their ids' buckets), their
        join (in their events' buckets), taking them off (in their ids' buckets). Whatever
        the order of two workers' steps, a label is learned once, taken off after it is
        learned, and dead-lettered by the one worker that takes it off.
        """
        name, layout = use_case.name, self.buckets(use_case.name)
        dues = await self._each(name, "due", *self._everywhere(name), lambda *_: {"limit": limit}, None)
        waiting: list[tuple[int, str, ParkedLabel | None, int]] = []  # id bucket, id, label, event bucket
        for bucket, reply in dues.items():
            for event_id, record, route in zip(reply[::3], reply[1::3], reply[2::3], strict=True):
                label: ParkedLabel | None = orjson.loads(record) if record else None
                home = int(route) if route else -1 if layout.routed else bucket  # -1: no event yet
                waiting.append((bucket, event_id.decode(), label, home if label is not None else -1))
        learning = self._learning(use_case)
        joined = await self._each(
            name,
            "join",
            (i for i, (*_, home) in enumerate(waiting) if home >= 0),
            [home for *_, home in waiting],
            lambda *_: learning,
            2,
            lambda i: (waiting[i][1], *_source_and_target(waiting[i][2])),
        )
        concluded = await self._each(
            name,
            "unpark",
            range(len(waiting)),
            [bucket for bucket, *_ in waiting],
            lambda _, group: {
                "now": time.time(),
                "labels": [[waiting[i][1], joined.get(i, [b"unscored"])[0].decode()] for i in group],
            },
            1,
        )
        return [
            _settlement(
                outcome,
                joined[i][1] if outcome == b"learn" else b"",
                parked=waiting[i][2] if outcome not in (b"waiting", b"gone") else None,
            )
            for i, (outcome,) in sorted(concluded.items())
        ]

    async def mature(self, use_case: UseCase[Any, Any], now: float, limit: int) -> list[Settlement]:
        """Learn, with the implicit target, the oldest events that matured by ``now`` without a label."""
        target = use_case.labels.implicit_target
        if target is None:
            return []
        params = {**self._learning(use_case), "target": target, "now": now, "limit": limit}
        replies = await self._each(
            use_case.name, "mature", *self._everywhere(use_case.name), lambda *_: params, None
        )
        return [
            _settlement(outcome, scored)
            for reply in replies.values()
            for outcome, scored in zip(reply[::2], reply[1::2], strict=True)
        ]

    def _journals(self, use_case: str) -> list[str]:
        return [prefix + "journal" for prefix in self.buckets(use_case).prefixes]

    async def read_journal(
        self, use_case: UseCase[Any, Any], after: str, count: int, block_ms: int | None = None
    ) -> list[JournalEntry]:
        """Up to ``count`` journal entries after position ``after``, waiting up to ``block_ms`` for one.

        With several journals (a cluster's buckets) the entries come merged in one order, by
        stream time, then bucket, then sequence, which no later read changes: an entry is
        returned only once every journal is known up to it. A journal that returned fewer
        entries than asked is known up to its node's clock at the read (an entry written
        later is stamped later); one that returned as many as asked, up to its last entry.
        Entries stamped in the very millisecond of a read are returned by a read once the
        clocks have passed it, tried again at once.
        """
        journals, layout = self._journals(use_case.name), layout_of(use_case)
        if len(journals) == 1:
            reply = cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                await self._redis.xread({journals[0]: after}, count=count, block=block_ms),
            )
            return [JournalEntry.decode(i, f, layout) for _, entries in reply for i, f in entries]
        for _ in range(_MERGED_READ_TRIES):
            read, unknown = await self._read_merged(use_case.name, layout, after, count)
            if not unknown:
                break
            await asyncio.sleep(_MERGED_READ_PAUSE)
        if not read and block_ms:
            await asyncio.sleep(block_ms / 1000)
        return read

    async def _read_merged(
        self, use_case: str, layout: Layout, after: str, count: int
    ) -> tuple[list[JournalEntry], bool]:
        """The entries after ``after`` that every journal is known up to, in the merged order;
        and whether entries were read that are not known to be next yet."""
        journals = len(self.buckets(use_case).prefixes)
        ahead = self._ahead.get(use_case)
        if ahead is None or ahead.position != after:  # not where the last read ended: start there
            ahead = self._ahead[use_case] = _ReadAhead.at(after, journals)
        asked = max(_MERGED_READ_MIN, count // journals)
        replies = await self._each(
            use_case,
            "read",
            (j for j in range(journals) if len(ahead.waiting[j]) < asked),
            range(journals),
            lambda journal, _: {"after": ahead.read_to[journal], "count": asked},
            None,
        )
        for journal, (clock, entries) in replies.items():
            ahead.add(use_case, journal, entries, int(clock), complete=len(entries) < asked)
        read = ahead.take(count, layout)
        return read, not read and any(ahead.waiting)

    async def journal_head(self, use_case: str) -> str | None:
        """The journal position of the newest entries, if any."""
        pipe = self._redis.pipeline(transaction=False)
        for journal in self._journals(use_case):
            pipe.xrevrange(journal, count=1)
        newest = [entries[0][0].decode() if entries else START for entries in await pipe.execute()]
        return ",".join(newest) if any(stream_id != START for stream_id in newest) else None

    async def trim_journal(self, use_case: str, before: float) -> None:
        """Forget the journal entries older than ``before`` (epoch seconds)."""
        pipe = self._redis.pipeline(transaction=False)
        for journal in self._journals(use_case):
            pipe.xtrim(journal, minid=str(int(before * 1000)), approximate=True)
        await pipe.execute()

    async def restore_entities(
        self, use_case: UseCase[Any, Any], states: Iterable[tuple[EntityKey, EntityState]], chunk: int = 2000
    ) -> int:
        """Write entity states an offline replay reached, as ``state.lua`` keeps them: the
        stream's features continue from them. Returns how many entities were written."""
        ttl, written = self._settings.entity_ttl_seconds, 0
        entities = entity_layout(use_case.features)
        pipe = self._redis.pipeline(transaction=False)
        for entity, state in states:
            prefix = self._entity_prefix(use_case.name, entity)
            pipe.set(f"{prefix}entity:{entity}", entities.pack(state), ex=ttl)
            written += 1
            if written % chunk == 0:
                await pipe.execute()
        await pipe.execute()
        return written

    def _entity_prefix(self, use_case: str, entity: EntityKey) -> str:
        layout = self.buckets(use_case)
        return layout.prefixes[layout.of(entity)]

    async def entity(self, use_case: UseCase[Any, Any], entity: EntityKey) -> dict[str, Any]:
        """An entity's state as stored, as :meth:`EntityState.document
        <stream.features.EntityState.document>` writes one (``{}`` when unknown)."""
        raw = cast(
            bytes | None,
            await self._redis.get(f"{self._entity_prefix(use_case.name, entity)}entity:{entity}"),
        )
        return entity_layout(use_case.features).document(raw) if raw else {}

    async def statuses(self, use_case: str, event_ids: Sequence[str]) -> list[ClaimStatus | None]:
        """What Redis knows of each event id: its status, or ``None`` (never seen, or forgotten)."""
        layout = self.buckets(use_case)
        ids = [encode(event_id) for event_id in event_ids]
        homes: list[int | None] = [0] * len(ids)
        if layout.routed:
            pipe = self._redis.pipeline(transaction=False)
            for event_id in ids:
                pipe.get(f"{layout.prefixes[layout.of(event_id)]}route:{event_id}")
            homes = [int(route.split(b"|", 1)[0]) if route else None for route in await pipe.execute()]
        pipe = self._redis.pipeline(transaction=False)
        for event_id, home in zip(ids, homes, strict=True):
            if home is not None:
                pipe.getrange(f"{layout.prefixes[home]}event:{event_id}", 0, 0)
        found = iter(await pipe.execute())
        return [None if home is None else _STATUS.get(next(found)) for home in homes]

    async def learn_labels(
        self, use_case: UseCase[Any, Any], values: Sequence[tuple[EntityKey, float]]
    ) -> None:
        """Fold each (entity, target) into the entity's label statistic."""
        layout = self.buckets(use_case.name)
        await self._each(
            use_case.name,
            "update",
            range(len(values)),
            [layout.of(entity) for entity, _ in values],
            lambda _, group: {
                **entity_layout(use_case.features).params,
                "decay": use_case.features.decay,
                "entity_ttl": self._settings.entity_ttl_seconds,
                "entities": [values[i][0] for i in group],
                "values": [values[i][1] for i in group],
            },
            None,
        )


def _source_and_target(label: ParkedLabel | None) -> tuple[str, float]:
    assert label is not None, "only parked labels are joined"
    return label["source"], label["y"]
