"""The gate holds what is worse than the live version; the watch rolls back what serves worse
than its reference."""

from __future__ import annotations

import random

import pytest

from models.online import OnlineModel
from models.pipelines import CANDIDATES
from models.release import Release, ReleaseConfig

LR = "logistic_regression"


def model() -> OnlineModel:
    return OnlineModel("fraud", "classification", CANDIDATES["classification"]["logistic_regression"]())


def labels(n: int, seed: int = 0) -> list[tuple[dict[str, float | str], float]]:
    rng = random.Random(seed)
    rows: list[tuple[dict[str, float | str], float]] = []
    for _ in range(n):
        y = float(rng.random() < 0.3)
        rows.append(({"signal": y + rng.gauss(0.0, 0.5)}, y))
    return rows


def trained(n: int = 500) -> OnlineModel:
    good = model()
    for x, y in labels(n, seed=99):
        good.learn_one(x, y)
    return good


def test_a_held_candidate_opens_one_alert_updated_every_n_decisions_and_resolved_by_a_pass() -> None:
    config = ReleaseConfig(min_labels=50, first_labels=0, update_every=3)
    release = Release("fraud", "classification", trained(), LR, config)
    good = release.live
    changes = []
    for decision in range(7):
        for x, y in labels(60, seed=decision):
            changes += release.learned(
                x,
                y,
                served_version="fraud.0",
                served_pred=0.5,
                candidate_pred=1.0 - good.predict_one(x),
                t=1.0,
            )
        verdict, alerts = release.judge(labels_learned=1000, t=float(decision))
        assert verdict.decision == "held" and verdict.ratio > 1.05
        changes += alerts
    assert [(c.kind, c.state) for c in changes] == [
        ("version_held", "open"),
        ("version_held", "update"),
        ("version_held", "update"),
    ]
    assert len({c.id for c in changes}) == 1 and changes[0].severity == "warning"

    # A candidate as good as the live version, on the evidence since: it passes, the episode ends.
    release.reset_evidence()
    for x, y in labels(60, seed=50):
        release.learned(
            x, y, served_version="fraud.1", served_pred=0.5, candidate_pred=good.predict_one(x), t=2.0
        )
    verdict, alerts = release.judge(labels_learned=1060, t=9.0)
    assert verdict.passed and [(a.kind, a.state, a.id) for a in alerts] == [
        ("version_held", "resolve", changes[0].id)
    ]


def test_the_first_learned_version_waits_for_enough_labels_until_one_passed_or_was_bootstrapped() -> None:
    release = Release("fraud", "classification", model(), LR, ReleaseConfig(min_labels=10, first_labels=500))
    good = trained()
    for x, y in labels(20):
        release.learned(
            x, y, served_version="fraud.0", served_pred=0.5, candidate_pred=good.predict_one(x), t=0.0
        )
    assert release.judge(labels_learned=499, t=0.0)[0].decision == "waiting"
    assert release.judge(labels_learned=500, t=0.0)[0].passed

    bootstrapped = Release(
        "fraud", "classification", model(), LR, ReleaseConfig(min_labels=10, first_labels=500)
    )
    bootstrapped.went_live("fraud.1", good, pipeline=LR, trusted=True)
    for x, y in labels(20):
        bootstrapped.learned(
            x, y, served_version="fraud.1", served_pred=0.5, candidate_pred=good.predict_one(x), t=0.0
        )
    assert bootstrapped.judge(labels_learned=20, t=0.0)[0].passed


def test_the_watch_rolls_back_versions_that_serve_worse_than_their_reference_and_alerts_once() -> None:
    config = ReleaseConfig(watch_min_labels=50, first_labels=0)
    good = trained()
    release = Release("fraud", "classification", good, LR, config)
    release.went_live("fraud.1", good, pipeline=LR, trusted=True)  # the reference
    rollback = []
    for x, y in labels(400, seed=3):
        inverted = 1.0 - good.predict_one(x)  # what a broken fraud.2 served
        rollback += release.learned(
            x, y, served_version="fraud.2", served_pred=inverted, candidate_pred=0.5, t=5.0
        )
        if release.watch.worse:
            break
    assert release.watch.worse and release.reference_version == "fraud.1"
    assert [(a.kind, a.state, a.severity) for a in rollback] == [("rollback", "open", "critical")]

    # The learner rolled back: what the broken versions served is not watched any more.
    release.adopted("fraud.1", good, pipeline=LR, latest=2)
    for x, y in labels(400, seed=4):
        assert (
            release.learned(
                x,
                y,
                served_version="fraud.2",
                served_pred=1.0 - good.predict_one(x),
                candidate_pred=0.5,
                t=6.0,
            )
            == []
        )
    assert not release.watch.worse and release.watch.test.n == 0


@pytest.mark.parametrize("seed", range(20))
def test_the_watch_leaves_versions_as_good_as_their_reference_alone(seed: int) -> None:
    """Under the null (served and reference equally good: the same model), no rollback; the
    reference moves on to the live version after ``confirm_labels``."""
    config = ReleaseConfig(watch_min_labels=50, confirm_labels=1000, first_labels=0)
    good = trained()
    release = Release("fraud", "classification", good, LR, config)
    release.went_live("fraud.1", good, pipeline=LR, trusted=True)
    release.went_live("fraud.2", good, pipeline=LR)
    rng = random.Random(seed)
    for x, y in labels(1500, seed=seed):
        noise = rng.gauss(0.0, 0.02)  # the served copy is as good, not identical
        served = min(1.0, max(0.0, good.predict_one(x) + noise))
        release.learned(x, y, served_version="fraud.2", served_pred=served, candidate_pred=served, t=1.0)
        assert not release.watch.worse
    assert release.reference_version == "fraud.2"  # confirmed after 1,000 labels


def test_inconsistent_watch_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="SCORING_ROLLBACK_CONFIRM_LABELS"):
        ReleaseConfig(watch_min_labels=500, confirm_labels=100)


def canary_release(config: ReleaseConfig) -> tuple[Release, OnlineModel]:
    """A release whose live fraud.1 is a trained model, with canary fraud.2 (the same model) serving."""
    good = trained()
    release = Release("fraud", "classification", good, LR, config)
    release.went_live("fraud.1", good, pipeline=LR, trusted=True)
    release.canary_started("fraud.2", good, pipeline=LR)
    return release, good


CANARY = ReleaseConfig(watch_min_labels=50, canary_fraction=0.1, canary_labels=300, first_labels=0)


def test_a_canary_that_serves_worse_than_the_live_version_is_rolled_back_with_one_critical_alert() -> None:
    release, good = canary_release(CANARY)
    changes = []
    for x, y in labels(400, seed=5):
        # Labels of both arms: the live version's events do not judge the canary.
        changes += release.learned(
            x, y, served_version="fraud.1", served_pred=good.predict_one(x), candidate_pred=0.5, t=1.0
        )
        changes += release.learned(
            x, y, served_version="fraud.2", served_pred=1.0 - good.predict_one(x), candidate_pred=0.5, t=1.0
        )
        if release.canary_outcome is not None:
            break
    assert release.canary_outcome == "rolled_back" and release.canary.test.n < CANARY.canary_labels
    assert [(a.kind, a.state, a.severity, a.detector) for a in changes] == [
        ("rollback", "open", "critical", "canary")
    ]
    assert release.conclude_canary(t=2.0) == ("rolled_back", [])
    assert release.live_version == "fraud.1" and release.canary_version is None

    # Late labels of the withdrawn canary's events judge nothing: not the watch, no canary.
    for x, y in labels(200, seed=6):
        late = release.learned(
            x, y, served_version="fraud.2", served_pred=1.0 - good.predict_one(x), candidate_pred=0.5, t=3.0
        )
        assert late == []
    assert release.watch.test.n == 0


def test_a_canary_as_good_as_the_live_version_is_promoted_after_canary_labels() -> None:
    release, good = canary_release(CANARY)
    rng = random.Random(1)
    for n, (x, y) in enumerate(labels(CANARY.canary_labels, seed=7), start=1):
        served = min(1.0, max(0.0, good.predict_one(x) + rng.gauss(0.0, 0.02)))
        release.learned(x, y, served_version="fraud.2", served_pred=served, candidate_pred=served, t=1.0)
        assert release.canary_outcome == ("promoted" if n == CANARY.canary_labels else None)
    assert release.conclude_canary(t=2.0) == ("promoted", [])
    assert release.live_version == "fraud.2" and release.canary_version is None and release.trusted


def test_with_a_canary_a_rollback_alert_resolves_when_a_canary_is_promoted_not_at_the_gate() -> None:
    release, good = canary_release(CANARY)
    for x, y in labels(400, seed=5):
        release.learned(
            x, y, served_version="fraud.2", served_pred=1.0 - good.predict_one(x), candidate_pred=0.5, t=1.0
        )
        if release.canary_outcome is not None:
            break
    release.conclude_canary(t=2.0)
    for x, y in labels(250, seed=8):
        release.learned(
            x, y, served_version="fraud.1", served_pred=0.5, candidate_pred=good.predict_one(x), t=3.0
        )
    verdict, changes = release.judge(labels_learned=1000, t=3.0)
    assert verdict.passed and changes == [], "a pass makes a canary, it serves no one yet"
    release.canary_started("fraud.3", good, pipeline=LR)
    for x, y in labels(CANARY.canary_labels, seed=9):
        release.learned(
            x, y, served_version="fraud.3", served_pred=good.predict_one(x), candidate_pred=0.5, t=4.0
        )
    outcome, resolved = release.conclude_canary(t=5.0)
    assert outcome == "promoted" and [(a.kind, a.state) for a in resolved] == [("rollback", "resolve")]


def test_a_canary_of_every_entity_or_settled_before_it_may_be_judged_is_refused() -> None:
    with pytest.raises(ValueError, match="fraction"):
        ReleaseConfig(canary_fraction=1.0)
    with pytest.raises(ValueError, match="SCORING_CANARY_LABELS"):
        ReleaseConfig(watch_min_labels=200, canary_fraction=0.1, canary_labels=100)
