"""The drift monitor: each detector and the alert lifecycle, on synthetic streams."""

from __future__ import annotations

import dataclasses
import math
import pickle
import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from models.drift import KINDS, AlertChange, Monitor, MonitorConfig, psi

Features = dict[str, float | str]
# Small windows, so that the data drift tests need a few thousand events only.
SMALL = MonitorConfig(window=1000, window_warmup=1, min_window_values=200, exempt=frozenset({"hour_sin"}))


def poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def features(rng: random.Random) -> Features:
    return {
        "log_amount": rng.gauss(3.4, 0.9),
        "amount_z": max(-10.0, min(10.0, rng.gauss(0.0, 1.0))),
        "merchant_new": 1.0 if rng.random() < 0.15 else 0.0,
        "channel": rng.choices(["pos", "online", "atm"], [0.6, 0.33, 0.07])[0],
        "hour_sin": math.sin(rng.uniform(0, 2 * math.pi)),
    }


Step = Callable[[random.Random, int], tuple[Features, float, float]]  # x, y_pred, y_true


def fraud_like(miss_from: int | None = None, miss_until: int | None = None, better: bool = False) -> Step:
    """A good classifier (5 % positives) that misses the positives on [miss_from, miss_until)."""

    def step(rng: random.Random, i: int) -> tuple[Features, float, float]:
        y = 1.0 if rng.random() < 0.05 else 0.0
        missing = miss_from is not None and miss_from <= i < (miss_until or 1 << 62)
        if y:
            p = rng.uniform(0.001, 0.02) if missing or rng.random() < 0.1 else rng.uniform(0.5, 0.99)
        else:
            p = rng.uniform(0.0, 0.01 if better and i > 5000 else 0.03)
        return features(rng), p, y

    return step


def feed(
    monitor: Monitor, n: int, step: Step, *, seed: int = 0, start: int = 0, rate: float = 100.0,
    labelled: Callable[[int], bool] = lambda i: True,
) -> list[tuple[int, AlertChange]]:  # fmt: skip
    """Scores n events (``i / rate`` s), each learned 3 s later; returns (label count, change)."""
    rng = random.Random(seed)
    changes: list[tuple[int, AlertChange]] = []
    pending: list[tuple[float, float, float]] = []
    labels = 0
    for i in range(start, start + n):
        t = i / rate
        while pending and pending[0][0] <= t:
            at, y, p = pending.pop(0)
            labels += 1
            changes += [(labels, c) for c in monitor.learned(y, p, at)]
        x, p, y = step(rng, i)
        changes += [(labels, c) for c in monitor.scored(x, p, t)]
        if labelled(i):
            pending.append((t + 3.0, y, p))
    return changes


def opened(changes: list[tuple[int, AlertChange]], kind: str | None = None) -> list[tuple[int, AlertChange]]:
    return [(n, c) for n, c in changes if c.state == "open" and kind in (None, c.kind)]


# ------------------------------------------------------------------ stationary streams


def test_a_stationary_classification_stream_raises_nothing() -> None:
    monitor = Monitor("fraud", "classification", SMALL)
    changes = feed(monitor, 20_000, fraud_like())
    assert changes == []
    assert monitor.open_alerts() == []
    readings = {(r.kind, r.feature): r for r in monitor.readings()}
    assert set(readings) == {
        ("concept_drift", ""),
        ("prediction_drift", ""),
        ("label_coverage", ""),
        ("estimated_quality_drop", ""),
        ("data_drift", "log_amount"),
        ("data_drift", "amount_z"),
        ("data_drift", "merchant_new"),
        ("data_drift", "channel"),
    }  # hour_sin is exempt: it follows the clock
    assert all(r.statistic < r.threshold for r in readings.values())
    assert 0 < readings["data_drift", "log_amount"].statistic < 0.05


def test_a_stationary_regression_stream_raises_nothing() -> None:
    def step(rng: random.Random, i: int) -> tuple[Features, float, float]:
        lam = rng.uniform(2.0, 30.0)
        return {"log_price": math.log(lam), "category": rng.choice("abcdef")}, lam, float(poisson(rng, lam))

    assert feed(Monitor("demand", "regression", SMALL), 20_000, step) == []


def test_a_model_that_gets_better_is_not_an_alert() -> None:
    assert opened(feed(Monitor("fraud", "classification"), 12_000, fraud_like(better=True))) == []


# ------------------------------------------------------------------ concept drift


def test_a_concept_drift_opens_once_is_updated_and_resolves_after_recovery() -> None:
    config = MonitorConfig()
    monitor = Monitor("fraud", "classification", config)
    changes = feed(monitor, 30_000, fraud_like(miss_from=8_000, miss_until=13_000))
    concept = [(n, c) for n, c in changes if c.kind == "concept_drift"]
    states = [c.state for _, c in concept]
    assert states[0] == "open" and states[-1] == "resolve"
    assert states.count("open") == 1 and states.count("resolve") == 1
    assert states.count("update") >= 3
    assert len({c.id for _, c in concept}) == 1
    opened_at = concept[0][0]  # the label of event i is the (i + 1)th
    assert 8_000 < opened_at < 8_000 + 500
    updates = [n for n, c in concept if c.state == "update"]
    assert all(
        b - a >= config.concept_update_every for a, b in zip([opened_at, *updates], updates, strict=False)
    )
    resolved_at = concept[-1][0]
    assert 13_000 < resolved_at < 13_000 + 2 * config.concept_resolve_window
    first, last = concept[0][1], concept[-1][1]
    assert first.detector == "CUSUM" and first.feature is None and first.threshold == 25.0
    assert first.statistic >= first.threshold and first.first_seen == last.first_seen == first.at
    assert last.at > first.at and "back to its pre-drift level" in last.detail
    assert [c.severity for _, c in concept if c.state == "update"][-1] == "critical"
    assert monitor.open_alerts() == []


def test_a_regression_that_goes_wrong_is_caught_within_a_few_hundred_labels() -> None:
    def step(rng: random.Random, i: int) -> tuple[Features, float, float]:
        lam = rng.uniform(2.0, 30.0)
        truth = lam * (0.5 if 6_000 <= i < 9_000 else 1.0)  # demand halves, the forecast does not
        return {"log_price": 1.0}, lam, float(poisson(rng, truth))

    changes = feed(Monitor("demand", "regression"), 20_000, step)
    concept = [(n, c) for n, c in changes if c.kind == "concept_drift"]
    assert concept[0][1].state == "open"
    assert 6_000 < concept[0][0] < 6_000 + 100
    assert concept[-1][1].state == "resolve"


def test_a_lasting_rise_of_error_is_adopted_as_the_new_normal() -> None:
    config = MonitorConfig(concept_adopt_after=4000)
    changes = feed(Monitor("fraud", "classification", config), 20_000, fraud_like(miss_from=5_000))
    concept = [c for _, c in changes if c.kind == "concept_drift"]
    assert [c.state for c in concept if c.state != "update"] == ["open", "resolve"]
    assert "adopted as its new usual level" in concept[-1].detail


def test_the_cooldown_keeps_one_episode_from_flapping() -> None:
    """Misses from label 3,000 to 5,000, and again as soon as the first alert resolves."""
    config = MonitorConfig(concept_cooldown=3000)
    monitor = Monitor("fraud", "classification", config)
    rng = random.Random(1)
    changes: list[tuple[int, AlertChange]] = []
    resolved_at: int | None = None
    for i in range(16_000):
        missing = 3_000 <= i < 5_000 or (resolved_at is not None and i >= resolved_at)
        _, p, y = fraud_like(0 if missing else None)(rng, i)
        for change in monitor.learned(y, p, float(i)):
            changes.append((i, change))
            if change.state == "resolve":
                resolved_at = i + 1
    concept = [(i, c) for i, c in changes if c.state != "update"]
    assert [c.state for _, c in concept][:3] == ["open", "resolve", "open"]
    assert concept[2][0] - concept[1][0] > config.concept_cooldown
    assert concept[0][1].id != concept[2][1].id


# ------------------------------------------------------------------ data and prediction drift


def test_a_shifted_numeric_feature_raises_a_data_drift_alert_naming_it() -> None:
    def step(rng: random.Random, i: int) -> tuple[Features, float, float]:
        x, p, y = fraud_like()(rng, i)
        if i >= 5_500:
            x["log_amount"] = float(x["log_amount"]) * 1.5
        return x, p, y

    monitor = Monitor("fraud", "classification", SMALL)
    changes = feed(monitor, 10_000, step)
    data = [(n, c) for n, c in changes if c.kind == "data_drift"]
    assert {c.feature for _, c in data} == {"log_amount"}
    assert [c.state for _, c in data] == ["open", "update", "resolve"]  # half-shifted window, then adopted
    first = data[0][1]
    assert first.detector == "PSI" and first.statistic > 0.5 and first.severity == "critical"
    assert first.window == "1000 events" and "log_amount" in first.detail
    assert first.at == 5_999 / 100.0  # the first window that saw it closed with its 6,000th event


def test_a_new_category_raises_a_data_drift_alert_naming_its_feature() -> None:
    def step(rng: random.Random, i: int) -> tuple[Features, float, float]:
        x, p, y = fraud_like()(rng, i)
        if i >= 5_000 and rng.random() < 0.1:
            x["channel"] = "crypto"
        return x, p, y

    changes = feed(Monitor("fraud", "classification", SMALL), 8_000, step)
    assert [c.feature for _, c in opened(changes)] == ["channel"]


def test_a_feature_that_goes_missing_raises_a_data_drift_alert_naming_it() -> None:
    def step(rng: random.Random, i: int) -> tuple[Features, float, float]:
        x, p, y = fraud_like()(rng, i)
        if i >= 5_000 and rng.random() < 0.3:
            x["amount_z"] = math.nan
        return x, p, y

    changes = feed(Monitor("fraud", "classification", SMALL), 8_000, step)
    assert [c.feature for _, c in opened(changes)] == ["amount_z"]


def test_a_shift_of_the_predictions_raises_a_prediction_drift_alert() -> None:
    def step(rng: random.Random, i: int) -> tuple[Features, float, float]:
        x, p, y = fraud_like()(rng, i)
        return x, min(1.0, p * 3.0) if i >= 5_000 else p, y

    changes = feed(Monitor("fraud", "classification", SMALL), 8_000, step)
    alerts = opened(changes)
    assert [(c.kind, c.feature) for _, c in alerts] == [("prediction_drift", None)]


def test_psi() -> None:
    assert psi({}, {1: 3}) == 0.0
    same = {i: 100 for i in range(20)}
    assert psi(same, same) == 0.0
    shifted = {i + 10: 100 for i in range(20)}
    assert psi(same, shifted) > 2.0
    assert psi({"a": 500, "b": 500}, {"a": 480, "b": 520}) < 0.01


# ------------------------------------------------------------------ label coverage


def test_labels_that_stop_arriving_raise_a_label_coverage_alert_until_they_return() -> None:
    config = MonitorConfig(coverage_window=10.0, coverage_update_every=5)
    monitor = Monitor("fraud", "classification", config)
    # 100 events/s, each label 3 s later: the labels of the events from 50 s to 120 s never come
    changes = feed(monitor, 16_000, fraud_like(), labelled=lambda i: not 5_000 <= i < 12_000)
    coverage = [c for _, c in changes if c.kind == "label_coverage"]
    assert [c.state for c in coverage] == ["open", "update", "resolve"]
    first, last = coverage[0], coverage[-1]
    assert 53 < first.first_seen <= 53 + 2 * config.coverage_window
    assert first.statistic > config.coverage_open
    assert first.detector == "coverage_shortfall" and first.window == "10 s"
    assert coverage[1].statistic == 1.0 and coverage[1].severity == "critical"  # no label at all
    assert 123 < last.at <= 123 + 2 * config.coverage_window
    assert [c.kind for _, c in opened(changes)] == ["label_coverage"]


# ------------------------------------------------------------------ determinism and size


def run_all(monitor: Monitor, n: int, start: int = 0) -> list[tuple[int, AlertChange]]:
    step = fraud_like(miss_from=5_000, miss_until=7_000)
    return feed(monitor, n, step, seed=start, start=start)


def test_the_same_journal_gives_the_same_alerts() -> None:
    first = run_all(Monitor("fraud", "classification", SMALL), 10_000)
    second = run_all(Monitor("fraud", "classification", SMALL), 10_000)
    assert first == second and opened(first)


def test_a_pickled_monitor_continues_exactly_as_one_that_never_stopped() -> None:
    straight = Monitor("fraud", "classification", SMALL)
    before = run_all(straight, 5_500)
    after = run_all(straight, 4_500, start=5_500)

    resumed = Monitor("fraud", "classification", SMALL)
    assert run_all(resumed, 5_500) == before
    restored = pickle.loads(pickle.dumps(resumed))
    assert run_all(restored, 4_500, start=5_500) == after
    assert restored.open_alerts() == straight.open_alerts()
    assert restored.readings() == straight.readings()


def test_the_pickled_monitor_stays_small() -> None:
    """Twelve wide numeric features and two categorical ones, on the default windows."""
    rng = random.Random(3)
    monitor = Monitor("fraud", "classification")
    for i in range(16_500):  # two windows: the reference and the current one
        x: Features = {f"n{j}": rng.lognormvariate(0.0, 2.0) * rng.choice((-1, 1)) for j in range(12)}
        x["country"] = f"c{rng.randrange(80)}"
        x["channel"] = rng.choice(("pos", "online", "atm"))
        monitor.scored(x, rng.random(), i / 100.0)
        monitor.learned(float(rng.random() < 0.02), rng.random(), i / 100.0 + 3.0)
    size = len(pickle.dumps(monitor))
    assert size < 100_000, size


# ------------------------------------------------------------------ the API


def test_changes_and_readings_are_plain_frozen_data() -> None:
    change = opened(feed(Monitor("fraud", "classification"), 9_000, fraud_like(miss_from=3_000)))[0][1]
    assert change.kind in KINDS
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.state = "resolve"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(change)) == change


@pytest.mark.parametrize(
    "overrides",
    [
        {"window": 0},
        {"psi_resolve": 0.5},
        {"coverage_open": 1.5},
        {"classification_clip": 0.7},
        {"critical_ratio": 0.5},
    ],
)
def test_a_config_that_makes_no_sense_is_refused(overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MonitorConfig(**overrides)  # type: ignore[arg-type]


def test_an_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError):
        Monitor("x", "ranking")  # type: ignore[arg-type]


def test_a_restarted_clock_does_not_judge_label_coverage_across_the_jump() -> None:
    config = MonitorConfig(coverage_window=10.0, coverage_min_scored=50, coverage_min_expected=20)
    jumped, restarted = Monitor("fraud", "classification", config), Monitor("fraud", "classification", config)
    for monitor in (jumped, restarted):
        for i in range(3000):  # history: every event labelled
            monitor.scored({}, 0.1, i / 10)
            monitor.learned(0.0, 0.1, i / 10 + 0.05)
    restarted.restart_clock()
    changes: dict[str, list[AlertChange]] = {"jumped": [], "restarted": []}
    for name, monitor in (("jumped", jumped), ("restarted", restarted)):
        for i in range(400):  # months later, the stream: labels 20 s after their events
            changes[name] += monitor.scored({}, 0.1, 3e7 + i / 10)
            if i >= 200:
                changes[name] += monitor.learned(0.0, 0.1, 3e7 + i / 10)
    assert [(c.kind, c.state) for c in changes["jumped"]][:1] == [("label_coverage", "open")]
    assert changes["restarted"] == []


# ------------------------------------------------------------------ prediction drift: one model, both windows


class Learning:
    """A model of ``log_amount`` that changes as it learns: its slope grows with every call."""

    def __init__(self, slope: float = 0.0, growth: float = 1e-4) -> None:
        self.slope, self.growth = slope, growth

    def predict_one(self, x: Features) -> float:
        return 1.0 / (1.0 + math.exp(-self.slope * (float(x["log_amount"]) - 3.4)))

    def predict_many(self, xs: list[Features]) -> list[float]:
        return [self.predict_one(x) for x in xs]

    def learn(self) -> None:
        self.slope += self.growth


def feed_model(
    monitor: Monitor,
    n: int,
    step: Step,
    model: Learning,
    *,
    replace_at: int | None = None,
    given: bool = False,
) -> list[AlertChange]:
    """Scores n events with a model that learns after each and is replaced (a promotion) at
    ``replace_at``; the monitor gets the model, or with ``given`` only the served predictions."""
    rng, changes = random.Random(0), []
    for i in range(n):
        if i == replace_at:
            model = Learning(slope=-3.0 * model.slope)  # another model: steeper, and the other way round
            monitor.model_replaced(i / 100.0)
        x, _, y = step(rng, i)
        served = model.predict_one(x)
        changes += monitor.scored(x, served, i / 100.0, None if given else model)
        changes += monitor.learned(y, served, i / 100.0 + 3.0, served=served, scored_at=i / 100.0)
        model.learn()
    return changes


def test_neither_learning_nor_a_promotion_is_prediction_drift() -> None:
    step = fraud_like()
    frozen = feed_model(Monitor("fraud", "classification", SMALL), 12_000, step, Learning(), replace_at=6_000)
    assert [(c.kind, c.state) for c in frozen] == []
    # The served predictions themselves moved, by the model's doing: watched as they come,
    # they page (what the service did before one model scored both windows).
    served = feed_model(
        Monitor("fraud", "classification", SMALL), 12_000, step, Learning(), replace_at=6_000, given=True
    )
    assert ("prediction_drift", "open") in [(c.kind, c.state) for c in served]


def test_inputs_that_move_are_prediction_drift_seen_through_one_model() -> None:
    def step(rng: random.Random, i: int) -> tuple[Features, float, float]:
        x, p, y = fraud_like()(rng, i)
        if i >= 6_000:
            x["log_amount"] = float(x["log_amount"]) + 1.5
        return x, p, y

    changes = feed_model(Monitor("fraud", "classification", SMALL), 9_000, step, Learning(slope=2.0))
    opened_kinds = {(c.kind, c.feature) for c in changes if c.state == "open"}
    assert ("prediction_drift", None) in opened_kinds and ("data_drift", "log_amount") in opened_kinds
    first = next(c for c in changes if c.kind == "prediction_drift")
    assert first.at == 6_999 / 100.0 and "one model for both windows" in first.detail


def test_a_sample_of_the_events_is_scored_the_same_in_every_replay() -> None:
    config = replace(SMALL, window=4000, prediction_samples=500)
    runs = []
    for _ in range(2):
        monitor = Monitor("fraud", "classification", config)
        feed_model(monitor, 8_500, fraud_like(), Learning(slope=1.0))
        runs.append(monitor)
    samples = [m._prediction.samples[0] for m in runs]
    assert samples[0] == samples[1] and 400 < len(samples[0]) < 600  # ~500 of 4,000 events
    assert runs[0].readings() == runs[1].readings()


def test_a_pickled_monitor_with_its_samples_continues_exactly() -> None:
    def run(monitor: Monitor, model: Learning, start: int, n: int) -> list[AlertChange]:
        shifted = fraud_like(miss_from=5_000, miss_until=7_000)
        rng, changes = random.Random(start), []
        for i in range(start, start + n):
            x, _, y = shifted(rng, i)
            if i >= 6_000:
                x["log_amount"] = float(x["log_amount"]) + 1.5
            served = model.predict_one(x)
            changes += monitor.scored(x, served, i / 100.0, model)
            changes += monitor.learned(y, served, i / 100.0 + 3.0, served=served, scored_at=i / 100.0)
            model.learn()
        return changes

    straight, model = Monitor("fraud", "classification", SMALL), Learning(slope=1.0)
    before = run(straight, model, 0, 5_500)
    restored, restored_model = pickle.loads(pickle.dumps((straight, model)))
    after = run(straight, model, 5_500, 4_500)
    assert run(restored, restored_model, 5_500, 4_500) == after and any(c.state == "open" for c in after)
    assert restored.readings() == straight.readings() and not any(c.state == "open" for c in before)
