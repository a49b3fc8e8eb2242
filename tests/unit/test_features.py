"""Features are a pure function of an event and its entity's prior state."""

from __future__ import annotations

import datetime as dt
import math

from stream.features import Prior, Stat, sale_features, transaction_features
from stream.records import Sale, Transaction

T0 = dt.datetime(2026, 11, 20, 23, 30, tzinfo=dt.UTC)


def transaction(amount: float = 50.0, ts: dt.datetime = T0) -> Transaction:
    return Transaction(
        event_id="t",
        ts=ts,
        account_id="a",
        merchant_id="m",
        amount=amount,
        currency="EUR",
        channel="online",
        country="FR",
    )


def sale(**changes: object) -> Sale:
    fields: dict[str, object] = {
        "event_id": "s",
        "ts": T0,
        "store_id": "st",
        "product_id": "p",
        "product_name": "Milk",
        "category": "dairy",
        "price": 2.0,
        "cost": 1.5,
        "purchase_date": dt.date(2026, 11, 18),
        "sale_date": dt.date(2026, 11, 21),
        "expiry_date": dt.date(2026, 11, 25),
    }
    return Sale(**{**fields, **changes})  # type: ignore[arg-type]


def test_first_transaction_of_an_account_is_all_novelty() -> None:
    x = transaction_features(transaction(), Prior())
    assert x["merchant_new"] == 1.0 and x["country_new"] == 1.0
    assert x["amount_z"] == 0.0 and x["log_gap_seconds"] == -1.0 and x["history_log_n"] == 0.0


def test_unusual_amount_and_quick_succession() -> None:
    prior = Prior(
        n=10,
        last_ts=T0.timestamp() - 30,
        stats={"amount": Stat(10, 40.0, 16.0), "label": Stat(2, 0.5, 0.25)},
        seen={"merchant": True, "country": True},
    )
    x = transaction_features(transaction(amount=400.0), prior)
    assert x["amount_z"] == 10.0  # clipped
    assert x["log_gap_seconds"] == math.log1p(30)
    assert x["merchant_new"] == 0.0 and x["account_fraud_rate"] == 0.5
    assert x["hour_cos"] > 0.99  # 23:30 is close to midnight


def test_out_of_order_event_gets_zero_gap() -> None:
    prior = Prior(n=1, last_ts=T0.timestamp() + 60)
    assert prior.is_out_of_order(T0.timestamp())
    assert transaction_features(transaction(), prior)["log_gap_seconds"] == 0.0


def test_sale_features_handle_nulls_and_cost_outliers() -> None:
    normal = sale_features(sale(), Prior())
    assert normal["margin"] == 0.25 and normal["margin_missing"] == 0.0
    assert normal["days_to_expiry"] == 4.0 and normal["has_expiry"] == 1.0
    assert normal["days_on_shelf"] == 3.0 and normal["dow"] == "sat" and normal["weekend"] == 1.0

    missing = sale_features(sale(cost=None, expiry_date=None, purchase_date=None), Prior())
    assert missing["margin"] == 0.0 and missing["margin_missing"] == 1.0
    assert missing["has_expiry"] == 0.0 and missing["days_on_shelf"] == 0.0

    outlier = sale_features(sale(cost=2000.0), Prior())
    assert outlier["margin"] == 0.0 and outlier["margin_missing"] == 1.0

    free = sale_features(sale(price=0.0), Prior())
    assert free["margin_missing"] == 1.0 and all(
        math.isfinite(v) for v in free.values() if isinstance(v, float)
    )


def test_promotion_and_recent_units_context() -> None:
    prior = Prior(n=5, stats={"price": Stat(5, 2.0, 0.0), "label": Stat(3, 12.0, 4.0)})
    x = sale_features(sale(price=1.5), prior)
    assert x["log_price_ratio"] == math.log(1.51 / 2.01)
    assert x["log_recent_units"] == math.log1p(12.0) and x["recent_units_log_n"] == math.log1p(3)
