"""End to end: models published as data, followed by every worker, recovered exactly, rolled back.

Real `scoring worker` processes between a real broker and a real Redis: two workers in one
group score with the same model version and follow a label-driven update within the
documented bound; a learner killed with SIGKILL mid-stream is replaced and its model ends
exactly equal to one that never stopped; `scoring models rollback` makes new predictions
carry the earlier version.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TypeVar

import orjson
import pytest

from consumers.reader import read
from models.online import ROCAUC, OnlineModel
from models.release import version_number
from stream.records import Alert, AuditRecord
from stream.runtime.learner import fresh_state
from stream.runtime.registry import ModelRegistry
from stream.runtime.state import JournalEntry, StateStore
from stream.settings import Settings
from stream.tools import localstack, simulator
from stream.tools.demo import scrape, worker_process
from stream.usecases import FRAUD
from tests.e2e.support import (
    START,
    event_id,
    live_record,
    predictions,
    produce,
    wait_until,
    watched_worker,
    with_registry,
)

pytestmark = pytest.mark.e2e

T = TypeVar("T")


def live_model(settings: Settings) -> tuple[str, OnlineModel]:
    async def use(registry: ModelRegistry, _: StateStore) -> tuple[str, OnlineModel]:
        live = await registry.live("fraud")
        assert live is not None
        return live, await registry.load(live)

    return with_registry(settings, use)


def journal(settings: Settings) -> list[JournalEntry]:
    return with_registry(settings, lambda _, state: state.read_journal(FRAUD, "0-0", 10_000_000))


def learner_labels(settings: Settings) -> int:
    record = live_record(settings)
    return int(record["learner_labels"]) if record else -1


def scored(settings: Settings) -> float:
    return scrape(settings.metrics_port).get("scoring_predictions_total{model=fraud}", 0.0)


def served_version(settings: Settings) -> float | None:
    return scrape(settings.metrics_port).get("scoring_served_model_version{model=fraud}")


def transactions(n: int, seed: int) -> tuple[list[simulator.Message], list[simulator.Message]]:
    config = simulator.SimulationConfig(
        transactions=n, sales=0, rate=0, malformed_rate=0, label_delay=(0.0, 0.0), seed=seed
    )
    messages = list(simulator.generate(config, start=START))
    return [m for m in messages if m.kind == "event"], [m for m in messages if m.kind == "label"]


@pytest.fixture
def model_settings(settings: Settings) -> Settings:
    # Keep the whole journal, so that the test can replay it as an uninterrupted learner would;
    # and let the gate pass every candidate and the watch roll none back (they have tests of
    # their own): each label learned is published, as these tests of publication follow it.
    return settings.replace(
        journal_retention_seconds=3600,
        learner_lease_seconds=2.0,
        challengers="",
        first_version_min_labels=0,
        gate_min_labels=1,
        gate_tolerance=1e9,
        rollback_min_labels=10**9,  # the watch never decides...
        rollback_confirm_labels=10**9,  # ...nor confirms
    )


def test_two_workers_score_with_the_same_version_and_follow_each_update(
    model_settings: Settings, tmp_path: Path
) -> None:
    one = model_settings.replace(metrics_port=localstack.free_port())
    two = model_settings.replace(metrics_port=localstack.free_port())
    events, labels = transactions(2000, seed=11)
    with watched_worker(one, tmp_path / "one.log"), watched_worker(two, tmp_path / "two.log"):
        produce(one, events[:1000])
        wait_until(lambda: len(predictions(one)) >= 1000, what="the first predictions")
        delays = []
        for round_ in range(3):
            sent = time.monotonic()
            produce(one, labels[round_ * 300 : (round_ + 1) * 300])

            def followed(expected: int = 300 * (round_ + 1)) -> bool:
                record = live_record(one)
                if record is None or record["learner_labels"] != expected:
                    return False
                seq = version_number(record["version"])
                return served_version(one) == seq and served_version(two) == seq

            wait_until(followed, timeout=30, what="both workers to serve the new version")
            delays.append(time.monotonic() - sent)
        live = live_model(one)[0]

        produce(one, events[1000:])
        wait_until(lambda: len(predictions(one)) >= 2000, what="the last predictions")
        scored_by = [
            scrape(w.metrics_port).get("scoring_predictions_total{model=fraud}", 0) for w in (one, two)
        ]
    assert all(scored_by), f"each worker scores its share of the partitions: {scored_by}"
    late = {event_id(m) for m in events[1000:]}
    assert {p.model_version for p in predictions(one) if p.event_id in late} == {live}
    print(f"update delays: {delays}")  # a figure, not a bound: the wall clock is the machine's


@pytest.mark.parametrize("redis_mode", ["single", "cluster"], indirect=True)
def test_a_killed_learner_recovers_exactly(model_settings: Settings, tmp_path: Path) -> None:
    settings = model_settings.replace(metrics_port=localstack.free_port())
    config = simulator.SimulationConfig(
        transactions=8000, sales=0, rate=800, malformed_rate=0, label_delay=(0.2, 0.5), seed=5
    )
    messages = list(simulator.generate(config, start=START))
    labels = [m for m in messages if m.kind == "label"]
    # Every tenth label is sent twice: duplicates must not be learned twice.
    sender = threading.Thread(
        target=produce, args=(settings, messages + labels[::10]), kwargs={"realtime": True}
    )
    with worker_process(settings, tmp_path / "first.log") as first:
        wait_until(lambda: learner_labels(settings) == 0, what="the first version")
        sender.start()
        wait_until(lambda: learner_labels(settings) >= 1000, what="the learner to learn")
        first.kill()  # SIGKILL: no shutdown checkpoint
        assert sender.is_alive(), "the stream must still be running when the learner dies"
    with watched_worker(settings, tmp_path / "second.log"):
        sender.join()
        wait_until(lambda: learner_labels(settings) == len(labels), timeout=60, what="every label")
        time.sleep(2 * settings.model_publish_seconds)  # anything learned twice would show now
        version, recovered = live_model(settings)
    assert learner_labels(settings) == len(labels)

    # The uninterrupted learner: the same journal, replayed from the start in one go.
    entries = journal(settings)
    reference = fresh_state(settings, FRAUD)
    for entry in entries:
        reference.apply(entry)
    assert reference.lifecycle.labels_learned == len(labels)
    probes = [e.pending["x"] for e in entries[:: max(1, len(entries) // 300)]]
    assert recovered.predict_many(probes) == reference.lifecycle.champion.predict_many(probes), version
    assert "restored" in (tmp_path / "second.log").read_text()


def test_rollback_makes_new_predictions_carry_the_earlier_version(
    model_settings: Settings, tmp_path: Path
) -> None:
    settings = model_settings.replace(metrics_port=localstack.free_port())
    events, labels = transactions(1500, seed=2)
    with watched_worker(settings, tmp_path / "worker.log"):
        produce(settings, events[:500])
        wait_until(lambda: len(predictions(settings)) >= 500, what="predictions")
        produce(settings, labels[:250])
        wait_until(lambda: learner_labels(settings) == 250, what="a first learned version")
        first = live_model(settings)[0]
        produce(settings, labels[250:500])
        wait_until(lambda: learner_labels(settings) == 500, what="a second learned version")
        assert live_model(settings)[0] != first

        env = {**os.environ, **settings.environment()}
        done = subprocess.run(
            [sys.executable, "-m", "stream.tools.cli", "models", "rollback", first],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"{first} is live" in done.stdout
        wait_until(lambda: served_version(settings) == version_number(first), timeout=10, what="the rollback")
        produce(settings, events[500:1000])
        wait_until(lambda: len(predictions(settings)) >= 1000, what="predictions after the rollback")
        listing = subprocess.run(
            [sys.executable, "-m", "stream.tools.cli", "models", "list", "--model", "fraud"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    after = {event_id(m) for m in events[500:1000]}
    assert {p.model_version for p in predictions(settings) if p.event_id in after} == {first}
    assert f"fraud: live {first}" in listing and f"rolled back to {first}" in listing
    [audit] = [m.parse() for m in read(settings, ["audit"], idle_timeout=2.0)]
    assert isinstance(audit, AuditRecord) and (audit.action, audit.target, audit.after) == (
        "rollback",
        first,
        first,
    )
    assert audit.before not in (None, first) and audit.actor == f"{getpass.getuser()}@{socket.gethostname()}"


def test_a_concept_drift_opens_one_alert_within_500_labels(model_settings: Settings, tmp_path: Path) -> None:
    settings = model_settings.replace(metrics_port=localstack.free_port())
    config = simulator.SimulationConfig(
        transactions=6000, sales=0, rate=1000, malformed_rate=0, label_delay=(0.5, 1.5), seed=9
    )
    messages = list(simulator.generate(config, start=START))
    drifted = set([event_id(m) for m in messages if m.kind == "event"][3000:])  # the stream is in time order
    # The concept flips half-way: from then on every label says the opposite.
    stream = [
        dataclasses.replace(m, value=_flip(m.value)) if m.kind == "label" and event_id(m) in drifted else m
        for m in messages
    ]
    with watched_worker(settings, tmp_path / "worker.log"):
        wait_until(lambda: learner_labels(settings) == 0, what="the first version")
        produce(settings, stream, realtime=True)
        wait_until(lambda: learner_labels(settings) == 6000, timeout=60, what="every label")
        alerts = [m.parse() for m in read(settings, ["alerts.drift"], idle_timeout=2.0)]
    concept = [a for a in alerts if isinstance(a, Alert) and a.kind == "concept_drift" and a.model == "fraud"]
    assert concept, alerts
    opened = concept[0]
    assert opened.state == "open" and opened.model_version.startswith("fraud.")
    # Counted in the journal the learner learns from (an alert's time is its stream time), not
    # by when the labels were sent: a busy machine's lag between the two is not the detector's.
    scored = {(p.entity, p.scored_at.timestamp()): p.event_id for p in predictions(settings)}
    learned_flipped = sum(
        1
        for entry in journal(settings)
        if entry.y is not None
        and entry.time <= opened.first_seen.timestamp()
        and scored[entry.pending["entity"], entry.pending["scored_at"]] in drifted
    )
    assert 0 < learned_flipped <= 500, f"opened after {learned_flipped} flipped labels were learned"
    assert len({a.id for a in concept if a.state == "open"}) == 1, "one episode, one open alert"


def _flip(label: bytes) -> bytes:
    doc = orjson.loads(label)
    return orjson.dumps({**doc, "is_fraud": not doc["is_fraud"]})


def test_a_model_card_agrees_with_the_registry_and_the_served_predictions(
    model_settings: Settings, tmp_path: Path
) -> None:
    settings = model_settings.replace(metrics_port=localstack.free_port())
    events, labels = transactions(1500, seed=6)
    with watched_worker(settings, tmp_path / "worker.log"):
        produce(settings, events)
        wait_until(lambda: len(predictions(settings)) >= len(events), what="predictions")
        produce(settings, labels)
        wait_until(lambda: learner_labels(settings) == len(labels), what="every label learned")
    env = {**os.environ, **settings.environment()}
    shown = subprocess.run(
        [sys.executable, "-m", "stream.tools.cli", "models", "card", "fraud", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    card = orjson.loads(shown)
    record = live_record(settings)
    assert record is not None and card["version"] == record["version"] and card["status"] == "live"
    assert card["lineage"]["labels_learned"] == record["learner_labels"] == len(labels)
    assert card["metrics"]["prequential"] == record["metrics"] and card["gate"] == record["gate"]
    assert card["intended_use"] == FRAUD.declaration.intended_use
    assert set(card["declaration"]["features"]) == set(FRAUD.declaration.features)

    # The served metric is the one of the predictions on the topic, joined with their labels.
    truth = {event_id(m): orjson.loads(m.value)["is_fraud"] for m in labels}
    served = ROCAUC()
    for prediction in predictions(settings):
        served.update(truth[prediction.event_id], prediction.score)
    assert card["metrics"]["prequential"]["served_ROCAUC"] == pytest.approx(served.get(), abs=1e-12)
    markdown = subprocess.run(
        [sys.executable, "-m", "stream.tools.cli", "models", "card", record["version"]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert markdown.startswith(f"# Model card: {record['version']}") and "## Known limits" in markdown
