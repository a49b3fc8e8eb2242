"""Publishing a batch's records and waiting until the broker has them all.

A confluent-kafka producer: it batches and compresses in librdkafka's own
thread, several times faster than Faust's per-message send. The batch is acknowledged
only after :meth:`Publisher.publish` returns, which keeps delivery at least once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

from stream.settings import Settings

FLUSH_TIMEOUT_SECONDS = 30.0


class PublishError(RuntimeError):
    """Some records of a batch were not delivered; the batch must be retried."""


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )

    async def publish(self, records: Sequence[tuple[str, bytes, bytes]]) -> None:
        """Produce (topic, key, value) records and wait for every delivery report."""
        if not records:
            return
        errors: list[KafkaError] = []

        def on_delivery(error: KafkaError | None, _: Message) -> None:
            if error is not None:
                errors.append(error)

        for topic, key, value in records:
            while True:
                try:
                    self._producer.produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    await asyncio.to_thread(self._producer.poll, 0.05)
        undelivered = await asyncio.to_thread(self._producer.flush, FLUSH_TIMEOUT_SECONDS)
        if undelivered or errors:
            raise PublishError(f"{undelivered} records undelivered, {len(errors)} failed: {errors[:3]}")

    def close(self) -> None:
        self._producer.flush(FLUSH_TIMEOUT_SECONDS)
