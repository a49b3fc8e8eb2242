"""A worker started before its broker and Redis: a few clear lines naming them, then it works.

librdkafka alone printed a line per connection attempt, every ~50 ms (hundreds in a few
seconds) and never one naming the broker it waits for.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from stream.settings import Settings
from stream.tools import localstack, simulator
from stream.tools.demo import scrape
from tests.e2e.support import produce, total, wait_until, watched_worker

pytestmark = pytest.mark.e2e


def test_a_worker_waits_for_its_broker_and_redis_then_scores(tmp_path: Path) -> None:
    kafka_port, redis_port = localstack.free_port(), localstack.free_port()
    settings = Settings.defaults().replace(
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        session_timeout_seconds=2.0,
        heartbeat_interval_seconds=0.5,
        metrics_port=localstack.free_port(),
        state_dir=str(tmp_path / "state"),
    )
    log = tmp_path / "worker.log"
    broker_down = f"the broker at 127.0.0.1:{kafka_port} does not answer"
    redis_down = f"redis at 127.0.0.1:{redis_port} does not answer"
    with watched_worker(settings, log) as worker:
        wait_until(
            lambda: log.read_text().count(broker_down) >= 3 and log.read_text().count(redis_down) >= 3,
            what="the worker to say three times what it waits for",
        )
        lines = log.read_text().splitlines()
        assert len(lines) <= 30, "\n".join(lines)
        assert all(f":{kafka_port}" in line or f":{redis_port}" in line for line in lines), "\n".join(lines)

        with localstack.running_stack(tmp_path / "stack", kafka_port=kafka_port, redis_port=redis_port):
            wait_until(lambda: bool(scrape(settings.metrics_port)), what="the worker to start")
            text = log.read_text()
            assert f"the broker at 127.0.0.1:{kafka_port} answers again" in text
            assert f"redis at 127.0.0.1:{redis_port} answers again" in text
            config = simulator.SimulationConfig(transactions=50, sales=50, rate=0, malformed_rate=0, seed=5)
            events = [m for m in simulator.generate(config) if m.kind == "event"]
            produce(settings, events)
            wait_until(lambda: total(settings, "scoring_predictions_total") >= len(events))
            worker.send_signal(signal.SIGINT)
            assert worker.wait(timeout=30) == 0, log.read_text()[-3000:]
