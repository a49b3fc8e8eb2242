"""The one place this project changes Faust's behaviour from outside its settings.

Faust 0.15.3 creates its worker's aiokafka consumer with ``fetch_max_wait_ms=1500``
hard-coded, so at low load a fetch waits up to 1.5 s for data before returning: that is
the service's latency floor, not the broker's (a plain client's round trip is ~7 ms on
the local broker). :func:`apply` wraps ``_create_worker_consumer`` to set the consumer's
fetch wait to the app's ``fetch_max_wait_ms`` before the consumer starts (aiokafka
reads ``_fetch_max_wait_ms`` when it builds its fetcher at start).

``tests/unit/test_faust_patches.py`` fails when either upstream function changes, so
an upgrade of Faust or aiokafka is a conscious decision, not a silent regression.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

ATTRIBUTE = "scoring_fetch_max_wait_ms"
"""The app attribute :func:`apply`'s consumers take their fetch wait from (milliseconds)."""

_original = AIOKafkaConsumerThread._create_worker_consumer


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _original(self, transport)
    wait = getattr(self.app, ATTRIBUTE, None)
    if wait is not None:
        consumer._fetch_max_wait_ms = int(wait)
    return consumer


def apply() -> None:
    """Let an app set its worker consumer's fetch wait (idempotent)."""
    setattr(AIOKafkaConsumerThread, "_create_worker_consumer", _create_worker_consumer)  # noqa: B010
