"""The records on the service's topics: the contract with upstream and downstream systems.

Input records are validated strictly (no silent coercion: ``"12"`` is not an amount);
:func:`parse` turns any payload into a record or a :class:`Rejection` carrying a stable
reason code. Unknown extra fields are ignored. Pydantic does the validation: it parses
JSON and checks types and bounds in one compiled pass and reports every error with a
machine-readable type, which maps onto our reason codes.

Examples
--------
>>> parse(TransactionLabel, b'{"event_id": "t-1", "is_fraud": true}')
TransactionLabel(event_id='t-1', is_fraud=True)
>>> parse(TransactionLabel, b'{"event_id": "t-1", "is_fraud": "yes"}').reason
'bad_type'
>>> parse(TransactionLabel, b'{"event_id": "t-1"').reason
'invalid_json'
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)

from models.drift import Kind, Severity, State

# Bounds past which a value is not a business fact but a bug upstream.
MAX_AMOUNT = 1_000_000.0
MAX_PRICE = 100_000.0
MAX_UNITS = 1_000_000.0


def _timestamp(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value / 1000.0, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{value!r} is not a timestamp in epoch milliseconds") from None
    return value  # anything else is left for the datetime check to reject


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_timestamp),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time", "description": "ISO-8601 with an offset"},
                {"type": "number", "description": "epoch milliseconds"},
            ]
        }
    ),
]
"""ISO-8601 with an offset, or epoch milliseconds."""

Id = Annotated[str, Field(min_length=1, max_length=200)]

OutputField = Literal["score", "forecast"]
"""Where a prediction carries its value: a classifier's ``score``, a regressor's ``forecast``."""
Arm = Literal["live", "canary"]
"""Which version served a prediction: the live one, or the canary beside it (README: Release)."""


class Record(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


class Transaction(Record):
    event_id: Id
    ts: Timestamp
    account_id: Id
    merchant_id: Id
    amount: float = Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    channel: Id
    country: str = Field(pattern=r"^[A-Z]{2}$")


class Label(Record):
    """The true outcome of an event, known later: joined to the event by ``event_id``."""

    event_id: Id


class TransactionLabel(Label):
    is_fraud: bool


class Sale(Record):
    event_id: Id
    ts: Timestamp
    store_id: Id
    product_id: Id
    product_name: str = Field(max_length=500)
    category: Id
    price: float = Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)
    # Cost is often missing and sometimes an outlier in the chain's data: accepted, handled
    # by the features rather than rejected.
    cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    purchase_date: dt.date | None = None
    sale_date: dt.date
    expiry_date: dt.date | None = None


class SaleLabel(Label):
    units_sold: float = Field(ge=0, le=MAX_UNITS, allow_inf_nan=False)


class Prediction(Record):
    event_id: str
    model: str
    model_version: str
    scored_at: dt.datetime
    latency_ms: float
    entity: str
    score: float | None = None
    forecast: float | None = None
    arm: Arm = "live"


def prediction_json(
    event_id: str,
    model: str,
    model_version: str,
    scored_at: str,
    latency_ms: float,
    entity: str,
    output_field: OutputField,
    value: float,
    arm: Arm,
) -> bytes:
    """The bytes of a :class:`Prediction`, made without building one: the scoring hot path.

    ``scored_at`` is the ISO-8601 text of a UTC time ending in ``Z``, as pydantic writes it.

    >>> prediction_json("e1", "fraud", "fraud.3", "2026-01-05T03:00:00Z", 1.5, "acc-1", "score", 0.25, "live")
    b'{"event_id":"e1","model":"fraud","model_version":"fraud.3","scored_at":"2026-01-05T03:00:00Z","latency_ms":1.5,"entity":"acc-1","score":0.25,"forecast":null,"arm":"live"}'
    """
    return orjson.dumps(
        {
            "event_id": event_id,
            "model": model,
            "model_version": model_version,
            "scored_at": scored_at,
            "latency_ms": latency_ms,
            "entity": entity,
            "score": value if output_field == "score" else None,
            "forecast": value if output_field == "forecast" else None,
            "arm": arm,
        }
    )


class DeadLetter(Record):
    source_topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    at: dt.datetime


class Alert(Record):
    """One change of a monitoring alert on ``alerts.drift``: it opens, updates, resolves.

    ``id`` is the same for every change of one alert, so consumers fold changes by id.
    ``at`` and ``first_seen`` are stream time (when the events and labels that raised it
    were written), so a learner that replays its journal emits the same alert again.
    """

    id: str
    state: State
    kind: Kind | Literal["promotion"]
    model: str
    model_version: str
    feature: str | None = None
    detector: str
    statistic: float
    threshold: float
    severity: Severity | Literal["info"]
    window: str
    first_seen: dt.datetime
    at: dt.datetime
    detail: str = ""


AuditAction = Literal["rollback", "promotion", "canary", "bootstrap", "erase"]


class AuditRecord(Record):
    """One administrative action, on ``audit``: who did what to which model, when, and what
    changed (``before`` and ``after``: the live version, or the champion's pipeline).

    ``actor`` is the operator (``user@host`` of a command, ``api@<host>`` of the API) or the service
    itself: ``learner`` (a challenger promoted), ``watch`` (an automatic rollback), ``canary``
    (a canary promoted or rolled back). The learner's records take their ``id`` and ``at`` from
    the journal entry that decided them, so a learner that replays its journal after a crash
    publishes the same records again: consumers keep one per ``id``.
    """

    id: str
    action: AuditAction
    actor: str
    at: dt.datetime
    model: str
    target: str
    before: str | None = None
    after: str | None = None
    detail: str = ""

    @classmethod
    def now(cls, action: AuditAction, actor: str, **what: Any) -> AuditRecord:
        """The record of an operator's ``action``, done now: a new ``id``, ``at`` the time now."""
        return cls(id=str(uuid.uuid4()), action=action, actor=actor, at=dt.datetime.now(dt.UTC), **what)


class Rejection(BaseModel):
    """Why a payload was not accepted: a stable ``reason`` code and a human ``detail``."""

    model_config = ConfigDict(frozen=True)

    reason: str
    detail: str


R = TypeVar("R", bound=Record)

_MISSING = {"missing"}
_BAD_FORMAT = {
    "value_error",
    "string_pattern_mismatch",
    "string_too_short",
    "string_too_long",
    "date_parsing",
    "date_from_datetime_parsing",
    "date_from_datetime_inexact",
    "datetime_parsing",
    "datetime_from_date_parsing",
    "timezone_aware",
}
_OUT_OF_RANGE = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "finite_number",
}


def _reason(error: Any) -> str:
    kind = error["type"]
    if kind in ("json_invalid", "json_type", "model_type", "model_attributes_type"):
        return "invalid_json"
    if kind in _MISSING or (error["loc"] and error.get("input", ...) is None):
        return "missing_field"
    if kind in _BAD_FORMAT:
        return "bad_format"
    if kind in _OUT_OF_RANGE:
        return "out_of_range"
    return "bad_type"


def parse(record_type: type[R], payload: bytes) -> R | Rejection:
    """Validate a raw payload into ``record_type``, or say why it is rejected."""
    try:
        return record_type.model_validate_json(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        first = errors[0]
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in errors)
        return Rejection(reason=_reason(first), detail=detail)


def payload_text(payload: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """The original bytes as text when they are UTF-8, else as base64."""
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"
