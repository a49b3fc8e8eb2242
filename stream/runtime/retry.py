"""Errors that end by themselves: a Redis or Kafka outage. Retried, never dead-lettered."""

from __future__ import annotations

import redis.exceptions
from confluent_kafka import KafkaException

from stream.runtime.publisher import PublishError

TRANSIENT_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    KafkaException,
    PublishError,
)
