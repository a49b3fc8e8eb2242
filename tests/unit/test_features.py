"""Declared features: a pure function of an event and its entity's prior state."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from stream.features import EntityState, FeatureSet, Observation, Prior, Stat, fold
from stream.records import Sale, Transaction
from stream.runtime.state import entity_layout
from stream.usecases import DEMAND, FRAUD

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


def transaction_features(tx: Transaction, prior: Prior) -> dict[str, Any]:
    return FRAUD.features.compute(tx, prior)


def sale_features(s: Sale, prior: Prior) -> dict[str, Any]:
    return DEMAND.features.compute(s, prior)


def test_first_transaction_of_an_account_is_all_novelty() -> None:
    x = transaction_features(transaction(), Prior())
    assert x["merchant_new"] == 1.0 and x["country_new"] == 1.0
    assert x["amount_z"] == 0.0 and x["log_gap_seconds"] == -1.0 and x["history_log_n"] == 0.0


def test_unusual_amount_and_quick_succession() -> None:
    prior = Prior(
        n=10,
        last_ts=T0.timestamp() - 30,
        stats={"amount": Stat(10, 40.0, 16.0), "label": Stat(2, 0.5, 0.25)},
        seen={"merchant_id": True, "country": True},
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
    assert normal["cost_share"] == 0.75 and normal["cost_share_missing"] == 0.0
    assert normal["days_to_expiry"] == 4.0 and normal["days_to_expiry_missing"] == 0.0
    assert normal["days_on_shelf"] == 3.0 and normal["dow"] == "sat" and normal["weekend"] == 1.0

    missing = sale_features(sale(cost=None, expiry_date=None, purchase_date=None), Prior())
    assert missing["cost_share"] == 0.0 and missing["cost_share_missing"] == 1.0
    assert missing["days_to_expiry_missing"] == 1.0 and missing["days_on_shelf"] == 0.0

    outlier = sale_features(sale(cost=2000.0), Prior())  # 1000x the price: a data-entry error
    assert outlier["cost_share"] == 0.0 and outlier["cost_share_missing"] == 1.0

    free = sale_features(sale(price=0.0), Prior())
    assert free["cost_share_missing"] == 1.0 and all(
        math.isfinite(v) for v in free.values() if isinstance(v, float)
    )


def test_promotion_and_recent_units_context() -> None:
    prior = Prior(n=5, stats={"price": Stat(5, 2.0, 0.0), "label": Stat(3, 12.0, 4.0)})
    x = sale_features(sale(price=1.5), prior)
    assert x["log_price_ratio"] == math.log(2.5 / 3.0)
    assert x["log_recent_units"] == math.log1p(12.0) and x["recent_units_log_n"] == math.log1p(3)


def test_the_built_in_declarations_name_their_state_and_exempt_columns() -> None:
    assert FRAUD.features.stats == ("amount",) and FRAUD.features.members == ("merchant_id", "country")
    assert FRAUD.features.drift_exempt == {"hour_sin", "hour_cos", "history_log_n", "log_gap_seconds"}
    assert DEMAND.features.stats == ("price",) and DEMAND.features.members == ()
    assert "cost_share_missing" in DEMAND.features.names


def test_every_kind_computes_from_the_event_and_the_prior() -> None:
    class Event(BaseModel):
        ts: dt.datetime
        flag: bool | None
        size: float | None
        name: str

    features = FeatureSet.from_declaration(
        Event,
        {
            "flag": {"kind": "boolean", "field": "flag"},
            "size": {"kind": "numeric", "field": "size", "clip": [0, 5], "missing": -1, "missing_flag": True},
            "seen_before": {"kind": "count"},
            "gap": {"kind": "since_previous"},
            "size_z": {"kind": "zscore", "field": "size"},
            "name_new": {"kind": "new_value", "field": "name"},
            "rate": {"kind": "label_mean"},
            "labels": {"kind": "label_count"},
            "day": {"kind": "weekday", "field": "ts"},
        },
    )
    event = Event(ts=T0, flag=True, size=9.0, name="x")
    prior = Prior(
        3, T0.timestamp() - 5, {"size": Stat(3, 1.0, 4.0), "label": Stat(2, 0.25, 0.0)}, {"name": True}
    )
    assert features.compute(event, prior) == {
        "flag": 1.0,
        "size": 5.0,
        "size_missing": 0.0,
        "seen_before": 3.0,
        "gap": 5.0,
        "size_z": pytest.approx(4.0),
        "name_new": 0.0,
        "rate": 0.25,
        "labels": 2.0,
        "day": "fri",
    }
    empty = features.compute(Event(ts=T0, flag=None, size=None, name="y"), Prior())
    assert empty["size"] == -1.0 and empty["size_missing"] == 1.0 and empty["flag"] == 0.0
    assert features.observe(Event(ts=T0, flag=None, size=None, name="y")) == Observation(
        T0.timestamp(), {"size": None}, {"name": "y"}
    )


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"x": {"kind": "zscore", "field": "amont"}}, "'amont' is not a field of Transaction"),
        ({"x": {"kind": "numeric", "field": "channel"}}, "needs a number field; 'channel' holds text"),
        ({"x": {"kind": "time_of_day", "field": "amount"}}, "needs a timestamp field"),
    ],
)
def test_a_feature_on_a_missing_or_unfit_field_is_refused(declared: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureSet.from_declaration(Transaction, declared)


def test_an_unknown_kind_or_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        FeatureSet.from_declaration(Transaction, {"x": {"kind": "median", "field": "amount"}})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        FeatureSet.from_declaration(Transaction, {"x": {"kind": "count", "field": "amount"}})


def test_two_columns_of_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="both be named 'hour_sin'"):
        FeatureSet.from_declaration(
            Transaction,
            {"hour": {"kind": "time_of_day", "field": "ts"}, "hour_sin": {"kind": "count"}},
        )


def test_entity_state_folds_events_and_labels_and_reports_the_state_before() -> None:
    state, decay = EntityState(), 0.1
    first = state.observe(Observation(100.0, {"amount": 10.0}, {"merchant_id": "m"}), decay)
    second = state.observe(Observation(90.0, {"amount": None}, {"merchant_id": "m"}), decay)
    state.learn(1.0, decay)
    assert first == Prior(0, None, {}, {"merchant_id": False})
    assert second.n == 1 and second.last_ts == 100.0 and second.seen == {"merchant_id": True}
    assert state.n == 2 and state.last_ts == 100.0  # an earlier event does not move last_ts back
    assert state.stats == {"amount": [1, 10.0, 0.0], "label": fold(None, 1.0, decay)}
    assert state.document() == {"n": 2, "last_ts": "100", "stats": state.stats}


def test_a_packed_entity_state_unpacks_to_the_same_state() -> None:
    features, state = FRAUD.features, EntityState()
    for i, member in enumerate(("a", "b", "a", "c")):
        stats = {name: 10.0 * i if i != 2 else None for name in features.stats}
        state.observe(Observation(100.0 + i, stats, dict.fromkeys(features.members, member)), features.decay)
    state.learn(1.0, features.decay)
    layout = entity_layout(features)
    assert layout.unpack(layout.pack(state)) == state
    labelled_only = EntityState()
    labelled_only.learn(0.0, features.decay)
    assert layout.unpack(layout.pack(labelled_only)) == labelled_only
    assert layout.unpack(b"") == EntityState()
    assert layout.unpack(b"\0\0\0\0" + layout.pack(state)[4:]) == EntityState()  # another declaration's
