"""The simulator: deterministic, exact counts, valid events, known junk, learnable patterns."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import orjson
import pytest

from consumers.quality import WINDOW
from stream.records import Record, Rejection, Sale, SaleLabel, Transaction, TransactionLabel, parse
from stream.tools.cli import build_parser, simulation_config
from stream.tools.simulator import (
    MALFORMED_KINDS,
    Message,
    SendStats,
    SimulationConfig,
    generate,
    labelled_events,
)
from tests.e2e.test_worker import CONFIG as WORKER_CONFIG

START = dt.datetime(2026, 3, 4, 12, 30, tzinfo=dt.UTC)
CONFIG = SimulationConfig(transactions=3000, sales=3000, malformed_rate=0.03, drift_at=0.5, seed=11)


@pytest.fixture(scope="module")
def stream() -> list[Message]:
    return list(generate(CONFIG, start=START))


@pytest.fixture(scope="module")
def transactions() -> list[tuple[dict[str, Any], bool]]:
    config = SimulationConfig(transactions=30_000, sales=0, drift_at=0.5, seed=5)
    return [(p, bool(label)) for _, p, label in labelled_events(config, start=START)]


@pytest.fixture(scope="module")
def sales() -> list[tuple[dict[str, Any], float]]:
    config = SimulationConfig(transactions=0, sales=20_000, drift_at=0.5, seed=5)
    return [(p, float(label)) for _, p, label in labelled_events(config, start=START)]


def timestamp(payload: dict[str, Any]) -> float:
    ts = payload["ts"]
    return ts / 1000 if isinstance(ts, int) else float(ts.timestamp())


def share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values)


# ------------------------------------------------------------------ the stream as a whole


def test_is_deterministic_for_a_seed(stream: list[Message]) -> None:
    assert list(generate(CONFIG, start=START)) == stream
    other = list(generate(SimulationConfig(transactions=50, sales=50, seed=12), start=START))
    assert [m.value for m in other] != [m.value for m in stream[: len(other)]]


def test_exact_counts_and_one_label_after_each_event(stream: list[Message]) -> None:
    counts = Counter((m.topic, m.kind) for m in stream)
    n_malformed = round(CONFIG.malformed_rate * (CONFIG.transactions + CONFIG.sales))
    assert counts["transactions", "event"] == CONFIG.transactions
    assert counts["sales", "event"] == CONFIG.sales
    assert counts["transactions.labels", "label"] == CONFIG.transactions
    assert counts["sales.labels", "label"] == CONFIG.sales
    assert counts["transactions", "malformed"] + counts["sales", "malformed"] == n_malformed
    assert sum(counts.values()) == len(stream)

    seen: dict[str, tuple[int, float]] = {}
    labelled: set[str] = set()
    low, high = CONFIG.label_delay
    for position, message in enumerate(stream):
        if message.kind == "event":
            event_id = orjson.loads(message.value)["event_id"]
            assert event_id not in seen
            seen[event_id] = (position, message.at)
        elif message.kind == "label":
            event_id = orjson.loads(message.value)["event_id"]
            assert message.key == event_id.encode()
            assert event_id not in labelled
            labelled.add(event_id)
            event_position, event_at = seen[event_id]  # KeyError: label before its event
            assert event_position < position
            assert low <= message.at - event_at <= high
    assert labelled == set(seen)


def test_messages_are_in_time_order_at_the_rate(stream: list[Message]) -> None:
    assert all(a.at <= b.at for a, b in itertools.pairwise(stream))
    sent = [m for m in stream if m.kind != "label"]
    assert sent[-1].at == pytest.approx((len(sent) - 1) / CONFIG.rate)
    at_once = list(generate(SimulationConfig(transactions=20, sales=20, rate=0), start=START))
    assert {m.at for m in at_once if m.kind == "event"} == {0.0}


RECORD_TYPES: dict[str, type[Record]] = {
    "transactions": Transaction,
    "sales": Sale,
    "transactions.labels": TransactionLabel,
    "sales.labels": SaleLabel,
}


def test_every_event_is_valid_and_keyed_by_its_entity(stream: list[Message]) -> None:
    for message in stream:
        if message.kind == "malformed":
            continue
        record = parse(RECORD_TYPES[message.topic], message.value)
        assert not isinstance(record, Rejection), (message, record)
        if isinstance(record, Transaction):
            assert message.key == record.account_id.encode()
            assert record.channel in ("online", "pos", "atm")
            assert record.amount == round(record.amount, 2)
        elif isinstance(record, Sale):
            assert message.key == f"{record.store_id}:{record.product_id}".encode()


def test_malformed_payloads_are_rejected_with_their_reason(stream: list[Message]) -> None:
    malformed = [m for m in stream if m.kind == "malformed"]
    assert {m.topic for m in malformed} == {"transactions", "sales"}
    assert Counter(m.expected_reason for m in malformed).keys() == set(MALFORMED_KINDS.values())
    for message in malformed:
        record_type = Transaction if message.topic == "transactions" else Sale
        rejection = parse(record_type, message.value)
        assert isinstance(rejection, Rejection), message
        assert rejection.reason == message.expected_reason, (message, rejection)
    assert any(b"NaN" in m.value for m in malformed)
    assert any(b'"12.50"' in m.value for m in malformed)
    with pytest.raises(UnicodeDecodeError):
        next(m for m in malformed if b"\xe9" in m.value).value.decode()


def test_some_valid_events_carry_unknown_fields(stream: list[Message]) -> None:
    events = [orjson.loads(m.value) for m in stream if m.kind == "event"]
    assert 0 < share("source" in e for e in events) < 0.2


def test_timestamps_are_recent_in_both_forms(stream: list[Message]) -> None:
    events = [orjson.loads(m.value) for m in stream if m.kind == "event"]
    epoch = [e["ts"] for e in events if isinstance(e["ts"], int)]
    assert 0.1 < len(epoch) / len(events) < 0.3
    for event in events:
        ts = event["ts"]
        when = (
            dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
            if isinstance(ts, int)
            else dt.datetime.fromisoformat(ts)
        )
        assert when.utcoffset() == dt.timedelta(0)
        assert START - dt.timedelta(days=4) < when <= START + dt.timedelta(seconds=1)


def test_default_start_is_now() -> None:
    now = dt.datetime.now(dt.UTC)
    for message in generate(SimulationConfig(transactions=30, sales=30, seed=3)):
        if message.kind == "event":
            record_type: type[Sale | Transaction] = Sale if message.topic == "sales" else Transaction
            record = parse(record_type, message.value)
            assert isinstance(record, Sale | Transaction)
            assert now - dt.timedelta(days=4) < record.ts <= now + dt.timedelta(seconds=5)


def test_a_use_cases_events_do_not_depend_on_the_others() -> None:
    alone = list(labelled_events(SimulationConfig(transactions=300, sales=0, seed=2), start=START))
    mixed = labelled_events(SimulationConfig(transactions=300, sales=300, seed=2), start=START)
    assert [e for e in mixed if e[0] == "transactions"] == alone


def test_labelled_events_are_the_generated_events() -> None:
    config = SimulationConfig(transactions=300, sales=300, seed=2)
    events = [m for m in generate(config, start=START) if m.kind == "event"]
    pairs = list(labelled_events(config, start=START))
    assert [orjson.dumps(p) for _, p, _ in pairs] == [m.value for m in events]
    assert [t for t, _, _ in pairs] == [m.topic for m in events]


def test_config_is_validated() -> None:
    for bad in (
        {"transactions": -1},
        {"rate": -1.0},
        {"drift_at": 1.5},
        {"label_delay": (3.0, 1.0)},
        {"malformed_rate": -0.1},
    ):
        with pytest.raises(ValueError):
            SimulationConfig(**bad)
    with pytest.raises(ValueError, match="timezone-aware"):
        next(generate(SimulationConfig(), start=dt.datetime(2026, 1, 1)))


def test_send_stats_summaries() -> None:
    stats = SendStats(counts={("sales", "event"): 3, ("sales", "malformed"): 1, ("sales.labels", "label"): 3})
    assert stats.total == 7
    assert stats.by_topic() == {"sales": 4, "sales.labels": 3}
    assert stats.by_kind() == {"event": 3, "malformed": 1, "label": 3}


# ------------------------------------------------------------------ fraud


def test_fraud_rate_and_bursts() -> None:
    config = SimulationConfig(transactions=30_000, sales=0, seed=8)
    pairs = [(p, bool(label)) for _, p, label in labelled_events(config, start=START)]
    assert 0.015 < share(label for _, label in pairs) < 0.04
    by_account: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for payload, label in pairs:
        by_account[payload["account_id"]].append((timestamp(payload), label))
    fraud_gaps, legit_gaps = [], []
    for history in by_account.values():
        assert all(a[0] <= b[0] for a, b in itertools.pairwise(history))
        for (before, fraud_before), (after, fraud) in itertools.pairwise(history):
            if fraud and fraud_before:
                fraud_gaps.append(after - before)
            elif not fraud:
                legit_gaps.append(after - before)
    assert statistics.median(fraud_gaps) < 5 * 60  # bursts: minutes apart
    assert statistics.median(legit_gaps) > 3600  # habits: hours apart


def test_fraud_concept_before_drift(transactions: list[tuple[dict[str, Any], bool]]) -> None:
    before = transactions[: len(transactions) // 2]
    fraud = [p for p, label in before if label]
    legit = [p for p, label in before if not label]
    typical = statistics.median(p["amount"] for p in legit)

    def night(payloads: list[dict[str, Any]]) -> float:
        return share(dt.datetime.fromtimestamp(timestamp(p), dt.UTC).hour < 6 for p in payloads)

    assert share(p["channel"] in ("online", "atm") for p in fraud) > 0.95
    assert share(p["channel"] in ("online", "atm") for p in legit) < 0.5
    assert statistics.median(p["amount"] for p in fraud) > 3 * typical
    assert night(fraud) > 3 * night(legit)


def test_fraud_concept_changes_after_drift(transactions: list[tuple[dict[str, Any], bool]]) -> None:
    half = len(transactions) // 2
    # An account's home country: where most of its legitimate spending happens.
    countries: dict[str, Counter[str]] = defaultdict(Counter)
    for payload, label in transactions:
        if not label:
            countries[payload["account_id"]][payload["country"]] += 1

    def foreign(payload: dict[str, Any]) -> bool:
        usual = countries[payload["account_id"]]
        return bool(usual) and payload["country"] != usual.most_common(1)[0][0]

    before = [p for p, label in transactions[:half] if label]
    after = [p for p, label in transactions[half:] if label]
    assert share(map(foreign, before)) > 0.7
    assert share(map(foreign, after)) < 0.1
    assert share(p["channel"] == "pos" for p in before) < 0.05
    assert share(p["channel"] == "pos" for p in after) > 0.7
    assert statistics.median(p["amount"] for p in after) < statistics.median(p["amount"] for p in before) / 5


# The configurations whose fraud quality a test or the demo measures over the first and the
# last WINDOW labelled events (consumers.quality): the demo's, with its defaults and as README
# runs it with a drift, and the end-to-end test's.
SUMMARISED = {
    "scoring demo": simulation_config(build_parser().parse_args(["demo"])),
    "scoring demo with a drift": simulation_config(
        build_parser().parse_args(
            ["demo", "--transactions", "30000", "--sales", "2000", "--rate", "4000", "--drift-at", "0.5"]
        )
    ),
    "tests/e2e/test_worker.py": WORKER_CONFIG,
}
FRAUD_FREE_AT_MOST = 400  # transactions in a row: a window shifted by 100 at its ends still holds fraud


@pytest.mark.parametrize("name", SUMMARISED)
def test_every_summarised_window_holds_both_classes_at_every_start_hour(name: str) -> None:
    config = dataclasses.replace(SUMMARISED[name], sales=0)  # the same transactions, faster
    for hour in range(24):
        start = dt.datetime(2026, 3, 4, hour, tzinfo=dt.UTC)
        flags = [bool(label) for _, _, label in labelled_events(config, start=start)]
        for window in (flags[:WINDOW], flags[-WINDOW:]):
            assert 0 < sum(window) < len(window), (hour, sum(window))
        fraud_free = max(len(list(run)) for fraud, run in itertools.groupby(flags) if not fraud)
        assert fraud_free <= FRAUD_FREE_AT_MOST, (hour, fraud_free)


# ------------------------------------------------------------------ sales


def test_sales_have_the_chains_data_problems(sales: list[tuple[dict[str, Any], float]]) -> None:
    payloads = [p for p, _ in sales]
    assert 0.05 < share(p["cost"] is None for p in payloads) < 0.11
    outliers = share(p["cost"] is not None and p["cost"] > 5 * p["price"] for p in payloads)
    assert 0.004 < outliers < 0.02
    assert 0.01 < share(p["purchase_date"] is None for p in payloads) < 0.06
    perishable = [p for p in payloads if p["category"] != "household"]
    assert 0.02 < share(p["expiry_date"] is None for p in perishable) < 0.09
    assert all(p["expiry_date"] is None for p in payloads if p["category"] == "household")
    for p in payloads:
        assert p["cost"] is None or p["cost"] >= 0
        if p["purchase_date"] is not None:
            assert p["purchase_date"] < p["sale_date"]
            if p["expiry_date"] is not None:
                assert p["expiry_date"] >= p["sale_date"]
    assert len({p["category"] for p in payloads}) >= 6


def test_sales_cover_distinct_business_days(sales: list[tuple[dict[str, Any], float]]) -> None:
    payloads = [p for p, _ in sales]
    days = [p["sale_date"] for p in payloads]
    assert len(set(days)) >= 60
    assert days == sorted(days)
    assert max(days) < START.date()
    assert len({(p["store_id"], p["product_id"], p["sale_date"]) for p in payloads}) == len(payloads)
    assert all(label >= 0 and label == int(label) for _, label in sales)


def usual_prices(sales: list[tuple[dict[str, Any], float]]) -> dict[str, float]:
    prices: dict[str, Counter[float]] = defaultdict(Counter)
    for payload, _ in sales:
        prices[payload["product_id"]][payload["price"]] += 1
    return {product: counts.most_common(1)[0][0] for product, counts in prices.items()}


def test_units_respond_to_promotions_and_weekends(sales: list[tuple[dict[str, Any], float]]) -> None:
    usual = usual_prices(sales)
    before = sales[: len(sales) // 2]
    promo = [units for p, units in before if p["price"] < 0.9 * usual[p["product_id"]]]
    regular = [units for p, units in before if p["price"] == usual[p["product_id"]]]
    assert statistics.mean(promo) > 1.5 * statistics.mean(regular)
    weekend = [u for p, u in before if p["sale_date"].weekday() >= 5 and p["price"] == usual[p["product_id"]]]
    weekday = [u for p, u in before if p["sale_date"].weekday() < 3 and p["price"] == usual[p["product_id"]]]
    assert statistics.mean(weekend) > 1.3 * statistics.mean(weekday)


def test_demand_shifts_after_drift(sales: list[tuple[dict[str, Any], float]]) -> None:
    usual = usual_prices(sales)
    half = len(sales) // 2

    def means(part: list[tuple[dict[str, Any], float]]) -> tuple[float, float]:
        regular = [u for p, u in part if p["price"] == usual[p["product_id"]]]
        promo = [u for p, u in part if p["price"] < 0.9 * usual[p["product_id"]]]
        return statistics.mean(regular), statistics.mean(promo)

    regular_before, promo_before = means(sales[:half])
    regular_after, promo_after = means(sales[half:])
    assert regular_after < 0.85 * regular_before  # the competitor takes base demand
    assert promo_after / regular_after > 1.2 * (promo_before / regular_before)  # promos matter more
