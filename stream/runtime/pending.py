"""What a scored event leaves in Redis for its label, and what the journal carries: compact.

A scored event waits for its label for up to ``label_ttl_seconds`` (7 days by default), so
its bytes, times the event rate and that TTL, are most of the deployment's Redis. Its
*pending record* is therefore binary and holds no names: the feature vector's values in
the order of the use case's declaration (:attr:`stream.features.FeatureSet.names`), the
prediction and what the published prediction is made again from. The journal carries the
same bytes, so the learner decodes what the scorer encoded.

A pending record is::

    <n: 2 bytes> <prediction: n bytes> <features>

- the *prediction part*: scored at (epoch seconds), latency (ms, as published), the value
  predicted (all three float64), the arm (one byte: 0 live, 1 canary), the version's name
  (its UTF-8 length in one byte, then its bytes, without the ``<model>.`` that starts it),
  then the entity's name as published (the
  rest of the part; empty when it reads as its key, the usual case). It outlives the
  features: once the event is learned,
  ``state.lua`` keeps this part only, so that a redelivered event still gets its
  prediction again, byte for byte (:func:`prediction`);
- the *features*: the layout's tag (4 bytes: a hash of the column names, so that a record
  is never read against another declaration's columns), two bits per column saying how
  its value is written (a byte per 4 columns), then each value: a float64; a small integer
  (-128 to 127: a flag, a count, a default) in one byte; or a text, as its UTF-8 length
  (one byte, or 255 then 4 bytes) and bytes.

Integers are little-endian.

Examples
--------
>>> layout = Layout(("log_amount", "channel", "merchant_new"), "fraud")
>>> made = Recorded("fraud.3", "live", 1772625600.25, 12.5, 0.125, "acc-1")
>>> x = {"log_amount": 4.615, "channel": "pos", "merchant_new": 1.0}
>>> record = layout.encode(x, made, EntityKey("acc-1"))
>>> len(record)
47
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

_SIZE = struct.Struct("<H")  # of the prediction part
_HEAD = struct.Struct("<dddBB")  # scored at, latency (ms), value predicted, arm, version's length
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
        version = made.model_version.removeprefix(f"{self.model}.").encode()
        name = b"" if made.entity == entity else made.entity.encode()
        head = _HEAD.pack(made.scored_at, made.latency_ms, made.y, _ARMS.index(made.arm), len(version))
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
        return b"".join(
            (
                _SIZE.pack(len(head) + len(version) + len(name)),
                head,
                version,
                name,
                self.tag,
                kinds.to_bytes(self._kinds, "little"),
                *values,
            )
        )

    def decode(self, record: bytes, entity: EntityKey) -> Pending:
        """A pending record of this layout, of an event of ``entity``."""
        (n,) = _SIZE.unpack_from(record)
        scored_at, _, y, _, version = _HEAD.unpack_from(record, _SIZE.size)
        at = _SIZE.size + n
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
        start = _SIZE.size + _HEAD.size
        return Pending(
            x=x,
            y_pred=y,
            entity=entity,
            model_version=self.version(record[start : start + version]),
            scored_at=scored_at,
        )

    def version(self, stored: bytes) -> str:
        """A version's name from its stored bytes."""
        text = stored.decode()
        return text if "." in text else f"{self.model}.{text}"

    def recorded(self, record: bytes, entity: EntityKey) -> Recorded:
        """The prediction part of a pending record of an event of ``entity`` (or of what
        ``state.lua`` keeps once it is learned)."""
        (n,) = _SIZE.unpack_from(record)
        scored_at, latency_ms, y, arm, version = _HEAD.unpack_from(record, _SIZE.size)
        start = _SIZE.size + _HEAD.size
        name = record[start + version : _SIZE.size + n].decode()
        return Recorded(
            self.version(record[start : start + version]),
            _ARMS[arm],
            scored_at,
            latency_ms,
            y,
            name or entity,
        )


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
