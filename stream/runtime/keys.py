"""Ids in Redis keys: data, never key syntax.

Every id that becomes part of a Redis key (an event id, an entity's ids) goes through
:func:`encode` first: it percent-escapes every character outside ``A-Z a-z 0-9 _ . - ~``,
so an encoded id never holds the ``:`` that separates a key's parts (nor ``{`` or ``}``,
which Redis Cluster reads as a hash tag, nor ``%`` itself). The encoding is one-to-one,
and an encoded id is always a whole part of a key: no id can name another entity's key,
or another kind of key (``x:merchant`` is not account ``x``'s merchant set), and an
entity named by several ids (a product at a store) keeps them apart.

Typical ids (``acc-00042``, ``store-07``) are left as they are, so keys stay readable.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NewType
from urllib.parse import quote

EntityKey = NewType("EntityKey", str)
"""An entity's ids, encoded into one part of a key (:func:`entity_key`)."""


def encode(value: str) -> str:
    """``value`` as one part of a Redis key: nothing in it is key syntax."""
    return quote(value, safe="")


def entity_key(ids: Sequence[str]) -> EntityKey:
    """The key part of an entity named by ``ids`` (one or more, in the use case's order)."""
    return EntityKey(":".join(encode(value) for value in ids))
