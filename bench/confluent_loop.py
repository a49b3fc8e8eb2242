"""Baseline: a plain confluent-kafka loop, consume a batch -> score -> produce -> commit.

One consumer reads both event topics in batches (what has arrived, up to ``BATCH`` messages;
it waits only when nothing has); each batch is scored by :class:`bench.baseline.BaselineScorer` (the
same work as the stock Faust baseline), its predictions and dead letters are produced with
the worker's producer settings, and the offsets are stored once every record is
delivered and committed by librdkafka every ``COMMIT_MS``: at least once, like the worker. The
consumer's fetch waits at most ``FETCH_WAIT_MS`` for data, as a latency-minded plain client
would set it. (It committed after each batch before: a commit request every few
milliseconds at 2,000 events/s, which made its latency seconds on the local broker at times.)

With ``--passthrough`` it does no work at all: it reads the label topics too, as the worker
does, and for each event that names an id it produces ``{"event_id": ..., "scored_at": ...}``
(the batch's time, as a scorer would write it) on the use case's prediction topic with the
event's key, nothing else. It is the broker's floor under the
latency phase's own load (keyed events and labels in, keyed predictions out), where the
fresh-topic floor measures one unkeyed topic alone.

Run by the benchmark as ``python -m bench.confluent_loop [--passthrough]`` with the
``SCORING_*`` environment of :class:`stream.settings.Settings`; SIGINT or SIGTERM stops it
cleanly.
"""

from __future__ import annotations

import datetime as dt
import signal
import sys
from collections import defaultdict
from collections.abc import Sequence
from types import FrameType

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from bench.baseline import BaselineScorer
from stream.kafka import kafka_config
from stream.settings import Settings
from stream.usecases import USE_CASES

BATCH = 1000
WINDOW_SECONDS = 0.05
FETCH_WAIT_MS = 10
COMMIT_MS = 1000


Records = list[tuple[str, bytes, bytes]]
"""``(logical topic, key, value)`` to produce."""


def forwarded(topic: str, messages: Sequence[tuple[bytes, bytes]], scored_at: str) -> Records:
    """The pass-through's records for ``(key, value)`` messages read from logical ``topic``.

    Examples
    --------
    >>> at = "2026-01-05T03:00:00Z"
    >>> forwarded("transactions", [(b"a1", b'{"event_id": "e1", "amount": 3}'), (b"a2", b"{")], at)
    [('predictions.fraud', b'a1', b'{"event_id":"e1","scored_at":"2026-01-05T03:00:00Z"}')]
    >>> forwarded("transactions.labels", [(b"a1", b'{"event_id": "e1", "is_fraud": true}')], at)
    []
    """
    use_case = next((uc for uc in USE_CASES if uc.event_topic == topic), None)
    if use_case is None:  # a label: read, as the worker reads it, and nothing more
        return []
    out: Records = []
    for key, value in messages:
        try:
            event_id = orjson.loads(value)["event_id"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            continue
        out.append(
            (use_case.prediction_topic, key, orjson.dumps({"event_id": event_id, "scored_at": scored_at}))
        )
    return out


def run(settings: Settings, *, passthrough: bool = False) -> None:
    """Score the namespace's event topics (forward them, reading the labels too, with
    ``passthrough``) until SIGINT or SIGTERM."""
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    scorer = BaselineScorer()
    inputs = [uc.event_topic for uc in USE_CASES]
    if passthrough:
        inputs += [uc.label_topic for uc in USE_CASES]
    logical = {settings.topic(topic): topic for topic in inputs}
    consumer = Consumer(
        kafka_config(
            settings,
            {
                "group.id": settings.topic("confluent-loop"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,  # stored once delivered, committed every COMMIT_MS
                "auto.commit.interval.ms": COMMIT_MS,
                "session.timeout.ms": int(settings.session_timeout_seconds * 1000),
                "heartbeat.interval.ms": int(settings.heartbeat_interval_seconds * 1000),
                "fetch.wait.max.ms": FETCH_WAIT_MS,
            },
        )
    )
    producer = Producer(
        kafka_config(settings, {"enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4"})
    )
    consumer.subscribe(list(logical))
    try:
        while not stopping:
            # What has arrived, up to BATCH; wait (at most WINDOW_SECONDS) only when nothing has.
            messages = consumer.consume(num_messages=BATCH, timeout=0)
            if not messages:
                first = consumer.poll(WINDOW_SECONDS)
                if first is None:
                    continue
                messages = [first, *consumer.consume(num_messages=BATCH - 1, timeout=0)]
            batches: defaultdict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
            offsets: dict[tuple[str, int], int] = {}
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                topic, partition = message.topic() or "", message.partition() or 0
                batches[topic].append((message.key() or b"", message.value() or b""))
                offsets[topic, partition] = (message.offset() or 0) + 1
            for topic, read in batches.items():
                if passthrough:
                    records = forwarded(logical[topic], read, dt.datetime.now(dt.UTC).isoformat())
                else:
                    records = scorer.handle(logical[topic], [value for _, value in read])
                for out_topic, key, value in records:
                    while True:
                        try:
                            producer.produce(settings.topic(out_topic), value, key)
                            break
                        except BufferError:  # local queue full: let deliveries drain
                            producer.poll(0.05)
            if producer.flush(30.0):
                raise KafkaException("records undelivered after 30 s")
            consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()])
    finally:
        producer.flush(10.0)
        consumer.close()


if __name__ == "__main__":
    run(Settings.from_env(), passthrough="--passthrough" in sys.argv[1:])
