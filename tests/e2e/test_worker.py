"""End to end: a real `scoring worker` process between a real broker and a real Redis.

The checks are the acceptance criteria of the service: N valid events give exactly N
distinct event ids on the prediction topics; M malformed payloads give M dead letters
with their reasons; every label is learned once, and sending all labels twice changes
nothing but the dead-letter count; the worker keeps running throughout; and the models
actually learn (fraud ROC AUC late beats early; demand MAE late beats a running mean).
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from subprocess import Popen

import pytest

from consumers.audit import audit
from stream.settings import Settings
from stream.tools import simulator
from stream.tools.demo import worker_process
from stream.usecases import DEMAND, FRAUD
from tests.e2e.support import (
    START,
    counter,
    dead_letters,
    event_id,
    produce,
    total,
    wait_until,
    watched_worker,
    with_registry,
)

pytestmark = pytest.mark.e2e

CONFIG = simulator.SimulationConfig(
    transactions=3000, sales=3000, rate=0, malformed_rate=0.03, label_delay=(0.0, 0.0), seed=7
)


def test_events_to_predictions_labels_to_learning(worker_settings: Settings, worker: Popen[bytes]) -> None:
    settings = worker_settings
    messages = list(simulator.generate(CONFIG, start=START))
    events = [m for m in messages if m.kind == "event"]
    labels = {event_id(m): m for m in messages if m.kind == "label"}
    malformed = [m for m in messages if m.kind == "malformed"]
    assert len(events) == 6000 and len(labels) == 6000 and malformed

    # Rounds as in production: events are scored, then their labels arrive and are learned,
    # so that later events are scored by a model that learned from earlier ones.
    produce(settings, malformed)
    for start in range(0, len(events), 1000):
        done = start + 1000
        round_events = events[start:done]
        produce(settings, round_events)
        wait_until(lambda done=done: total(settings, "scoring_predictions_total") >= done)
        produce(settings, [labels[event_id(m)] for m in round_events])
        wait_until(lambda done=done: total(settings, "scoring_labels_total", "joined") >= done)
    produce(settings, list(labels.values()))  # every label a second time
    wait_until(lambda: total(settings, "scoring_labels_total", "duplicate_label") >= len(labels))
    assert worker.poll() is None, "the worker must keep running"

    result = audit(settings)
    predicted, reasons, report = result.predictions, result.dead_letters, result.quality
    assert sorted(predicted) == sorted(event_id(m) for m in events)
    assert set(predicted.values()) == {1}
    assert reasons == Counter(m.expected_reason for m in malformed) + Counter(
        {"duplicate_label": len(labels)}
    )
    assert total(settings, "scoring_labels_total", "joined") == len(labels)

    fraud, demand = report.model("fraud"), report.model("demand")
    assert fraud.early is not None and fraud.late is not None, report.format()
    assert fraud.late > fraud.early + 0.05, report.format()
    assert demand.late is not None and demand.baseline_late is not None, report.format()
    assert demand.late < demand.baseline_late, report.format()


@pytest.mark.parametrize("redis_mode", ["single", "cluster"], indirect=True)
def test_a_killed_worker_loses_nothing_and_scores_nothing_twice(
    worker_settings: Settings, tmp_path: Path
) -> None:
    settings = worker_settings
    config = simulator.SimulationConfig(
        transactions=1500, sales=1500, rate=400, malformed_rate=0.03, label_delay=(0.5, 1.0), seed=3
    )
    messages = list(simulator.generate(config, start=START))
    events = {event_id(m) for m in messages if m.kind == "event"}
    labels = [m for m in messages if m.kind == "label"]
    malformed = {(m.value, m.expected_reason) for m in messages if m.kind == "malformed"}
    sender = threading.Thread(target=produce, args=(settings, messages), kwargs={"realtime": True})
    with worker_process(settings, tmp_path / "first.log") as first:
        # The stream starts once the worker reads: a slow start must not let it end first.
        wait_until(lambda: counter(settings, "scoring_assigned_partitions") > 0, what="the consumer")
        sender.start()
        wait_until(lambda: total(settings, "scoring_predictions_total") >= 500)
        first.kill()  # kill -9 in the middle of the stream
        assert sender.is_alive(), "the stream must still be running when the worker dies"
    with watched_worker(settings, tmp_path / "second.log"):
        sender.join()
        wait_until(lambda: len(audit(settings, idle_timeout=1.0).predictions) >= len(events))
        result = audit(settings)

    assert set(result.predictions) == events
    assert "duplicate_event" not in result.dead_letters  # redeliveries are recognised as such
    assert "duplicate_label" not in result.dead_letters
    # Each malformed payload dead-lettered with its reason (twice, if redelivered after the kill).
    assert dead_letters(settings) == malformed
    # Every event learned exactly once, across the two processes.
    for use_case in (FRAUD, DEMAND):
        ids = [event_id(m) for m in labels if m.topic == use_case.label_topic]
        statuses = with_registry(settings, lambda _, state, n=use_case.name, i=ids: state.statuses(n, i))
        assert Counter(statuses) == {"learned": len(ids)}
