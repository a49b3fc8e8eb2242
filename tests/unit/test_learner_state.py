"""A fresh learner state follows the settings: pipelines and the promotion test's parameters."""

from __future__ import annotations

from stream.runtime.learner import fresh_state, version_record
from stream.settings import Settings
from stream.usecases import DEMAND, FRAUD


def test_a_fresh_state_takes_its_pipelines_and_test_from_the_settings() -> None:
    settings = Settings(
        champions="fraud=logistic_regression,demand=linear_regression",
        challengers="fraud=random_forest,demand=none",
        promotion_min_labels=123,
        promotion_alpha=0.05,
    )
    fraud = fresh_state(settings, FRAUD).lifecycle.contest
    assert (fraud.champion_name, fraud.challenger_name) == ("logistic_regression", "random_forest")
    assert (fraud.test.min_labels, fraud.test.alpha) == (123, 0.05)
    demand = fresh_state(settings, DEMAND).lifecycle.contest
    assert (demand.champion_name, demand.challenger) == ("linear_regression", None)


def test_without_overrides_each_use_case_serves_what_it_declares() -> None:
    for use_case in (FRAUD, DEMAND):
        contest = fresh_state(Settings(), use_case).lifecycle.contest
        assert (contest.champion_name, contest.challenger_name) == (use_case.champion, use_case.challenger)


def test_the_drift_monitor_leaves_alone_the_features_each_use_case_declares_exempt() -> None:
    for use_case in (FRAUD, DEMAND):
        assert use_case.features.drift_exempt
        assert (
            fresh_state(Settings(), use_case).lifecycle.monitor.config.exempt
            == use_case.features.drift_exempt
        )


def test_a_fresh_state_remembers_the_declaration_it_learns_under() -> None:
    assert fresh_state(Settings(), FRAUD).declaration == FRAUD.fingerprint != DEMAND.fingerprint


def test_the_contests_metrics_are_reported_once_it_has_judged_a_label() -> None:
    settings = Settings(promotion_min_labels=10)
    state = fresh_state(settings, DEMAND)
    lifecycle = state.lifecycle
    warmup = lifecycle.contest.warming
    assert warmup > 0
    for i in range(warmup + 3):
        x = {"log_price": float(i % 5), "category": "dairy"}
        lifecycle.learned(x, 1.0, float(i % 7), t=1000.0 + i, served_version="demand.0")
        in_warmup = i < warmup
        reported = version_record(settings, DEMAND, state, "learned")["metrics"]
        # A metric of no label (an MAE of 0, a perfect score) is not reported during the warm-up.
        assert ("champion_MAE" in reported, "challenger_MAE" in reported) == (not in_warmup,) * 2, i
    assert reported["champion_MAE"] > 0 and reported["served_MAE"] > 0
