"""The error policy: one outage line per try whatever the callers, repeats held back, bugs raised."""

from __future__ import annotations

import logging

import pytest
import redis.exceptions

from stream.backoff import Repeats
from stream.runtime import retry
from stream.runtime.retry import ErrorPolicy, Outage
from stream.settings import Settings

REFUSED = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")


class Clock:
    """Stands in for ``time.monotonic``: the policy's waits are checked without waiting."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(retry.time, "monotonic", clock)
    return clock


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_an_outage_is_logged_once_per_try_however_many_callers_meet_it(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    outage = Outage("redis", "127.0.0.1:6390")
    with caplog.at_level(logging.INFO, logger=retry.__name__):
        assert [outage.failed(REFUSED) for _ in range(20)] == [0.5] * 20  # all wait for the same next try
        clock.now += 0.5
        assert outage.failed(REFUSED) == 1.0
        clock.now += 0.25
        assert outage.failed(REFUSED) == 0.75
        clock.now += 0.75
        outage.answered()
        outage.answered()
        assert outage.failed(REFUSED) == 0.5  # a new outage starts the backoff over
    assert lines(caplog) == [
        "redis at 127.0.0.1:6390 does not answer (ConnectionError: Error 111 connecting to "
        "127.0.0.1:6390. Connection refused.); retrying in 0.5 s",
        "redis at 127.0.0.1:6390 does not answer (ConnectionError: Error 111 connecting to "
        "127.0.0.1:6390. Connection refused.); retrying in 1.0 s",
        "redis at 127.0.0.1:6390 answers again (after 1.5 s)",
        "redis at 127.0.0.1:6390 does not answer (ConnectionError: Error 111 connecting to "
        "127.0.0.1:6390. Connection refused.); retrying in 0.5 s",
    ]


def test_a_repeated_warning_is_let_through_once_per_backoff_step(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("tests.repeats")
    log.addFilter(Repeats())
    with caplog.at_level(logging.INFO, logger=log.name):
        for _ in range(20):  # librdkafka's pace: a line every ~50-100 ms
            log.warning("kafka %s: Connect failed", "127.0.0.1:9")
            log.info("not a warning: never held back")
            clock.now += 0.125
        clock.now += 11  # quiet for longer than the cap: a fresh start
        log.warning("kafka %s: Connect failed", "127.0.0.1:9")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "kafka 127.0.0.1:9: Connect failed",  # t = 0
        "kafka 127.0.0.1:9: Connect failed (3 more like it held back)",  # t = 0.5
        "kafka 127.0.0.1:9: Connect failed (7 more like it held back)",  # t = 1.5
        "kafka 127.0.0.1:9: Connect failed",
    ]
    assert lines(caplog).count("not a warning: never held back") == 20


def test_the_policy_tells_outages_from_bugs() -> None:
    remote = Settings(
        redis_url="redis://cache:6390/0", kafka_bootstrap="k1:9092,k2:9092", model_signing_key="k"
    )
    policy = ErrorPolicy(remote)
    assert policy.outage(REFUSED) is policy.redis and policy.redis.address == "cache:6390"
    assert (
        policy.outage(retry.KafkaException()) is policy.broker and policy.broker.address == "k1:9092,k2:9092"
    )
    assert policy.outage(ValueError("a bug")) is None


async def test_retrying_tries_an_outage_again_and_raises_a_bug(caplog: pytest.LogCaptureFixture) -> None:
    policy = ErrorPolicy(Settings(redis_url="redis://127.0.0.1:6390/0"))
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise REFUSED
        return "done"

    async def buggy() -> None:
        raise ValueError("a bug")

    with caplog.at_level(logging.INFO, logger=retry.__name__):
        assert await policy.retrying("test", flaky) == "done"
        with pytest.raises(ValueError, match="a bug"):
            await policy.retrying("test", buggy)
    assert len(calls) == 2
    assert [line.split(" (")[0] for line in lines(caplog)] == [
        "redis at 127.0.0.1:6390 does not answer",
        "redis at 127.0.0.1:6390 answers again",
    ]
