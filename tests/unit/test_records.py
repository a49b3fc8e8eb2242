"""Validation of input payloads: each kind of bad input gets its stable reason code."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from stream.records import (
    Prediction,
    Rejection,
    Sale,
    SaleLabel,
    Transaction,
    TransactionLabel,
    parse,
    payload_text,
    prediction_json,
)

TX = {
    "event_id": "t-1",
    "ts": "2026-11-20T10:00:00+01:00",
    "account_id": "acc-1",
    "merchant_id": "m-1",
    "amount": 12.5,
    "currency": "EUR",
    "channel": "pos",
    "country": "FR",
}
SALE = {
    "event_id": "s-1",
    "ts": 1763632800000,
    "store_id": "st-1",
    "product_id": "p-1",
    "product_name": "Milk 1L",
    "category": "dairy",
    "price": 1.2,
    "cost": None,
    "purchase_date": "2026-11-18",
    "sale_date": "2026-11-20",
    "expiry_date": None,
}


def tx(**changes: object) -> bytes:
    return orjson.dumps({**TX, **changes})


def test_valid_transaction_with_unknown_fields_is_accepted() -> None:
    record = parse(Transaction, tx(extra="ignored"))
    assert isinstance(record, Transaction)
    assert record.ts == dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)


def test_epoch_millis_timestamp() -> None:
    record = parse(Sale, orjson.dumps(SALE))
    assert isinstance(record, Sale)
    assert record.ts == dt.datetime(2025, 11, 20, 10, tzinfo=dt.UTC)
    assert record.cost is None and record.expiry_date is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "invalid_json"),
        (tx()[:-5], "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"\xff\xfe\x00", "invalid_json"),
        (orjson.dumps({k: v for k, v in TX.items() if k != "amount"}), "missing_field"),
        (tx(account_id=None), "missing_field"),
        (tx(amount="12.50"), "bad_type"),
        (tx(amount=True), "bad_type"),
        (tx(ts="yesterday"), "bad_format"),
        (tx(ts=[2026]), "bad_type"),
        (tx(ts=1e20), "bad_format"),
        (tx().replace(b"12.5", b"NaN"), "out_of_range"),
        (tx(amount=-3), "out_of_range"),
        (tx(amount=0), "out_of_range"),
        (tx(amount=1e12), "out_of_range"),
        (tx(currency="euro"), "bad_format"),
        (tx(country="FRA"), "bad_format"),
        (tx(event_id=""), "bad_format"),
    ],
)
def test_bad_transactions_are_rejected_with_their_reason(payload: bytes, reason: str) -> None:
    rejection = parse(Transaction, payload)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == reason, rejection.detail
    assert rejection.detail


def test_naive_timestamp_is_rejected() -> None:
    rejection = parse(Transaction, tx(ts="2026-11-20T10:00:00"))
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "bad_format"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"price": -1}, "out_of_range"),
        ({"cost": -0.5}, "out_of_range"),
        ({"sale_date": "2026-02-30"}, "bad_format"),
        ({"sale_date": None}, "missing_field"),
    ],
)
def test_bad_sales_are_rejected(changes: dict[str, object], reason: str) -> None:
    rejection = parse(Sale, orjson.dumps({**SALE, **changes}))
    assert isinstance(rejection, Rejection)
    assert rejection.reason == reason, rejection.detail


def test_cost_outlier_is_accepted_for_the_features_to_handle() -> None:
    assert isinstance(parse(Sale, orjson.dumps({**SALE, "cost": 1200.0})), Sale)


def test_labels() -> None:
    assert parse(TransactionLabel, b'{"event_id": "t", "is_fraud": false}') == TransactionLabel(
        event_id="t", is_fraud=False
    )
    assert isinstance(parse(SaleLabel, b'{"event_id": "s", "units_sold": 3}'), SaleLabel)
    negative = parse(SaleLabel, b'{"event_id": "s", "units_sold": -1}')
    assert isinstance(negative, Rejection) and negative.reason == "out_of_range"


def test_payload_text_keeps_non_utf8_as_base64() -> None:
    assert payload_text(b"{}") == ("{}", "utf-8")
    assert payload_text(b"\xff") == ("/w==", "base64")


@pytest.mark.parametrize(("field", "value", "arm"), [("score", 0.125, "live"), ("forecast", 7.5, "canary")])
def test_prediction_json_writes_what_the_record_writes(field: str, value: float, arm: str) -> None:
    scored_at = dt.datetime(2026, 1, 5, 3, 4, 5, 678901, tzinfo=dt.UTC)
    record = Prediction(
        event_id="e1",
        model="m",
        model_version="m.3",
        scored_at=scored_at,
        latency_ms=12.345,
        entity="acc-1",
        arm=arm,
        **{field: value},
    )
    text = scored_at.isoformat().replace("+00:00", "Z")
    fast = prediction_json("e1", "m", "m.3", text, 12.345, "acc-1", field, value, arm)  # type: ignore[arg-type]
    assert fast == record.to_json()
    assert Prediction.model_validate_json(fast) == record
