"""What both baselines do with events: the worker's work, minus Redis.

Parse the JSON (orjson), check the fields the worker requires, build a small feature dict
straight from the payload (log amount, channel, weekday / log price, category, weekday),
score it with the same default River pipelines as the worker (untrained, like the
worker's during the throughput phase), and return one prediction per valid event and one
dead letter per invalid one. No entity state, no event claims, no cached features.

Examples
--------
>>> scorer = BaselineScorer()
>>> good = b'{"event_id": "t1", "ts": 1767225600000, "account_id": "a", "merchant_id": "m",'
>>> good += b' "amount": 12.5, "currency": "EUR", "channel": "pos", "country": "FR"}'
>>> [(topic, key) for topic, key, _ in scorer.handle("transactions", [good, b"<html>"])]
[('deadletter', b'transactions'), ('predictions.fraud', b'a')]
>>> check("sales", b'{"event_id": "s1", "ts": "2026-01-05T10:00:00"}')
'missing_field'
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import orjson

from models.online import Features, OnlineModel
from models.pipelines import CANDIDATES
from stream.usecases import DEADLETTER_TOPIC, USE_CASES

_COMMON = ("event_id", "ts")
_REQUIRED = {
    "transactions": (*_COMMON, "account_id", "merchant_id", "amount", "currency", "channel", "country"),
    "sales": (*_COMMON, "store_id", "product_id", "product_name", "category", "price", "sale_date"),
}
_BOUNDS = {"transactions": ("amount", 0.0, 1_000_000.0), "sales": ("price", 0.0, 100_000.0)}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _when(value: Any) -> dt.datetime | str:
    """An event's ``ts`` (ISO-8601 with an offset, or epoch milliseconds), or a reason code."""
    if isinstance(value, int) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000.0, dt.UTC)
    if not isinstance(value, str):
        return "bad_type"
    try:
        ts = dt.datetime.fromisoformat(value)
    except ValueError:
        return "bad_format"
    return ts if ts.tzinfo is not None else "bad_format"


def check(topic: str, value: bytes) -> tuple[dict[str, Any], dt.datetime] | str:
    """The payload of a valid event of a logical event topic and its ``ts``, or a reason code."""
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "invalid_json"
    if not isinstance(payload, dict):
        return "invalid_json"
    if any(payload.get(name) is None for name in _REQUIRED[topic]):
        return "missing_field"
    name, low, high = _BOUNDS[topic]
    number = payload[name]
    if isinstance(number, bool) or not isinstance(number, int | float):
        return "bad_type"
    if not (low < number <= high if topic == "transactions" else low <= number <= high):
        return "out_of_range"
    ts = _when(payload["ts"])
    return ts if isinstance(ts, str) else (payload, ts)


def features(topic: str, payload: dict[str, Any], ts: dt.datetime) -> tuple[str, Features]:
    """The entity key and the features of a valid event."""
    if topic == "transactions":
        x: Features = {
            "log_amount": math.log1p(payload["amount"]),
            "channel": str(payload["channel"]),
            "weekday": _DAYS[ts.weekday()],
        }
        return str(payload["account_id"]), x
    day = dt.date.fromisoformat(payload["sale_date"]) if isinstance(payload["sale_date"], str) else ts
    x = {
        "log_price": math.log1p(payload["price"]),
        "category": str(payload["category"]),
        "weekday": _DAYS[day.weekday()],
    }
    return f"{payload['store_id']}:{payload['product_id']}", x


class BaselineScorer:
    """The default pipeline of each use case, and the work of scoring a batch of event payloads."""

    def __init__(self) -> None:
        self.models = {
            uc.name: OnlineModel(uc.name, uc.task, CANDIDATES[uc.task][uc.champion]()) for uc in USE_CASES
        }
        self._use_cases = {uc.event_topic: uc for uc in USE_CASES}

    def handle(self, topic: str, values: Sequence[bytes]) -> list[tuple[str, bytes, bytes]]:
        """``(logical topic, key, value)`` records for event payloads read from logical ``topic``."""
        use_case = self._use_cases[topic]
        out: list[tuple[str, bytes, bytes]] = []
        valid: list[tuple[str, str, Features]] = []  # event id, entity, features
        for value in values:
            checked = check(topic, value)
            if isinstance(checked, str):
                letter = {"source_topic": topic, "reason": checked, "payload": value.decode(errors="replace")}
                out.append((DEADLETTER_TOPIC, topic.encode(), orjson.dumps(letter)))
                continue
            payload, ts = checked
            try:
                entity, x = features(topic, payload, ts)
            except (ValueError, TypeError):
                letter = {"source_topic": topic, "reason": "bad_format", "payload": value.decode()}
                out.append((DEADLETTER_TOPIC, topic.encode(), orjson.dumps(letter)))
                continue
            valid.append((str(payload["event_id"]), entity, x))
        if not valid:
            return out
        model = self.models[use_case.name]
        ys = model.predict_many([x for _, _, x in valid])
        scored_at = dt.datetime.now(dt.UTC).isoformat()
        for (event_id, entity, _), y in zip(valid, ys, strict=True):
            prediction = {
                "event_id": event_id,
                "model": use_case.name,
                "model_version": f"{use_case.name}.0",
                use_case.output_field: y,
                "scored_at": scored_at,
                "entity": entity,
            }
            out.append((use_case.prediction_topic, entity.encode(), orjson.dumps(prediction)))
        return out
