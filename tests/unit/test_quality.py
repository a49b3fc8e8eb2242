"""Quality measured from outside: exact AUC, windows, baseline, joins in any order."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from consumers.quality import QualityTracker, mae, roc_auc, running_means
from stream.records import Prediction

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def prediction(
    event_id: str, second: int, *, score: float | None = None, forecast: float | None = None
) -> Prediction:
    return Prediction(
        event_id=event_id,
        model="fraud" if score is not None else "demand",
        model_version="1",
        scored_at=T0 + dt.timedelta(seconds=second),
        latency_ms=1.0,
        entity="e",
        score=score,
        forecast=forecast,
    )


def pairwise_auc(scores: list[float], labels: list[bool]) -> float:
    """The definition: P(positive outscores negative), a tie counting one half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_equals_hand_computed_value_with_ties() -> None:
    # Positives 0.9, 0.8, 0.3 against negatives 0.8, 0.8, 0.1:
    # 0.9 beats all 3; 0.8 ties twice (0.5 + 0.5) and beats 0.1; 0.3 beats 0.1 -> 6 / 9.
    scores = [0.9, 0.8, 0.8, 0.8, 0.3, 0.1]
    labels = [True, True, False, False, True, False]
    assert roc_auc(scores, labels) == pytest.approx(2 / 3)
    assert roc_auc([0.5, 0.5, 0.5], [True, False, True]) == 0.5
    assert roc_auc([0.1, 0.2], [True, False]) == 0.0


def test_auc_matches_pairwise_definition_on_random_tied_scores() -> None:
    rng = random.Random(7)
    for _ in range(50):
        size = rng.randint(2, 40)
        scores = [round(rng.random(), 1) for _ in range(size)]
        labels = [rng.random() < 0.3 for _ in range(size)]
        if len(set(labels)) == 2:
            assert roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels))


def test_auc_of_a_single_class_or_nothing_is_undefined() -> None:
    assert roc_auc([0.1, 0.9], [True, True]) is None
    assert roc_auc([0.1, 0.9], [False, False]) is None
    assert roc_auc([], []) is None


def test_running_means_and_mae() -> None:
    assert running_means([10.0, 20.0, 30.0, 40.0]) == [0.0, 10.0, 15.0, 20.0]
    assert running_means([]) == []
    assert mae([1.0, 5.0], [2.0, 2.0]) == 2.0
    assert mae([], []) is None


def test_fraud_early_and_late_windows_follow_scored_at() -> None:
    tracker = QualityTracker()
    # Early (seconds 0-2): ranked backwards. Late (seconds 3-5): ranked perfectly.
    events = [
        ("a", 0, 0.1, True),
        ("b", 1, 0.9, False),
        ("c", 2, 0.5, False),
        ("d", 3, 0.9, True),
        ("e", 4, 0.2, False),
        ("f", 5, 0.8, True),
    ]
    for event_id, second, score, label in reversed(events):  # arrival order is irrelevant
        tracker.add_prediction(prediction(event_id, second, score=score))
        tracker.add_label(event_id, label)
    fraud = tracker.report(early=3).model("fraud")
    assert (fraud.metric, fraud.joined, fraud.early, fraud.late) == ("roc_auc", 6, 0.0, 1.0)
    assert fraud.baseline_early is None and fraud.baseline_late is None
    whole = tracker.report(early=10).model("fraud")
    expected = pairwise_auc([e[2] for e in events], [e[3] for e in events])
    assert whole.early == whole.late == pytest.approx(expected)


def test_single_class_window_is_none_but_the_other_is_measured() -> None:
    tracker = QualityTracker()
    for i, (score, label) in enumerate([(0.2, False), (0.3, False), (0.9, True), (0.1, False)]):
        tracker.add_prediction(prediction(f"t{i}", i, score=score))
        tracker.add_label(f"t{i}", label)
    fraud = tracker.report(early=2).model("fraud")
    assert fraud.early is None
    assert fraud.late == 1.0
    assert "-" in tracker.report(early=2).format()


def test_demand_mae_and_running_mean_baseline_over_windows() -> None:
    tracker = QualityTracker()
    labels = [10.0, 20.0, 30.0, 40.0]
    forecasts = [12.0, 18.0, 33.0, 40.0]
    for i, (forecast, label) in enumerate(zip(forecasts, labels, strict=True)):
        tracker.add_label(f"s{i}", label)  # labels first this time
        tracker.add_prediction(prediction(f"s{i}", i, forecast=forecast))
    demand = tracker.report(early=2).model("demand")
    assert (demand.metric, demand.joined) == ("mae", 4)
    assert demand.early == 2.0  # |12-10|, |18-20|
    assert demand.late == 1.5  # |33-30|, |40-40|
    # The baseline forecasts 0, 10, 15, 20 (mean of the earlier labels).
    assert demand.baseline_early == 10.0  # |0-10|, |10-20|
    assert demand.baseline_late == 17.5  # |15-30|, |20-40|


def test_a_label_is_joined_whichever_comes_first() -> None:
    predictions = [prediction(f"t{i}", i, score=i / 10) for i in range(6)]
    predictions += [prediction(f"s{i}", i, forecast=float(i)) for i in range(6)]
    predictions.append(prediction("t0", 9, score=0.99))  # a redelivery, scored later
    labels: list[tuple[str, bool | float]] = [(f"t{i}", i % 2 == 0) for i in range(6)]
    labels += [(f"s{i}", float(i * 2)) for i in range(5)]
    labels.append(("unknown", True))
    steps: list[Prediction | tuple[str, bool | float]] = [*predictions, *labels]
    reports = set()
    for seed in range(20):
        random.Random(seed).shuffle(steps)
        tracker = QualityTracker()
        for step in steps:
            if isinstance(step, Prediction):
                tracker.add_prediction(step)
            else:
                tracker.add_label(*step)
        reports.add(tracker.report(early=4))
    assert len(reports) == 1
    report = reports.pop()
    assert report.labels == 12
    assert report.model("fraud").joined == 6
    assert report.model("demand").joined == 5


def test_duplicate_predictions_are_counted_and_the_earliest_is_kept() -> None:
    tracker = QualityTracker()
    tracker.add_prediction(prediction("t1", 5, score=0.1))  # redelivery arriving first
    for event_id, second, score in [("t1", 1, 0.9), ("t2", 2, 0.2), ("t1", 7, 0.3)]:
        tracker.add_prediction(prediction(event_id, second, score=score))
    tracker.add_label("t1", True)
    tracker.add_label("t2", False)
    fraud = tracker.report().model("fraud")
    assert (fraud.messages, fraud.events, fraud.duplicates, fraud.joined) == (4, 2, 2, 2)
    assert fraud.early == 1.0  # 0.9 (scored first) is kept for t1, not 0.1 or 0.3


def test_report_lists_models_seen_and_formats_a_table() -> None:
    tracker = QualityTracker()
    assert tracker.report().models == ()
    tracker.add_prediction(prediction("s1", 0, forecast=3.0))
    tracker.add_prediction(prediction("t1", 0, score=0.5))
    report = tracker.report(early=100)
    assert [q.model for q in report.models] == ["demand", "fraud"]
    assert report.model("demand").joined == 0
    with pytest.raises(KeyError):
        report.model("churn")
    lines = report.format().splitlines()
    assert "first 100" in lines[0] and "baseline last" in lines[0]
    assert lines[1].startswith("demand") and lines[2].startswith("fraud")
    assert len({len(line) for line in lines[:3]}) == 1  # aligned columns
    assert lines[3].startswith("labelled events: 0")


def test_labels_of_both_kinds_are_kept_apart() -> None:
    tracker = QualityTracker()
    tracker.add_prediction(prediction("x", 0, score=0.7))
    tracker.add_prediction(prediction("x", 0, forecast=4.0))
    tracker.add_label("x", 5.0)
    report = tracker.report()
    assert (report.model("fraud").joined, report.model("demand").joined) == (0, 1)
    assert report.model("demand").early == 1.0
    assert report.labels == 1
