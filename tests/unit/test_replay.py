"""The offline replay agrees with River's own prequential evaluation, and applies the label policy."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import numpy as np
import orjson
import pytest
from river import evaluate, metrics

from models.pipelines import CANDIDATES
from stream.features import Prior
from stream.records import parse
from stream.runtime.learner import fresh_state, version_record
from stream.runtime.state import JournalEntry, Pending
from stream.settings import Settings
from stream.tools.replay import HISTORY_SOURCE, Learning, LearningProcess, Replay
from stream.tools.report import prequential
from stream.tools.simulator import SimulationConfig, labelled_events
from stream.usecases import DEMAND, FRAUD, UseCase

START = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
LABEL_DELAY = 600.0


def history(use_case: UseCase[Any, Any], n: int, seed: int = 1) -> list[tuple[Any, float]]:
    """A simulated stream of ``use_case``, its events as records with targets, in event-time order."""
    config = SimulationConfig(
        transactions=n if use_case is FRAUD else 0, sales=n if use_case is DEMAND else 0, seed=seed
    )
    rows = []
    for topic, payload, label in labelled_events(config, start=START):
        assert topic == use_case.event_topic
        event = parse(use_case.event_type, orjson.dumps(payload))
        assert not hasattr(event, "reason"), event
        rows.append((event, float(label)))
    return sorted(rows, key=lambda row: row[0].ts)


def without_challenger(use_case: UseCase[Any, Any]) -> Settings:
    return Settings.from_env({"SCORING_CHALLENGERS": f"{use_case.name}=none"})


@pytest.mark.parametrize(("use_case", "tolerance"), [(FRAUD, 0.005), (DEMAND, 0.01)])
def test_the_replay_agrees_with_rivers_progressive_validation(
    use_case: UseCase[Any, Any], tolerance: float
) -> None:
    scored: list[tuple[dict[str, Any], float, float]] = []

    def keep(event: Any, pending: Pending, target: float | None) -> None:
        assert target is not None
        scored.append((dict(pending["x"]), target, event.ts.timestamp()))

    replay = Replay(without_challenger(use_case), use_case, label_delay=LABEL_DELAY, on_scored=keep)
    replay.add_all(history(use_case, 4000))
    replay.finish(flush=False)
    ours = prequential(
        use_case.task,
        np.array([label.y for label in replay.labels]),
        np.array([label.served for label in replay.labels]),
    )

    # River, on the same features and delay: its own arrival order, model and metric.
    classifier = use_case.task == "classification"
    moments = {id(x): t for x, _, t in scored}
    river = evaluate.progressive_val_score(
        dataset=((x, bool(y) if classifier else y) for x, y, _ in scored),
        model=CANDIDATES[use_case.task][use_case.champion](),
        metric=metrics.ROCAUC() if classifier else metrics.MAE(),
        moment=lambda x: moments[id(x)],
        delay=LABEL_DELAY,
    ).get()
    assert ours is not None and len(replay.labels) < len(scored)  # the last labels were not due
    if classifier:
        assert abs(ours - river) <= tolerance, (ours, river)
        assert ours > 0.85
    else:
        assert abs(ours - river) <= tolerance * river, (ours, river)


def test_an_implicit_policy_learns_every_unlabelled_event_once_as_the_implicit_target() -> None:
    implicit = FRAUD.declare(
        {
            **FRAUD.declaration.model_dump(),
            "labels": {"policy": "implicit", "maturity_seconds": 3600, "implicit_target": 0},
        }
    )
    rows = history(FRAUD, 3000)
    frauds_only = [(event, target if target else None) for event, target in rows]
    replay = Replay(Settings.defaults(), implicit, label_delay=60.0)
    replay.add_all(frauds_only)
    replay.finish(flush=True)
    frauds = sum(1 for _, target in rows if target)
    assert replay.counts["matured"] == len(rows) - frauds
    assert replay.counts["learned"] == frauds and replay.counts["matured_event"] == 0
    assert sorted(label.y for label in replay.labels) == sorted(target for _, target in rows)

    # A chargeback slower than the maturity window comes too late: the stream dead-letters it.
    slow = Replay(Settings.defaults(), implicit, label_delay=7200.0)
    slow.add_all(frauds_only)
    slow.finish(flush=True)
    assert slow.counts["matured"] == len(rows) and slow.counts["matured_event"] == frauds
    assert slow.counts["learned"] == 0


def test_versions_are_published_in_stream_time_and_serve_the_events_after_them() -> None:
    rows = history(DEMAND, 1500)
    replay = Replay(Settings.defaults(), DEMAND, label_delay=0.0, publish_seconds=3600.0)
    replay.add_all(rows)
    replay.finish(flush=False)
    times = [t for t, _ in replay.publications]
    assert replay.publications and [v for _, v in replay.publications] == [
        f"demand.{n}" for n in range(1, len(times) + 1)
    ]
    assert all(b - a >= 3600.0 for a, b in itertools.pairwise(times))
    # The first events are served by the untrained champion; later ones by a published version.
    assert replay.labels[0].served != replay.labels[-1].served


def test_a_replay_in_two_processes_learns_what_one_process_does() -> None:
    """The learner's side in a second process learns what it learns beside the events' side:
    every label's predictions, the promotion, the versions, the alerts, the entity states."""
    settings = Settings.from_env(
        {
            "SCORING_PROMOTION_MIN_LABELS": "100",
            "SCORING_CHAMPIONS": "demand=linear_regression",
            "SCORING_CHALLENGERS": "demand=log_linear_regression",
        }
    )
    rows = history(DEMAND, 3000)
    one, two = (
        Replay(settings, DEMAND, label_delay=LABEL_DELAY, publish_seconds=300.0, processes=n) for n in (1, 2)
    )
    for replay in (one, two):
        replay.add_all(rows)
        replay.finish(flush=True)

    assert one.learner.lifecycle.contest.promotions == two.learner.lifecycle.contest.promotions == 1
    assert len(one.labels) == len(rows) and list(two.labels) == list(one.labels)
    assert two.alerts == one.alerts and two.publications == one.publications and two.counts == one.counts
    assert {k: s.document() for k, s in two.entities.items()} == {
        k: s.document() for k, s in one.entities.items()
    }
    xs = [DEMAND.features.compute(event, Prior()) for event, _ in rows[-20:]]
    for role in ("champion", "challenger"):
        ours, theirs = (getattr(r.learner.lifecycle.contest, role) for r in (one, two))
        assert [theirs.predict_one(x) for x in xs] == [ours.predict_one(x) for x in xs]


def test_a_bootstraps_replay_learns_what_the_streams_learner_learns_from_its_journal() -> None:
    """A bootstrap's replay takes shortcuts (the champion's prediction made once per row, no
    gate while nothing is served): the stream's learner, fed the same journal, learns the same."""
    settings = Settings.from_env(
        {
            "SCORING_PROMOTION_MIN_LABELS": "100",
            "SCORING_CHAMPIONS": "demand=linear_regression",
            "SCORING_CHALLENGERS": "demand=log_linear_regression",
        }
    )
    scored: list[tuple[Pending, float]] = []
    replay = Replay(settings, DEMAND, on_scored=lambda _, pending, y: scored.append((pending, y or 0.0)))
    rows = history(DEMAND, 3000)
    replay.add_all(rows)
    replay.finish(flush=True)

    # Its journal, labels at once: each scored event, then its label, in stream time.
    stream = fresh_state(settings, DEMAND)
    learned = []
    for seq, (pending, y) in enumerate(scored):
        t = pending["scored_at"]
        served = {**pending, "y_pred": stream.lifecycle.champion.predict_one(pending["x"])}
        stream.apply(JournalEntry(f"{int(t * 1000)}-{2 * seq + 1}", served))
        outcome = stream.apply(JournalEntry(f"{int(t * 1000)}-{2 * seq + 2}", served, y))
        learned.append((served["y_pred"], outcome.champion_pred, outcome.challenger_pred))

    ours = replay.learner.lifecycle
    assert ours.contest.promotions == stream.lifecycle.contest.promotions >= 1
    assert [(label.served, label.champion, label.challenger) for label in replay.labels] == learned
    xs = [DEMAND.features.compute(event, Prior()) for event, _ in rows[-20:]]
    for role in ("champion", "challenger"):
        theirs = getattr(stream.lifecycle.contest, role)
        assert [getattr(ours.contest, role).predict_one(x) for x in xs] == [theirs.predict_one(x) for x in xs]


def test_a_bootstrap_serves_nothing_so_only_the_streams_labels_make_the_served_metric() -> None:
    settings = Settings.defaults()
    replay = Replay(settings, DEMAND)
    rows = history(DEMAND, 1200)  # past the challenger's warm-up, when the contest's metrics start
    replay.add_all(rows)
    replay.finish(flush=True)
    state = replay.learner
    record = version_record(settings, DEMAND, state, "bootstrap")
    assert "served_MAE" not in record["metrics"] and record["metrics"]["champion_MAE"] > 0
    assert record["served_windows"]["first"] is None and state.lifecycle.labels_learned == len(rows)

    x = DEMAND.features.compute(rows[-1][0], Prior())
    state.lifecycle.learned(x, 3.0, 4.5, t=rows[-1][0].ts.timestamp() + 60, served_version="demand.1")
    record = version_record(settings, DEMAND, state, "learned")
    assert record["metrics"]["served_MAE"] == 1.5 and record["served_windows"]["first"] == 1.5


def test_a_replay_in_two_processes_raises_what_failed_in_the_second() -> None:
    with pytest.raises(ValueError, match="1 process"):
        Replay(Settings.defaults(), DEMAND, on_scored=lambda *_: None, processes=2)
    process = LearningProcess(Learning(DEMAND.name, fresh_state(Settings.defaults(), DEMAND), None))
    process.learn(1, 0.0, 4.0, HISTORY_SOURCE)  # the label of an event never scored
    with pytest.raises(RuntimeError, match="KeyError"):
        process.finish()
