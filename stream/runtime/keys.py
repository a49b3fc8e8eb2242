"""Ids in Redis keys: data, never key syntax; and the slots keys hash to on a Redis Cluster.

Every id that becomes part of a Redis key (an event id, an entity's ids) goes through
:func:`encode` first: it percent-escapes every character outside ``A-Z a-z 0-9 _ . - ~``,
so an encoded id never holds the ``:`` that separates a key's parts (nor ``{`` or ``}``,
which Redis Cluster reads as a hash tag, nor ``%`` itself). The encoding is one-to-one,
and an encoded id is always a whole part of a key: no id can name another entity's key,
or another kind of key (``x:merchant`` is not account ``x``'s merchant set), and an
entity named by several ids (a product at a store) keeps them apart.

Typical ids (``acc-00042``, ``store-07``) are left as they are, so keys stay readable.

**Personal data.** With ``SCORING_PII_KEY`` set (``Settings.pii_secret``), an entity's ids
never reach Redis in clear: :func:`entity_key` is then the keyed hash (:func:`pseudonym`:
HMAC-SHA256, its first 128 bits in hex) of their encoding, and :func:`observed` hashes the
values an entity's ``new_value`` sets remember (a merchant, a device: who a person deals
with). An entity's key is all that its state, its events' pending records, the journal and
the label statistic hold of it, so every one of them is keyed by the hash too. 128 bits are
plenty: the hash only has to tell entities apart (two entities of one use case share state
with probability about n² / 2¹²⁹, 10⁻²¹ for a billion entities), and without the key it can
be neither computed nor reversed, however few the ids are (a plain hash of an account number
could be found by trying them all; a keyed one cannot). Event ids are not hashed: they name
transactions, not people, and labels find their events by them.

On a Redis Cluster every key a script call touches must hash to one slot, so a use case's
state is split into **buckets** (``redis_cluster_buckets``), each a key prefix with a hash
tag of its own, ``<namespace>:<use case>:{<use case>.<bucket>.<salt>}:``. An entity's keys
(its state, its events' claims and pending records, the journal they are appended to) go
to the bucket of its :class:`EntityKey`; an event id's route and the labels parked for it,
to the bucket of the encoded id (:meth:`Buckets.of`). The tag is made of the bucket's
number, never of an id: whatever an id holds, it cannot choose the slot of its key. The
salt places bucket ``b`` of ``n`` in the ``b``-th ``n``-th of the 16,384 slots (turned by
the use case's own slot, so that two use cases interleave): a cluster gives its masters
equal ranges of slots, and so equal shares of the buckets. On a single Redis there is one
bucket, the plain prefix ``<namespace>:<use case>:``, and keys are as they always were.

Examples
--------
>>> encode("acc-00042")
'acc-00042'
>>> encode("victim:merchant")
'victim%3Amerchant'
>>> entity_key(("a:b", "c")) == entity_key(("a", "b:c"))
False
>>> entity_key(("store-01", "p-0001"))
'store-01:p-0001'
>>> entity_key(("store-01", "p-0001"), b"a secret")
'3c4420ac37572cac2694b9e1d40f87c3'
>>> pseudonym(b"a secret", "m-0042") == pseudonym(b"a secret", "m-0042") != pseudonym(b"another", "m-0042")
True
>>> buckets(Settings(namespace="t1"), "fraud").prefixes
('t1:fraud:',)
>>> cluster = buckets(Settings(namespace="t1", redis_cluster=True, redis_cluster_buckets=4), "fraud")
>>> cluster.prefixes[cluster.of("acc-00042")]
't1:fraud:{fraud.1.1}:'
>>> hash_tagged(Settings(redis_cluster=True), "fraud")
'{fraud}'
"""

from __future__ import annotations

import functools
import hmac
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NewType
from urllib.parse import quote

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from stream.features import FeatureSet, Observation
from stream.settings import Settings
from stream.usecases import entity_name

EntityKey = NewType("EntityKey", str)
"""An entity's ids, encoded into one part of a key (:func:`entity_key`)."""


def encode(value: str) -> str:
    """``value`` as one part of a Redis key: nothing in it is key syntax."""
    return value if _UNRESERVED.fullmatch(value) else quote(value, safe="")


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
"""What :func:`encode` leaves as it is (``quote``'s own set), checked first: most ids are only
that, and the check is a third of the cost of ``quote`` on them."""


def pseudonym(secret: bytes, value: str) -> str:
    """``value`` as it is stored under a PII key ``secret``: HMAC-SHA256, its first 128 bits in hex
    (never key syntax). The one way personal ids are hashed."""
    return hmac.digest(secret, value.encode(), "sha256")[:16].hex()


def entity_key(ids: Sequence[str], secret: bytes | None = None) -> EntityKey:
    """The key part of an entity named by ``ids`` (one or more, in the use case's order): their
    encodings joined, or, with a PII key ``secret``, the :func:`pseudonym` of that."""
    encoded = ":".join(encode(value) for value in ids)
    return EntityKey(encoded if secret is None else pseudonym(secret, encoded))


def recorded_name(ids: Sequence[str], secret: bytes | None) -> str:
    """How a prediction recorded in Redis names the entity of ``ids`` (:func:`entity_name`, as
    predictions are published), or with a PII key ``secret`` its :func:`entity_key`."""
    return entity_name(tuple(ids)) if secret is None else entity_key(ids, secret)


def observed(features: FeatureSet, event: Any, secret: bytes | None) -> Observation:
    """What ``event`` adds to its entity's state, as stored: with a PII key ``secret``, the values
    its entity's sets remember are :func:`pseudonym` s (``new_value`` only asks whether one was seen)."""
    observation = features.observe(event)
    if secret is None or not observation.members:
        return observation
    return observation._replace(members={m: pseudonym(secret, v) for m, v in observation.members.items()})


@dataclass(frozen=True)
class Buckets:
    """The key prefixes of a use case's buckets: one per hash slot it uses (one on a single Redis)."""

    prefixes: tuple[str, ...]

    @property
    def routed(self) -> bool:
        """Whether an event's claim may live in another bucket than its id's: then a route
        (``route:<id>``, in the id's bucket) says which, and claims the id first."""
        return len(self.prefixes) > 1

    def of(self, part: str) -> int:
        """The bucket of an encoded id or an :class:`EntityKey`."""
        if len(self.prefixes) == 1:
            return 0
        return zlib.crc32(part.encode()) % len(self.prefixes)


def buckets(settings: Settings, use_case: str) -> Buckets:
    """Where the keys of ``use_case`` live in the deployment's Redis."""
    if not settings.redis_cluster:
        return Buckets((settings.key(use_case, ""),))
    count = settings.redis_cluster_buckets
    return Buckets(tuple(settings.key(use_case, f"{{{_tag(use_case, b, count)}}}", "") for b in range(count)))


def hash_tagged(settings: Settings, part: str) -> str:
    """``part`` as a hash tag on a Redis Cluster (the keys that hold it share its slot), else as is."""
    return f"{{{part}}}" if settings.redis_cluster else part


@functools.cache
def _tag(use_case: str, bucket: int, count: int) -> str:
    """The hash tag of ``bucket`` of ``count``: its slot falls in the bucket's share of the slots."""
    share = REDIS_CLUSTER_HASH_SLOTS // count
    first = (key_slot(use_case.encode()) + bucket * share) % REDIS_CLUSTER_HASH_SLOTS
    salt = 0
    while (key_slot(f"{use_case}.{bucket}.{salt}".encode()) - first) % REDIS_CLUSTER_HASH_SLOTS >= share:
        salt += 1
    return f"{use_case}.{bucket}.{salt}"
