"""Declared features: what a use case's model sees of an event, as data.

A use case declares its features by name and kind (:data:`Feature`); a
:class:`FeatureSet` compiles them once into what the service needs:

- :meth:`FeatureSet.observe`: what an event adds to its entity's state (the statistics
  and sets of values its aggregates read), applied atomically in Redis by
  ``stream/runtime/lua/state.lua`` and, in an offline replay, by :class:`EntityState`;
- :meth:`FeatureSet.compute`: the feature vector, a pure function of the event and its
  entity's :class:`Prior` (the state *before* the event), so the same event and prior
  always give the same features: a redelivered event is scored again exactly, and a
  bootstrap or a backtest computes what the stream would have.

Kinds: raw fields (``numeric`` with a transform and clip, ``categorical``, ``boolean``),
fields derived from the event alone (``time_of_day``, ``weekday``, ``weekend``,
``days_between``, ``ratio``) and per-entity aggregates of its history before the event
(``count``, ``since_previous``, ``zscore`` and ``log_ratio`` of a field against its
exponentially weighted mean and spread, ``new_value``, ``label_mean``, ``label_count``).

Examples
--------
>>> import datetime as dt
>>> from stream.records import Transaction
>>> features = FeatureSet.from_declaration(Transaction, {
...     "log_amount": {"kind": "numeric", "field": "amount", "transform": "log1p"},
...     "amount_z": {"kind": "zscore", "field": "amount"},
...     "merchant_new": {"kind": "new_value", "field": "merchant_id"},
...     "channel": {"kind": "categorical", "field": "channel"},
... })
>>> tx = Transaction(event_id="t1", ts=dt.datetime(2026, 1, 5, 3, tzinfo=dt.UTC),
...                  account_id="a", merchant_id="m", amount=100.0, currency="EUR",
...                  channel="online", country="FR")
>>> features.observe(tx)
Observation(ts=1767582000.0, stats={'amount': 100.0}, members={'merchant_id': 'm'})
>>> prior = Prior(n=4, last_ts=tx.ts.timestamp() - 60, stats={"amount": Stat(4, 20.0, 25.0)},
...               seen={"merchant_id": False})
>>> x = features.compute(tx, prior)
>>> round(x["log_amount"], 3), x["amount_z"], x["merchant_new"], x["channel"]
(4.615, 10.0, 1.0, 'online')
"""

from __future__ import annotations

import datetime as dt
import math
import types
import typing
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

Features = dict[str, float | str]
"""A feature vector: numbers are scaled by the models, strings one-hot encoded."""

LABEL = "label"
"""The statistic of an entity's labels (its mean and count): fed by joined labels, not events."""

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

MEMBERS_KEPT = 64
"""How many distinct values of a ``new_value`` feature's field an entity remembers: the ones
it was seen with most recently (its state stays bounded; a value it has not had among
those is new)."""


def member_hash(value: str) -> int:
    """The 32-bit hash by which an entity remembers a value it was seen with (CRC-32 of its
    UTF-8): 4 bytes, whatever the value, and no value in clear in the entity's state."""
    return zlib.crc32(value.encode())


# --------------------------------------------------------------------- entity state


class Stat(NamedTuple):
    """An exponentially weighted statistic: observations, mean and variance."""

    n: int = 0
    mean: float = 0.0
    var: float = 0.0

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))


_EMPTY_STAT = Stat()
_NONE: Mapping[str, Any] = MappingProxyType({})


class Prior(NamedTuple):
    """An entity's state just before an event: what the features may know.

    ``stats`` are the exponentially weighted statistics by field (and :data:`LABEL`);
    ``seen`` says, per field of a ``new_value`` feature, whether the entity had that
    event's value among the last :data:`MEMBERS_KEPT` it had.
    """

    n: int = 0
    last_ts: float | None = None
    stats: Mapping[str, Stat] = _NONE
    seen: Mapping[str, bool] = _NONE

    def stat(self, name: str) -> Stat:
        return self.stats.get(name, _EMPTY_STAT)

    def gap_seconds(self, ts: float) -> float | None:
        """Seconds since the entity's latest event; 0 for an out-of-order event."""
        return None if self.last_ts is None else max(0.0, ts - self.last_ts)

    def is_out_of_order(self, ts: float) -> bool:
        return self.last_ts is not None and ts < self.last_ts


class Observation(NamedTuple):
    """What an event adds to its entity's state: its time, statistic values, member values.

    A statistic value of ``None`` (a missing field) leaves the statistic as it is.
    """

    ts: float
    stats: dict[str, float | None]
    members: dict[str, str]


def fold(stat: list[float] | None, value: float, decay: float) -> list[float]:
    """``stat`` (``[n, mean, var]``) with ``value`` folded in: the update ``state.lua`` makes.

    >>> fold(fold(None, 10.0, 0.5), 20.0, 0.5)
    [2, 15.0, 25.0]
    """
    if stat is None:
        return [1, value, 0.0]
    d = value - stat[1]
    return [stat[0] + 1, stat[1] + decay * d, (1 - decay) * (stat[2] + decay * d * d)]


@dataclass(slots=True)
class EntityState:
    """An entity's state: what a worker applies each event to before scoring it (read from
    Redis and written back packed, :class:`stream.runtime.state.EntityLayout`), and what an
    offline replay (bootstrap, backtest) holds in memory, so a stream continues from a
    replay's state. ``state.lua`` folds labels into it in Redis as :meth:`learn` does (a test
    holds the two equal)."""

    n: int = 0
    last_ts: float | None = None
    stats: dict[str, list[float]] = field(default_factory=dict)
    seen: dict[str, list[int]] = field(default_factory=dict)
    """Per member field, the hashes (:func:`member_hash`) of the values seen most recently, newest first."""

    def observe(self, observation: Observation, decay: float) -> Prior:
        """Apply an event's observation; return the state before it."""
        seen = {}
        for name, member in observation.members.items():
            values = self.seen.setdefault(name, [])
            h = member_hash(member)
            seen[name] = h in values
            if seen[name]:
                values.remove(h)
            values.insert(0, h)
            del values[MEMBERS_KEPT:]
        prior = Prior(
            self.n, self.last_ts, {k: Stat(int(v[0]), v[1], v[2]) for k, v in self.stats.items()}, seen
        )
        self.n += 1
        if self.last_ts is None or observation.ts > self.last_ts:
            self.last_ts = observation.ts
        for name, value in observation.stats.items():
            if value is not None:
                self.stats[name] = fold(self.stats.get(name), value, decay)
        return prior

    def learn(self, y: float, decay: float) -> None:
        """Fold a joined label into the entity's :data:`LABEL` statistic."""
        self.stats[LABEL] = fold(self.stats.get(LABEL), y, decay)

    def document(self) -> dict[str, Any]:
        """The entity's state, count, last time seen and statistics, as a document (what
        :meth:`stream.runtime.state.StateStore.entity` reads back from Redis)."""
        doc: dict[str, Any] = {"n": self.n, "stats": self.stats}
        if self.last_ts is not None:
            doc["last_ts"] = f"{self.last_ts:.17g}"
        return doc


# --------------------------------------------------------------------- feature kinds

Transform = Literal["identity", "log1p"]
Range = tuple[float, float]
Column = Callable[[Any, Prior], float | str]
"""One column of the vector: a function of the event and its entity's prior state."""

# What a field holds, as a kind needs it (read from the record's annotations).
FieldType = Literal["number", "text", "boolean", "date", "timestamp"]
_DATES: frozenset[FieldType] = frozenset({"date", "timestamp"})


def _transform(transform: Transform) -> Callable[[float], float]:
    return math.log1p if transform == "log1p" else float


class _Kind(BaseModel):
    """A kind of feature: the fields it reads, what they must hold, the columns it computes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    needs: ClassVar[frozenset[FieldType]] = frozenset()
    drift: bool = Field(
        default=True,
        description="Whether the drift monitor watches it; false for what moves by construction "
        "on a stationary stream (the clock, an entity's age).",
    )

    def fields(self) -> tuple[str, ...]:
        """The event fields it reads."""
        return ()

    def columns(self, name: str) -> list[tuple[str, Column]]:
        """Its named columns, for the feature declared as ``name``."""
        raise NotImplementedError


class _OfField(_Kind):
    field: str

    def fields(self) -> tuple[str, ...]:
        return (self.field,)


class _Valued(_Kind):
    """A number that may be missing: imputed by ``missing``, flagged in ``<name>_missing``."""

    clip: Range | None = None
    missing: float = 0.0
    missing_flag: bool = False

    @model_validator(mode="after")
    def _ordered_clip(self) -> _Valued:
        if self.clip is not None and self.clip[0] > self.clip[1]:
            raise ValueError(f"clip {list(self.clip)} is not [low, high]")
        return self

    def reader(self) -> Callable[[Any, Prior], float | None]:
        """The number before clipping, or ``None`` when missing, as a function of the event
        and the prior (compiled once: it reads its parameters from the closure)."""
        raise NotImplementedError

    def columns(self, name: str) -> list[tuple[str, Column]]:
        raw, missing = self.reader(), self.missing
        value: Column
        if self.clip is None:

            def value(event: Any, prior: Prior) -> float:
                v = raw(event, prior)
                return missing if v is None else float(v)

        else:
            low, high = self.clip

            def value(event: Any, prior: Prior) -> float:
                v = raw(event, prior)
                return missing if v is None else min(high, max(low, v))

        columns: list[tuple[str, Column]] = [(name, value)]
        if self.missing_flag:
            columns.append((f"{name}_missing", lambda e, p: 1.0 if raw(e, p) is None else 0.0))
        return columns


class Numeric(_Valued):
    """A numeric field, transformed then clipped."""

    kind: Literal["numeric"]
    needs = frozenset({"number"})
    field: str
    transform: Transform = "identity"

    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    def reader(self) -> Callable[[Any, Prior], float | None]:
        f, transform = self.field, _transform(self.transform)

        def value(event: Any, prior: Prior) -> float | None:
            v = getattr(event, f)
            return None if v is None else transform(v)

        return value


class Categorical(_OfField):
    """A text field as a category, one-hot encoded by the models."""

    kind: Literal["categorical"]
    needs = frozenset({"text"})
    missing: str = "missing"

    def columns(self, name: str) -> list[tuple[str, Column]]:
        f, absent = self.field, self.missing
        return [(name, lambda e, p: absent if (v := getattr(e, f)) is None else str(v))]


class Boolean(_OfField):
    """A boolean field as 1.0 or 0.0 (0.0 when missing)."""

    kind: Literal["boolean"]
    needs = frozenset({"boolean"})

    def columns(self, name: str) -> list[tuple[str, Column]]:
        f = self.field
        return [(name, lambda e, p: 1.0 if getattr(e, f) else 0.0)]


class TimeOfDay(_OfField):
    """A timestamp's hour in its own offset, as ``<name>_sin`` and ``<name>_cos`` on a 24-hour circle."""

    kind: Literal["time_of_day"]
    needs = frozenset({"timestamp"})

    def columns(self, name: str) -> list[tuple[str, Column]]:
        f = self.field

        def angle(e: Any) -> float:
            ts = getattr(e, f)
            return float(2 * math.pi * (ts.hour + ts.minute / 60.0) / 24.0)

        return [
            (f"{name}_sin", lambda e, p: math.sin(angle(e))),
            (f"{name}_cos", lambda e, p: math.cos(angle(e))),
        ]


class Weekday(_OfField):
    """A date's or timestamp's day of the week, as a category (``mon`` ... ``sun``)."""

    kind: Literal["weekday"]
    needs = _DATES

    def columns(self, name: str) -> list[tuple[str, Column]]:
        f = self.field
        return [(name, lambda e, p: _DAY_NAMES[getattr(e, f).weekday()])]


class Weekend(_OfField):
    """1.0 on a Saturday or a Sunday."""

    kind: Literal["weekend"]
    needs = _DATES

    def columns(self, name: str) -> list[tuple[str, Column]]:
        f = self.field
        return [(name, lambda e, p: 1.0 if getattr(e, f).weekday() >= 5 else 0.0)]


def _date(value: dt.date) -> dt.date:
    # A timestamp counts by its calendar date, in its own offset.
    return value.date() if isinstance(value, dt.datetime) else value


class DaysBetween(_Valued):
    """Days from the date ``start`` to the date ``end``; missing when either is."""

    kind: Literal["days_between"]
    needs = _DATES
    start: str
    end: str

    def fields(self) -> tuple[str, ...]:
        return (self.start, self.end)

    def reader(self) -> Callable[[Any, Prior], float | None]:
        start, end = self.start, self.end

        def value(event: Any, prior: Prior) -> float | None:
            a, b = getattr(event, start), getattr(event, end)
            return None if a is None or b is None else float((_date(b) - _date(a)).days)

        return value


class Ratio(_Valued):
    """``numerator / denominator``; missing when either is, or the ratio falls outside ``valid``."""

    kind: Literal["ratio"]
    needs = frozenset({"number"})
    numerator: str
    denominator: str
    valid: Range | None = None

    def fields(self) -> tuple[str, ...]:
        return (self.numerator, self.denominator)

    def reader(self) -> Callable[[Any, Prior], float | None]:
        numerator, denominator, valid = self.numerator, self.denominator, self.valid

        def value(event: Any, prior: Prior) -> float | None:
            a, b = getattr(event, numerator), getattr(event, denominator)
            if a is None or not b:
                return None
            r = float(a / b)
            return None if valid is not None and not valid[0] <= r <= valid[1] else r

        return value

    def is_outlier(self, event: Any) -> bool:
        """Whether the event has both values but a ratio outside ``valid``."""
        a, b = getattr(event, self.numerator), getattr(event, self.denominator)
        return (
            a is not None
            and bool(b)
            and self.valid is not None
            and not self.valid[0] <= a / b <= self.valid[1]
        )


class Count(_Kind):
    """How many events the entity had before this one."""

    kind: Literal["count"]
    transform: Transform = "identity"

    def columns(self, name: str) -> list[tuple[str, Column]]:
        t = _transform(self.transform)
        return [(name, lambda e, p: t(p.n))]


class SincePrevious(_Valued):
    """Seconds since the entity's previous event (``missing`` for its first)."""

    kind: Literal["since_previous"]
    transform: Transform = "identity"

    def reader(self) -> Callable[[Any, Prior], float | None]:
        transform = _transform(self.transform)

        def value(event: Any, prior: Prior) -> float | None:
            gap = prior.gap_seconds(event.ts.timestamp())
            return None if gap is None else transform(gap)

        return value


class _AgainstMean(_OfField):
    """The event's value against the entity's exponentially weighted statistic of the field,
    clipped; 0 while the entity has fewer than ``known`` values of it, or the event none."""

    needs = frozenset({"number"})
    known: ClassVar[int] = 1
    clip: Range = (-10.0, 10.0)

    @staticmethod
    def deviation(value: float, stat: Stat) -> float:
        raise NotImplementedError

    def columns(self, name: str) -> list[tuple[str, Column]]:
        f, (low, high), known, deviation = self.field, self.clip, self.known, self.deviation

        def against_mean(e: Any, p: Prior) -> float:
            v, stat = getattr(e, f), p.stats.get(f, _EMPTY_STAT)
            if v is None or stat.n < known:
                return 0.0
            return min(high, max(low, deviation(v, stat)))

        return [(name, against_mean)]


class ZScore(_AgainstMean):
    """The field's distance to the entity's exponentially weighted mean, in its spreads."""

    kind: Literal["zscore"]
    known = 2

    @staticmethod
    def deviation(value: float, stat: Stat) -> float:
        return float(value - stat.mean) / (stat.std + 1e-6 * abs(stat.mean) + 1e-9)


class LogRatio(_AgainstMean):
    """``log((value + 1) / (mean + 1))`` against the entity's exponentially weighted mean."""

    kind: Literal["log_ratio"]

    @staticmethod
    def deviation(value: float, stat: Stat) -> float:
        return math.log((value + 1.0) / (stat.mean + 1.0))


class NewValue(_OfField):
    """1.0 when the entity did not have the event's value of the field among the last
    :data:`MEMBERS_KEPT` values it had (never, for most entities)."""

    kind: Literal["new_value"]
    needs = frozenset({"text", "number", "boolean", "date"})

    def columns(self, name: str) -> list[tuple[str, Column]]:
        f = self.field
        return [(name, lambda e, p: 0.0 if p.seen.get(f) else 1.0)]


class LabelMean(_Kind):
    """The exponentially weighted mean of the entity's labels (a rate, for a classifier)."""

    kind: Literal["label_mean"]
    transform: Transform = "identity"

    def columns(self, name: str) -> list[tuple[str, Column]]:
        t = _transform(self.transform)
        return [(name, lambda e, p: t(s.mean) if (s := p.stats.get(LABEL, _EMPTY_STAT)).n else 0.0)]


class LabelCount(_Kind):
    """How many of the entity's labels were learned."""

    kind: Literal["label_count"]
    transform: Transform = "identity"

    def columns(self, name: str) -> list[tuple[str, Column]]:
        t = _transform(self.transform)
        return [(name, lambda e, p: t(p.stats.get(LABEL, _EMPTY_STAT).n))]


Feature = Annotated[
    Union[  # noqa: UP007 (a discriminated union needs the typing form for mypy)
        Numeric,
        Categorical,
        Boolean,
        TimeOfDay,
        Weekday,
        Weekend,
        DaysBetween,
        Ratio,
        Count,
        SincePrevious,
        ZScore,
        LogRatio,
        NewValue,
        LabelMean,
        LabelCount,
    ],
    Field(discriminator="kind"),
]
"""One declared feature, by ``kind``."""

FEATURE_KINDS: dict[str, type[_Kind]] = {
    typing.get_args(cls.model_fields["kind"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(Feature)[0])
}
"""Every kind by its name: the schema README documents."""

_FEATURES = TypeAdapter(dict[str, Feature])


def _type_of(annotation: Any) -> FieldType | None:
    """What a record field holds, ignoring ``None`` and constraints."""
    if typing.get_origin(annotation) is Annotated:
        return _type_of(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (Union, types.UnionType):
        held = {_type_of(a) for a in typing.get_args(annotation) if a is not type(None)}
        return held.pop() if len(held) == 1 else None
    if annotation is bool:
        return "boolean"
    if annotation in (float, int):
        return "number"
    if annotation is str:
        return "text"
    if annotation is dt.datetime or getattr(annotation, "__name__", "") == "AwareDatetime":
        return "timestamp"
    if annotation is dt.date:
        return "date"
    return None


def _check_fields(record: type[BaseModel], name: str, feature: _Kind) -> None:
    for field_name in feature.fields():
        known = record.model_fields.get(field_name)
        if known is None:
            fields = ", ".join(record.model_fields)
            raise ValueError(f"{name}: {field_name!r} is not a field of {record.__name__} (one of: {fields})")
        held = _type_of(known.annotation)
        if held not in feature.needs:
            raise ValueError(
                f"{name}: a {type(feature).__name__} feature needs a {' or '.join(sorted(feature.needs))} "
                f"field; {field_name!r} holds {held or 'something else'}"
            )


class FeatureSet:
    """A use case's declared features, compiled: entity-state updates and feature vectors.

    Parameters
    ----------
    features
        Declared features by name, in the order of the vector.
    decay
        Weight of the newest value in the exponentially weighted statistics (about the
        last ``1 / decay`` values count).
    """

    def __init__(self, features: Mapping[str, Feature], decay: float) -> None:
        self.declared = dict(features)
        self.decay = decay
        self._columns = [c for name, feature in features.items() for c in feature.columns(name)]
        self.names = tuple(name for name, _ in self._columns)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"two features would both be named {_first_repeat(self.names)!r}")
        fields = [(f, feature) for feature in features.values() for f in feature.fields()]
        self.stats = tuple(dict.fromkeys(f for f, k in fields if isinstance(k, ZScore | LogRatio)))
        self.members = tuple(dict.fromkeys(f for f, k in fields if isinstance(k, NewValue)))
        self._ratios = [(name, f) for name, f in features.items() if isinstance(f, Ratio) and f.valid]
        self.drift_exempt = frozenset(
            column
            for name, feature in features.items()
            if not feature.drift
            for column, _ in feature.columns(name)
        )

    @classmethod
    def of_record(
        cls, record: type[BaseModel], features: Mapping[str, Feature], decay: float = 0.1
    ) -> FeatureSet:
        """The features of events of type ``record``; :class:`ValueError` if a field does not fit."""
        for name, feature in features.items():
            _check_fields(record, f"features.{name}", feature)
        return cls(features, decay)

    @classmethod
    def from_declaration(
        cls, record: type[BaseModel], declared: Mapping[str, Any], decay: float = 0.1
    ) -> FeatureSet:
        """Validate a declaration (``{name: {"kind": ..., ...}}``) against the event record."""
        return cls.of_record(record, _FEATURES.validate_python(declared), decay)

    def observe(self, event: Any) -> Observation:
        """What ``event`` adds to its entity's state."""
        return Observation(
            event.ts.timestamp(),
            {f: getattr(event, f) for f in self.stats},
            {m: "" if (v := getattr(event, m)) is None else str(v) for m in self.members},
        )

    def outliers(self, event: Any) -> list[str]:
        """The declared features that take ``event``'s values for outliers (a ratio out of range)."""
        return [name for name, ratio in self._ratios if ratio.is_outlier(event)]

    def compute(self, event: Any, prior: Prior) -> Features:
        """The feature vector of ``event`` given its entity's state before it."""
        return {name: column(event, prior) for name, column in self._columns}


def _first_repeat(names: Iterable[str]) -> str:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return ""
