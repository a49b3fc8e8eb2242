"""The typed topic reader against a real broker: parsing, order, stopping, new topics."""

from __future__ import annotations

import datetime as dt
import io
import threading
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from consumers.audit import audit
from consumers.reader import Delivered, read, tail
from stream.records import DeadLetter, Prediction, SaleLabel, TransactionLabel
from stream.settings import Settings

pytestmark = pytest.mark.integration

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def fraud(i: int, score: float = 0.5) -> Prediction:
    return Prediction(
        event_id=f"t-{i}",
        model="fraud",
        model_version="1",
        scored_at=NOW + dt.timedelta(seconds=i),
        latency_ms=2.5,
        entity=f"acc-{i % 3}",
        score=score,
    )


def dead_letter(i: int) -> DeadLetter:
    return DeadLetter(
        source_topic="transactions",
        partition=0,
        offset=i,
        reason="bad_type",
        detail="amount: Input should be a valid number",
        payload='{"amount": "12"}',
        at=NOW,
    )


def produce(settings: Settings, topic: str, messages: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for key, value in messages:
        producer.produce(settings.topic(topic), value, key=key.encode())
    assert producer.flush(10) == 0


def test_read_parses_records_in_partition_order_and_stops_when_idle(settings: Settings) -> None:
    predictions = [fraud(i) for i in range(12)]
    letters = [dead_letter(i) for i in range(3)]
    produce(settings, "predictions.fraud", [(p.entity, p.to_json()) for p in predictions])
    produce(settings, "deadletter", [("transactions", d.to_json()) for d in letters])

    started = time.monotonic()
    got = list(read(settings, ["predictions.fraud", "deadletter"], idle_timeout=1.0))
    elapsed = time.monotonic() - started

    assert elapsed < 30.0  # it stopped by itself once idle: a guard against a hang, not a speed bound
    assert {d.topic for d in got} == {"predictions.fraud", "deadletter"}
    assert sorted((d.parse() for d in got if d.topic == "deadletter"), key=str) == sorted(letters, key=str)
    read_predictions = [d.parse() for d in got if d.topic == "predictions.fraud"]
    assert sorted(read_predictions, key=str) == sorted(predictions, key=str)
    for entity in {p.entity for p in predictions}:  # one key: one partition, produce order
        mine = [d for d in got if d.key == entity.encode()]
        assert len({d.partition for d in mine}) == 1
        assert [d.parse() for d in mine] == [p for p in predictions if p.entity == entity]
    for topic, partition in {(d.topic, d.partition) for d in got}:
        offsets = [d.offset for d in got if (d.topic, d.partition) == (topic, partition)]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert all(
        d.timestamp is not None and abs(d.timestamp - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
        for d in got
    )


def test_reading_a_topic_that_does_not_exist_yet_creates_it_first(settings: Settings) -> None:
    settings = settings.replace(topic_partitions=3)
    name = settings.topic("predictions.demand")
    got: list[Delivered] = []
    reader = threading.Thread(
        target=lambda: got.extend(read(settings, ["predictions.demand"], idle_timeout=15.0, max_messages=3))
    )
    reader.start()
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    deadline = time.monotonic() + 10
    while name not in admin.list_topics(timeout=5).topics and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(admin.list_topics(name, timeout=5).topics[name].partitions) == 3
    time.sleep(settings.session_timeout_seconds)  # subscribed and assigned by now
    produce(settings, "predictions.demand", [("e", fraud(i).to_json()) for i in range(3)])
    reader.join(timeout=15)
    assert not reader.is_alive()
    assert [d.parse() for d in got] == [fraud(i) for i in range(3)]


def test_max_messages_stop_and_a_named_group_resuming(settings: Settings) -> None:
    produce(settings, "predictions.fraud", [("k", fraud(i).to_json()) for i in range(5)])

    assert list(read(settings, ["predictions.fraud"], stop=lambda: True)) == []
    first = list(read(settings, ["predictions.fraud"], group="ops", max_messages=3))
    rest = list(read(settings, ["predictions.fraud"], group="ops", idle_timeout=1.0))
    again = list(read(settings, ["predictions.fraud"], max_messages=5))

    assert [d.offset for d in first + rest] == [d.offset for d in again] == [0, 1, 2, 3, 4]


def test_unknown_topics_are_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown topic"):
        next(read(settings, ["transactions.unknown"]))


class LinesThenInterrupt(io.StringIO):
    """An output that presses Ctrl-C once it holds ``lines`` lines."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines = lines

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.getvalue().count("\n") >= self.lines:
            raise KeyboardInterrupt
        return written


def test_tail_prints_a_line_per_record_and_survives_garbage(settings: Settings) -> None:
    produce(settings, "predictions.fraud", [("k", fraud(1, 0.25).to_json()), ("k", b"\xff{")])
    out = LinesThenInterrupt(2)

    tail(settings, ["predictions.fraud"], out=out, from_beginning=True)

    good, bad = out.getvalue().splitlines()
    assert "predictions.fraud[" in good and "event_id=t-1" in good and "score=0.25" in good
    assert "WARNING unparseable (invalid_json)" in bad and 'base64 payload "/3s="' in bad


def test_audit_tallies_the_service_topics(settings: Settings) -> None:
    predictions = [fraud(i, score=i / 10) for i in range(4)] + [fraud(0)]  # one redelivered
    produce(settings, "predictions.fraud", [("k", p.to_json()) for p in predictions])
    produce(
        settings,
        "transactions.labels",
        [(f"t-{i}", TransactionLabel(event_id=f"t-{i}", is_fraud=i >= 2).to_json()) for i in range(4)]
        + [("x", b'{"event_id": "t-9", "is_fraud": "yes"}')],
    )
    produce(settings, "sales.labels", [("s", SaleLabel(event_id="s-1", units_sold=2).to_json())])
    produce(settings, "deadletter", [("d", dead_letter(i).to_json()) for i in range(2)])

    result = audit(settings, idle_timeout=1.0, early=10)
    report = result.quality

    fraud_quality = report.model("fraud")
    assert (fraud_quality.messages, fraud_quality.duplicates, fraud_quality.joined) == (5, 1, 4)
    assert fraud_quality.early == fraud_quality.late == 1.0
    assert report.labels == 5 and result.invalid == {"transactions.labels": 1}
    assert result.predictions == {"t-0": 2, "t-1": 1, "t-2": 1, "t-3": 1}
    assert result.dead_letters == {"bad_type": 2}
