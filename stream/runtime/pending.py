"""What a scored event leaves in Redis for its label, and what the journal carries: compact.

A scored event waits for its label for up to ``label_ttl_seconds`` (7 days by default), so
its bytes, times the event rate and that TTL, are most of the deployment's Redis. Its
*pending record* is therefore binary and holds no names: the feature vector's values in
the order of the use case's declaration (:attr:`stream.features.FeatureSet.names`), the
prediction and what the published prediction is made again from. The journal carries the
same bytes, so the learner decodes what the scorer encoded.

A pending record is::

    <n> <prediction part: n bytes> <features>

- ``n``, the prediction part's length: one byte, or 255 then two bytes;
- the *prediction part*: scored at (epoch seconds) and the value predicted (both float64),
  the latency as published (whole microseconds, a :func:`varint`), the version (a varint:
  4 * its number, as in ``<model>.<number>``, or 4 * the length of its name (which then
  follows) + 2; either plus 1 for the canary arm), then the entity's name as published (the
  rest of the part; empty when it reads as its key, the usual case). It outlives the
  features: once the event is learned,
  ``state.lua`` keeps this part only, so that a redelivered event still gets its
  prediction again, byte for byte (:func:`prediction`);
- the *features*: the layout's tag (4 bytes: a hash of the column names, so that a record
  is never read against another declaration's columns), two bits per column saying how
  its value is written (a byte per 4 columns), then each value: a float64; a small integer
  (-128 to 127: a flag, a count, a default) in one byte; or a text, as its UTF-8 length
  (one byte, or 255 then 4 bytes) and bytes.

A record is most of the memory a waiting event takes, and Redis allocates it in classes
of 16 bytes (96, 112, 128): the time scored, the value and the features' floats are as
exact as computed, and everything else takes the fewest bytes that hold it.

Integers are little-endian.

Examples
--------
>>> layout = Layout(("log_amount", "channel", "merchant_new"), "fraud")
>>> made = Recorded("fraud.3", "live", 1772625600.25, 12.5, 0.125, "acc-1")
>>> x = {"log_amount": 4.615, "channel": "pos", "merchant_new": 1.0}
>>> record = layout.encode(x, made, EntityKey("acc-1"))
>>> len(record)
38
>>> layout.decode(record, EntityKey("acc-1"))["x"]
{'log_amount': 4.615, 'channel': 'pos', 'merchant_new': 1.0}
>>> layout.recorded(record, EntityKey("acc-1")) == made
True
>>> scored_text(1772625600.25)
'2026-03-04T12:00:00.250000Z'
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple, TypedDict

from models.online import Features
from stream.records import Arm, prediction_json
from stream.runtime.keys import EntityKey
from stream.usecases import UseCase

_LONG_SIZE = struct.Struct("<H")  # of a prediction part of 255 bytes or more
_HEAD = struct.Struct("<dd")  # scored at, value predicted
_FLOAT = struct.Struct("<d")
_SMALL = struct.Struct("<b")
_LENGTH = struct.Struct("<I")
_AS_FLOAT, _AS_TEXT, _AS_SMALL = 0, 1, 2  # how a value is written (two bits per column)
_ARMS: tuple[Arm, ...] = ("live", "canary")


class Pending(TypedDict):
    """A pending record, decoded: what a label needs, and what the learner reads."""

    x: Features
    y_pred: float
    entity: EntityKey
    model_version: str
    scored_at: float


class Recorded(NamedTuple):
    """A pending record's prediction part: what its published prediction is made from."""

    model_version: str
    arm: Arm
    scored_at: float
    latency_ms: float
    y: float
    entity: str
    """The entity's name, as the prediction names it (:func:`stream.usecases.entity_name`)."""


class LayoutError(ValueError):
    """A pending record written against another declaration's columns."""


class Layout:
    """How one declaration's feature vectors are written: their values in column order; and
    its model's versions, by their number."""

    def __init__(self, names: Sequence[str], model: str) -> None:
        self.names = tuple(names)
        self.model = model
        self.tag = zlib.crc32("\n".join(self.names).encode()).to_bytes(4, "little")
        self._kinds = (len(self.names) + 3) // 4

    def encode(self, x: Features, made: Recorded, entity: EntityKey) -> bytes:
        """The pending record of an event of ``entity`` scored with features ``x`` (this
        layout's columns)."""
        part = b"".join(
            (
                _HEAD.pack(made.scored_at, made.y),
                varint(round(made.latency_ms * 1000)),
                _stored_version(self.model, made.model_version, made.arm),
                b"" if made.entity == entity else made.entity.encode(),
            )
        )
        kinds = 0
        values = []
        for i, column in enumerate(self.names):
            value = x[column]
            if isinstance(value, str):
                kinds |= _AS_TEXT << 2 * i
                text = value.encode()
                size = len(text)
                values.append((bytes((size,)) if size < 255 else b"\xff" + _LENGTH.pack(size)) + text)
            elif (
                -128 <= value < 128 and float(value).is_integer() and (value or math.copysign(1.0, value) > 0)
            ):
                kinds |= _AS_SMALL << 2 * i  # not -0.0: its sign would be lost
                values.append(_SMALL.pack(int(value)))
            else:
                values.append(_FLOAT.pack(value))
        n = len(part)
        return b"".join(
            (
                bytes((n,)) if n < 255 else b"\xff" + _LONG_SIZE.pack(n),
                part,
                self.tag,
                kinds.to_bytes(self._kinds, "little"),
                *values,
            )
        )

    def decode(self, record: bytes, entity: EntityKey) -> Pending:
        """A pending record of this layout, of an event of ``entity``."""
        start, at = _part(record)
        scored_at, y = _HEAD.unpack_from(record, start)
        _, after = read_varint(record, start + _HEAD.size)  # the latency
        version, _, _ = self._read_version(record, after)
        if record[at : at + 4] != self.tag:
            raise LayoutError(
                "a pending record written against another declaration's features (the declaration "
                f"changed while events waited for their labels); this one's columns are {self.names}"
            )
        at += 4
        kinds = int.from_bytes(record[at : at + self._kinds], "little")
        at += self._kinds
        x: Features = {}
        for i, name in enumerate(self.names):
            kind = kinds >> 2 * i & 3
            if kind == _AS_TEXT:
                size = record[at]
                at += 1
                if size == 255:
                    (size,) = _LENGTH.unpack_from(record, at)
                    at += 4
                x[name] = record[at : at + size].decode()
                at += size
            elif kind == _AS_SMALL:
                x[name] = float(_SMALL.unpack_from(record, at)[0])
                at += 1
            else:
                (x[name],) = _FLOAT.unpack_from(record, at)
                at += 8
        return Pending(x=x, y_pred=y, entity=entity, model_version=version, scored_at=scored_at)

    def _read_version(self, record: bytes, at: int) -> tuple[str, Arm, int]:
        """The version and arm stored at ``at``, and where they end."""
        stored, at = read_varint(record, at)
        arm = _ARMS[stored & 1]
        if not stored & 2:
            return f"{self.model}.{stored >> 2}", arm, at
        end = at + (stored >> 2)
        return record[at:end].decode(), arm, end

    def recorded(self, record: bytes, entity: EntityKey) -> Recorded:
        """The prediction part of a pending record of an event of ``entity`` (or of what
        ``state.lua`` keeps once it is learned)."""
        start, end = _part(record)
        scored_at, y = _HEAD.unpack_from(record, start)
        latency_us, at = read_varint(record, start + _HEAD.size)
        version, arm, at = self._read_version(record, at)
        return Recorded(version, arm, scored_at, latency_us / 1000, y, record[at:end].decode() or entity)


@functools.lru_cache(maxsize=256)
def _stored_version(model: str, name: str, arm: Arm) -> bytes:
    """A version's name and arm as stored: its number if it is ``<model>.<number>``."""
    number = natural(name.removeprefix(f"{model}.")) if name.startswith(f"{model}.") else None
    arm_bit = _ARMS.index(arm)
    if number is not None:
        return varint(number << 2 | arm_bit)
    text = name.encode()
    return varint(len(text) << 2 | 2 | arm_bit) + text


def _part(record: bytes) -> tuple[int, int]:
    """Where a pending record's prediction part starts and ends."""
    size = record[0]
    if size < 255:
        return 1, 1 + size
    (size,) = _LONG_SIZE.unpack_from(record, 1)
    return 3, 3 + size


def natural(text: str) -> int | None:
    """The natural number ``text`` writes as ``str`` writes it (ASCII digits, no leading
    zero), else ``None``: what a varint can keep so that it reads back as the same text.

    >>> natural("12"), natural("012"), natural("²"), natural("-1"), natural("")
    (12, None, None, None, None)
    """
    if not (text.isascii() and text.isdigit()) or (text[0] == "0" and len(text) > 1):
        return None
    return int(text)


_VARINTS = [bytes((n,)) for n in range(128)]


def varint(n: int) -> bytes:
    """A natural number in the fewest bytes: seven bits a byte, low bits first, the top bit
    set on every byte but the last (LEB128).

    >>> varint(5), varint(300), read_varint(varint(300) + b"rest", 0)
    (b'\\x05', b'\\xac\\x02', (300, 2))
    """
    if n < 128:
        if n < 0:
            raise ValueError(f"a varint is a natural number, not {n}")
        return _VARINTS[n]
    out = bytearray()
    while n >= 128:
        out.append(n & 127 | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The :func:`varint` at ``at`` in ``data``, and where it ends."""
    n = shift = 0
    while True:
        byte = data[at]
        at += 1
        n |= (byte & 127) << shift
        if byte < 128:
            return n, at
        shift += 7


@functools.cache
def layout(names: tuple[str, ...], model: str) -> Layout:
    """The layout of a declaration's columns (one per declaration, made once)."""
    return Layout(names, model)


def layout_of(use_case: UseCase[Any, Any]) -> Layout:
    """The layout of ``use_case``'s declared features."""
    return layout(use_case.features.names, use_case.name)


def scored_text(at: float) -> str:
    """A prediction's ``scored_at`` (ISO-8601, UTC, ending in ``Z``) from epoch seconds: the
    scorer's and :func:`prediction`'s, so that a prediction made again is the same bytes."""
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


def prediction(use_case: UseCase[Any, Any], event_id: str, made: Recorded) -> bytes:
    """The prediction published for an event, made again from its record."""
    return prediction_json(
        event_id,
        use_case.name,
        made.model_version,
        scored_text(made.scored_at),
        made.latency_ms,
        made.entity,
        use_case.output_field,
        made.y,
        made.arm,
    )
