"""The quality estimated before labels arrive (CBPE), on synthetic scores whose calibration is known."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest

from models.drift import AlertChange, Monitor, MonitorConfig, PerformanceEstimate
from models.drift.alerts import Alerts

CONFIG = MonitorConfig(estimate_window=2000, estimate_warmup=2)


def calibrated(rng: random.Random, mean: float = -3.0, sd: float = 2.0) -> float:
    """A calibrated score: the event is positive with probability equal to it."""
    return 1.0 / (1.0 + math.exp(-rng.gauss(mean, sd)))


def feed(
    estimate: PerformanceEstimate,
    n: int,
    rng: random.Random,
    *,
    mean: float = -3.0,
    sd: float = 2.0,
    distort: float = 1.0,
    at: float = 0.0,
    alerts: Alerts | None = None,
) -> list[AlertChange]:
    """``n`` events scored and labelled at once: served ``p ** distort`` (1: calibrated)."""
    alerts, changes = alerts or Alerts("fraud", 2.0), []
    for i in range(n):
        p = calibrated(rng, mean, sd)
        served = p**distort
        changes += alerts.follow(estimate, estimate.update(served), at + i)
        estimate.learn(float(rng.random() < p), served, scored_at=at + i)
    return changes


def exact_cbpe_auc(scores: list[float]) -> float:
    """CBPE's ROC AUC computed pair by pair (sorted), ties aside."""
    p = np.sort(np.array(scores))
    negatives = 1.0 - p
    below = np.cumsum(negatives) - negatives
    return float((p * below).sum() / (p.sum() * negatives.sum()))


def test_calibrated_scores_estimate_what_their_labels_realize() -> None:
    estimate, rng = PerformanceEstimate(MonitorConfig(estimate_window=20_000)), random.Random(3)
    assert feed(estimate, 20_000, rng) == []  # ~1,500 flagged: precision within 0.05 is 4 sd
    for metric in ("roc_auc", "precision", "recall"):
        assert abs(estimate.estimated[metric] - estimate.realized[metric]) < 0.05, metric
    assert estimate.valid and estimate.calibration_error < 0.02


def test_the_binned_roc_auc_is_cbpes_within_a_thousandth() -> None:
    estimate, rng = PerformanceEstimate(CONFIG), random.Random(4)
    scores = [calibrated(rng) for _ in range(2000)]
    for p in scores:
        estimate.update(p)
    assert abs(estimate.estimated["roc_auc"] - exact_cbpe_auc(scores)) < 1e-3
    flagged = [p for p in scores if p >= CONFIG.estimate_threshold]
    assert estimate.estimated["precision"] == pytest.approx(sum(flagged) / len(flagged))
    assert estimate.estimated["recall"] == pytest.approx(sum(flagged) / sum(scores))


def test_events_moving_to_where_the_model_is_unsure_open_one_alert_before_any_label() -> None:
    estimate, rng = PerformanceEstimate(CONFIG), random.Random(5)
    assert feed(estimate, 10_000, rng) == []
    alerts, changes = Alerts("fraud", 2.0), []
    for i in range(4000):  # the events' scores crowd around 0.3: no label comes
        changes += alerts.follow(estimate, estimate.update(calibrated(rng, -0.8, 0.3)), 10_000.0 + i)
    assert [c.state for c in changes][:1] == ["open"] and [c.state for c in changes].count("open") == 1
    first = changes[0]
    assert first.kind == "estimated_quality_drop" and first.detector == "CBPE"
    assert first.statistic >= CONFIG.estimate_drop and "estimated ROC AUC" in first.detail
    assert estimate.estimated["roc_auc"] < estimate.realized["roc_auc"] - 0.05  # the labels do not know yet


def test_a_stationary_calibrated_stream_raises_nothing() -> None:
    estimate = PerformanceEstimate(MonitorConfig())  # the default window and drop
    assert feed(estimate, 100_000, random.Random(6)) == []
    assert estimate.statistic < MonitorConfig().estimate_drop / 2


def test_uncalibrated_scores_make_the_estimate_invalid_and_silent() -> None:
    estimate, rng = PerformanceEstimate(CONFIG), random.Random(7)
    feed(estimate, 10_000, rng, distort=0.5)  # served sqrt(p): far above the observed rate
    assert estimate.calibration_error > CONFIG.estimate_max_calibration_error and not estimate.valid
    alerts = Alerts("fraud", 2.0)
    changes = [
        alerts.follow(estimate, estimate.update(calibrated(rng, -0.8, 0.3) ** 0.5), 0.0) for _ in range(4000)
    ]
    assert not any(changes)


def test_a_restart_starts_the_windows_and_the_reference_over() -> None:
    estimate, rng, alerts = PerformanceEstimate(CONFIG), random.Random(8), Alerts("fraud", 2.0)
    feed(estimate, 10_000, rng, alerts=alerts)
    feed(estimate, 2000, rng, mean=-0.8, sd=0.3, at=10_000.0, alerts=alerts)
    assert estimate.alarm
    estimate.restart(at=20_000.0)  # a promotion: another model serves
    assert estimate.reference is None and estimate.estimated == {} and estimate.realized == {}
    estimate.learn(1.0, 0.9, scored_at=19_999.0)  # a label of the replaced model's score
    assert estimate.realized == {} and estimate._labels == 0
    changes = feed(estimate, 3000, rng, mean=-0.8, sd=0.3, at=20_000.0, alerts=alerts)
    assert [c.state for c in changes] == ["resolve"]  # the new model is its own reference


def test_an_estimate_pickles_and_goes_on_exactly() -> None:
    straight, rng = PerformanceEstimate(CONFIG), random.Random(9)
    feed(straight, 5000, rng)
    copy = pickle.loads(pickle.dumps(straight))
    a, b = random.Random(10), random.Random(10)
    assert feed(straight, 3000, a, mean=-0.8, sd=0.3) == feed(copy, 3000, b, mean=-0.8, sd=0.3)
    assert straight.estimated == copy.estimated and straight.reference == copy.reference
    assert len(pickle.dumps(straight)) < 20_000


def test_only_a_classification_monitor_estimates() -> None:
    assert Monitor("fraud", "classification").estimate is not None
    assert Monitor("demand", "regression").estimate is None


@pytest.mark.parametrize(
    "overrides", [{"estimate_window": 3}, {"estimate_threshold": 1.0}, {"estimate_drop": 0.0}]
)
def test_an_estimate_config_that_makes_no_sense_is_refused(overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MonitorConfig(**overrides)  # type: ignore[arg-type]
