"""Streams written without the project's simulator: the acceptance checks' own data.

The issue's reviewer checks the service on streams of their own, so these tests do too. A
fraud stream whose fraud depends on channel, country, currency and amount (and on nothing
the built-in declaration was tuned for); a demand stream of a few stores' products whose
units sold depend on category, price and the product's own level. Events are paced: event
``i`` has ``ts = begin + i / rate`` and is due ``i / rate`` seconds after sending starts, its
label ``label_delay`` seconds later, so stream time and the worker's clock advance together
and an offline replay with the same delay sees what the worker saw.

Examples
--------
>>> stream = paced_stream(transactions=3, sales=2, rate=10.0, label_delay=1.0)
>>> [(m.kind, m.at) for m in stream.messages][:3]
[('event', 0.0), ('event', 0.1), ('event', 0.2)]
>>> len(stream.rows["fraud"]), len(stream.rows["demand"])
(3, 2)
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd

from stream.records import Sale, Transaction
from stream.tools.simulator import Message
from stream.usecases import DEMAND, FRAUD, UseCase

BEGIN = dt.datetime(2026, 5, 6, 9, tzinfo=dt.UTC)
"""Event time of every paced stream's first event: the same events whatever the clock says."""

WITH_COUNTRY_AND_CURRENCY = """
[fraud]
champion = "logistic_regression_adam"
challenger = "hoeffding_tree_mc"

[fraud.features]
log_amount = { kind = "numeric", field = "amount", transform = "log1p" }
amount_z = { kind = "zscore", field = "amount" }
history_log_n = { kind = "count", transform = "log1p", drift = false }
merchant_new = { kind = "new_value", field = "merchant_id" }
account_fraud_rate = { kind = "label_mean" }
channel = { kind = "categorical", field = "channel" }
country = { kind = "categorical", field = "country" }
currency = { kind = "categorical", field = "currency" }
"""
"""The declaration a user of these streams writes: the raw fields their fraud depends on,
and a few of the entity's aggregates."""

_CHANNEL = {"pos": -1.5, "online": 1.5, "phone": 0.5}
_COUNTRY = {"BR": -1.2, "AR": -0.5, "US": 0.3, "NG": 2.5, "RU": 2.0}
_CURRENCY = {"BRL": -1.2, "USD": 0.8, "EUR": 1.2}
_CATEGORY = {"dairy": 2.2, "bakery": 2.5, "produce": 1.8, "household": 1.2}


@dataclass(frozen=True)
class PacedStream:
    """Messages to send in real time, and each use case's rows: ``(payload, target)`` in order."""

    messages: list[Message]
    rows: dict[str, list[tuple[dict[str, Any], float]]]


Concept = Literal["additive", "interactions"]


def fraud_logit(amount: float, channel: str, country: str, currency: str) -> float:
    """The concept: additive in the categories and the log amount, so a plain logistic
    regression on one-hot fields and the scaled amount can learn it exactly."""
    return -3.0 + _CHANNEL[channel] + _COUNTRY[country] + _CURRENCY[currency] + 1.5 * (math.log(amount) - 4.0)


def fraud_logit_interacting(amount: float, channel: str, country: str, currency: str) -> float:
    """Another concept: fraud is card-not-present in risky countries, big phone orders and euros
    spent in Brazil, each a conjunction that a logistic regression on one-hot fields cannot
    express and a tree splits out."""
    logit = -4.5 + 0.3 * (math.log(amount) - 4.0)
    if channel == "online" and country in ("NG", "RU"):
        logit += 5.0
    if channel == "phone" and amount > 150.0:
        logit += 4.0
    if currency == "EUR" and country == "BR":
        logit += 3.5
    return logit


_CONCEPTS: dict[Concept, Any] = {"additive": fraud_logit, "interactions": fraud_logit_interacting}

SHIFTED_MIX = {"channel": (1, 1, 6), "country": (1, 1, 6, 1, 1), "currency": (1, 6, 1), "amount_sigma": 0.5}
"""The input mix of the transactions after ``shift_at`` (a new market opens): mostly phone orders
from the US in dollars, of more alike amounts. Their fraud follows the same concept; the
additive concept's scores crowd in its middle, where it separates fraud less well."""


def transaction(
    rng: random.Random, n: str, ts: dt.datetime, concept: Concept = "additive", shifted: bool = False
) -> tuple[dict[str, Any], float]:
    account = rng.randrange(400)
    channel = rng.choices(list(_CHANNEL), weights=SHIFTED_MIX["channel"] if shifted else (5, 3, 1))[0]
    country = rng.choices(list(_COUNTRY), weights=SHIFTED_MIX["country"] if shifted else (6, 2, 2, 1, 1))[0]
    currency = rng.choices(list(_CURRENCY), weights=SHIFTED_MIX["currency"] if shifted else (6, 3, 1))[0]
    sigma = SHIFTED_MIX["amount_sigma"] if shifted else 1.0
    amount = round(min(50_000.0, rng.lognormvariate(4.0, sigma)), 2)
    logit = _CONCEPTS[concept](amount, channel, country, currency)
    fraud = rng.random() < 1.0 / (1.0 + math.exp(-logit))
    payload = {
        "event_id": f"ftx-{n}",
        "ts": ts.isoformat(),
        "account_id": f"acct-{account}",
        "merchant_id": f"m-{rng.randrange(150)}",
        "amount": amount,
        "currency": currency,
        "channel": channel,
        "country": country,
    }
    return payload, float(fraud)


def sale(rng: random.Random, n: str, ts: dt.datetime) -> tuple[dict[str, Any], float]:
    product = rng.randrange(60)
    category = list(_CATEGORY)[product % len(_CATEGORY)]
    price = round(1.0 + (product * 7919 % 97) / 6.0, 2)  # a product keeps its price
    level = _CATEGORY[category] - 0.5 * math.log(price) + ((product * 31) % 7 - 3) * 0.1
    day = ts.date()
    bought = day - dt.timedelta(days=rng.randrange(20))
    cost: float | None = round(price * rng.uniform(0.4, 0.8), 2)
    if rng.random() < 0.15:
        cost = None  # the chain often does not know it
    elif rng.random() < 0.01:
        cost = round(cost * 40, 2)  # a data-entry outlier
    payload = {
        "event_id": f"fs-{n}",
        "ts": ts.isoformat(),
        "store_id": f"store-{rng.randrange(3)}",
        "product_id": f"p-{product}",
        "product_name": f"Product {product}",
        "category": category,
        "price": price,
        "cost": cost,
        "purchase_date": bought,
        "sale_date": day,
        "expiry_date": None if rng.random() < 0.3 else (bought + dt.timedelta(days=rng.randrange(5, 60))),
    }
    return payload, float(np.random.default_rng(rng.getrandbits(32)).poisson(math.exp(level)))


def paced_stream(
    *,
    transactions: int,
    sales: int,
    rate: float,
    label_delay: float,
    frauds_only: bool = False,
    seed: int = 7,
    begin: dt.datetime = BEGIN,
    concept: Concept = "additive",
    shift_at: float | None = None,
) -> PacedStream:
    """``transactions`` and ``sales`` mixed at random, ``rate`` events a second from ``begin``,
    each labelled ``label_delay`` seconds after it (with ``frauds_only``, a transaction only
    if a fraud, as a chargeback feed labels). Accounts and products are the same whatever
    the ``seed``; event ids carry it, so two streams never share one.

    Fraud follows ``concept``: :func:`fraud_logit` (``additive``) or
    :func:`fraud_logit_interacting` (``interactions``). From the event at ``shift_at`` (a
    fraction of the stream) on, transactions come from :data:`SHIFTED_MIX`.
    """
    rng = random.Random(seed)
    kinds = [FRAUD] * transactions + [DEMAND] * sales
    rng.shuffle(kinds)
    messages: list[Message] = []
    rows: dict[str, list[tuple[dict[str, Any], float]]] = {FRAUD.name: [], DEMAND.name: []}
    shift = len(kinds) if shift_at is None else math.ceil(shift_at * len(kinds))
    for i, use_case in enumerate(kinds):
        at = i / rate
        ts = begin + dt.timedelta(seconds=at)
        if use_case is FRAUD:
            payload, target = transaction(rng, f"{seed}-{i}", ts, concept, shifted=i >= shift)
        else:
            payload, target = sale(rng, f"{seed}-{i}", ts)
        rows[use_case.name].append((payload, target))
        entity = ":".join(use_case.entity(use_case.event_type.model_validate(payload))).encode()
        messages.append(Message(use_case.event_topic, entity, orjson.dumps(payload), at, "event"))
        if frauds_only and use_case is FRAUD and not target:
            continue
        body = {"event_id": payload["event_id"], use_case.label_field: _label_value(use_case, target)}
        event_id = payload["event_id"].encode()
        messages.append(
            Message(use_case.label_topic, event_id, orjson.dumps(body), at + label_delay, "label")
        )
    messages.sort(key=lambda m: m.at)  # stable: an event before its label
    return PacedStream(messages, rows)


def _label_value(use_case: UseCase[Any, Any], target: float) -> bool | float:
    return bool(target) if use_case.task == "classification" else target


def records(use_case: UseCase[Any, Any], rows: list[tuple[dict[str, Any], float]]) -> list[tuple[Any, float]]:
    """The rows as the use case's records with their targets, for an offline replay."""
    record_type: type[Transaction | Sale] = use_case.event_type
    return [(record_type.model_validate(payload), target) for payload, target in rows]


def write_history(
    path: Path,
    use_case: UseCase[Any, Any],
    rows: list[tuple[dict[str, Any], float]],
    *,
    problems: bool = False,
) -> Path:
    """The rows as a history file of the documented format (targets as 1/0 and numbers).

    With ``problems``, as a chain's export has them: sales without ``event_id`` and ``ts``
    (each sale's id from its content), one row in 50 twice, and one sale in 40 with an
    expiry date before its purchase date.
    """
    frame = pd.DataFrame([{**payload, use_case.label_field: target} for payload, target in rows])
    if use_case is FRAUD:
        frame[use_case.label_field] = frame[use_case.label_field].astype(int)
    if problems:
        if use_case is DEMAND:
            frame = frame.drop(columns=["event_id", "ts"])
            spoiled = frame.index[::40]
            frame.loc[spoiled, "expiry_date"] = frame.loc[spoiled, "purchase_date"] - dt.timedelta(days=1)
        frame = pd.concat([frame, frame.iloc[::50]]).sort_index(kind="stable")
    frame.to_csv(path, index=False)
    return path
