"""Feature vectors: a pure function of an event and its entity's state *before* the event.

The state itself (counts, exponentially weighted means and variances, last time seen,
sets of values seen) lives in Redis and is updated atomically by ``stream/runtime/lua/state.lua``;
this module only reads a :class:`Prior` snapshot, so the same event and snapshot always
give the same features — which is what lets a redelivered event be scored again exactly.

Examples
--------
>>> import datetime as dt
>>> from stream.records import Transaction
>>> tx = Transaction(event_id="t1", ts=dt.datetime(2026, 1, 5, 3, tzinfo=dt.UTC),
...                  account_id="a", merchant_id="m", amount=100.0, currency="EUR",
...                  channel="online", country="FR")
>>> prior = Prior(n=4, last_ts=tx.ts.timestamp() - 60, stats={"amount": Stat(4, 20.0, 25.0)},
...               seen={"merchant": False, "country": True})
>>> x = transaction_features(tx, prior)
>>> x["amount_z"], x["merchant_new"], x["channel"]
(10.0, 1.0, 'online')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from stream.records import COST_OUTLIER_RATIO, Sale, Transaction

Features = dict[str, float | str]

# Decay of the exponentially weighted statistics: about the last 1/ALPHA observations count.
ALPHA = 0.1
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Stat(NamedTuple):
    """An exponentially weighted statistic: observations, mean and variance."""

    n: int = 0
    mean: float = 0.0
    var: float = 0.0

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))


_NONE: Mapping[str, Any] = MappingProxyType({})


class Prior(NamedTuple):
    """An entity's state just before an event: what the features may know.

    A named tuple, like :class:`Stat`: the scorer builds one per event.
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


_EMPTY_STAT = Stat()


@dataclass(frozen=True)
class Observation:
    """What an event adds to its entity's state."""

    ts: float
    stats: dict[str, float]
    members: dict[str, str]


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _zscore(value: float, stat: Stat) -> float:
    if stat.n < 2:
        return 0.0
    return _clip((value - stat.mean) / (stat.std + 1e-6 * abs(stat.mean) + 1e-9), -10.0, 10.0)


def transaction_observation(tx: Transaction) -> Observation:
    return Observation(
        ts=tx.ts.timestamp(),
        stats={"amount": tx.amount},
        members={"merchant": tx.merchant_id, "country": tx.country},
    )


def transaction_features(tx: Transaction, prior: Prior) -> Features:
    """Features of a transaction given its account's prior state."""
    amount = prior.stat("amount")
    fraud = prior.stat("label")
    gap = prior.gap_seconds(tx.ts.timestamp())
    hour = tx.ts.hour + tx.ts.minute / 60.0  # in the event's own offset
    angle = 2 * math.pi * hour / 24.0
    return {
        "log_amount": math.log1p(tx.amount),
        "amount_z": _zscore(tx.amount, amount),
        "amount_log_ratio": (
            _clip(math.log((tx.amount + 1.0) / (amount.mean + 1.0)), -10.0, 10.0) if amount.n else 0.0
        ),
        "history_log_n": math.log1p(prior.n),
        "log_gap_seconds": math.log1p(gap) if gap is not None else -1.0,
        "merchant_new": 0.0 if prior.seen.get("merchant") else 1.0,
        "country_new": 0.0 if prior.seen.get("country") else 1.0,
        "hour_sin": math.sin(angle),
        "hour_cos": math.cos(angle),
        "account_fraud_rate": fraud.mean if fraud.n else 0.0,
        "channel": tx.channel,
    }


def sale_observation(sale: Sale) -> Observation:
    return Observation(ts=sale.ts.timestamp(), stats={"price": sale.price}, members={})


def sale_features(sale: Sale, prior: Prior) -> Features:
    """Features of a sale given its product-at-store's prior state.

    Nulls and outliers are handled, not crashed on: a missing or absurd cost gives a zero
    margin with a flag, a missing expiry or purchase date gives zero days with a flag.
    """
    cost_usable = sale.cost is not None and sale.price > 0 and sale.cost <= COST_OUTLIER_RATIO * sale.price
    margin = (sale.price - sale.cost) / sale.price if cost_usable and sale.cost is not None else 0.0
    price = prior.stat("price")
    units = prior.stat("label")
    to_expiry = (sale.expiry_date - sale.sale_date).days if sale.expiry_date else None
    on_shelf = (sale.sale_date - sale.purchase_date).days if sale.purchase_date else None
    weekday = sale.sale_date.weekday()
    return {
        "log_price": math.log1p(sale.price),
        "margin": _clip(margin, -1.0, 1.0),
        "margin_missing": 0.0 if cost_usable else 1.0,
        "log_price_ratio": (
            _clip(math.log((sale.price + 0.01) / (price.mean + 0.01)), -3.0, 3.0) if price.n else 0.0
        ),
        "days_to_expiry": _clip(float(to_expiry), -30.0, 60.0) if to_expiry is not None else 0.0,
        "has_expiry": 0.0 if to_expiry is None else 1.0,
        "days_on_shelf": _clip(float(on_shelf), 0.0, 60.0) if on_shelf is not None else 0.0,
        "weekend": 1.0 if weekday >= 5 else 0.0,
        "log_recent_units": math.log1p(units.mean) if units.n else 0.0,
        "recent_units_log_n": math.log1p(units.n),
        "dow": _DAY_NAMES[weekday],
        "category": sale.category,
    }
