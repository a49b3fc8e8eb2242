"""Publishing records and waiting until the broker has them all.

A confluent-kafka producer: it batches and compresses in librdkafka's own thread, several
times faster than Faust's per-message send. :meth:`Publisher.publish` returns once every
record it was given is delivered, which the caller waits for before acknowledging what
the records came from, so delivery stays at least once. It waits for its own records
only, not for everything in flight (as ``flush`` would): the worker can publish one batch
while it scores the next. A thread serves the producer's delivery reports.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from stream.kafka import KafkaLog, ProducerRecord, kafka_config
from stream.settings import Settings

FLUSH_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.05


class PublishError(KafkaException):
    """Some records were not delivered; they must be published again (a broker outage: transient)."""


class Publisher:
    def __init__(self, settings: Settings) -> None:
        own = {"enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4"}
        self._producer = Producer(
            {**kafka_config(settings, own), **KafkaLog(settings.kafka_bootstrap).options()}
        )
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._serve_reports, name="delivery-reports", daemon=True)
        self._poller.start()

    def _serve_reports(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(POLL_SECONDS)

    async def publish(self, records: Sequence[ProducerRecord]) -> None:
        """Produce (topic, key, value) records and wait for their delivery reports.

        Raises
        ------
        PublishError
            When a record was not delivered (librdkafka retries for up to its
            ``delivery.timeout.ms`` first).
        """
        if not records:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        outstanding = len(records)
        errors: list[KafkaError] = []
        lock = threading.Lock()

        def on_delivery(error: KafkaError | None, _: Message) -> None:  # in the poll thread
            nonlocal outstanding
            with lock:
                if error is not None:
                    errors.append(error)
                outstanding -= 1
                last = outstanding == 0
            if last:
                loop.call_soon_threadsafe(_settle, done, errors)

        for topic, key, value in records:
            while True:
                try:
                    self._producer.produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    await asyncio.sleep(POLL_SECONDS)
        await done

    async def check(self, timeout: float) -> None:
        """Return once the broker answers a metadata request; :class:`KafkaException` after ``timeout`` s."""
        await asyncio.to_thread(self._producer.list_topics, timeout=timeout)

    def close(self) -> None:
        self._producer.flush(FLUSH_TIMEOUT_SECONDS)
        self._closing.set()
        self._poller.join()


def _settle(done: asyncio.Future[None], errors: list[KafkaError]) -> None:
    if done.done():
        return
    if errors:
        first = errors[0]
        done.set_exception(
            PublishError(KafkaError(first.code(), f"{len(errors)} records not delivered: {first.str()}"))
        )
    else:
        done.set_result(None)
