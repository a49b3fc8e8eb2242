"""A fresh learner state follows the settings: pipelines and the promotion test's parameters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stream.runtime.learner import fresh_state
from stream.settings import Settings, problems
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
        assert use_case.drift_exempt
        assert fresh_state(Settings(), use_case).lifecycle.monitor.config.exempt == use_case.drift_exempt


def test_an_unknown_pipeline_or_use_case_is_refused_when_the_settings_are_read() -> None:
    with pytest.raises(ValidationError, match='fraud: unknown pipeline "tree"'):
        Settings(challengers="fraud=tree")
    # A regression pipeline is not a classifier: each use case takes its task's candidates.
    with pytest.raises(ValidationError, match='fraud: unknown pipeline "log_linear_regression"'):
        Settings(champions="fraud=log_linear_regression")
    with pytest.raises(ValidationError, match="unknown use case fruad"):
        Settings(champions="fruad=logistic_regression")
    with pytest.raises(ValidationError, match="fraud: unknown pipeline"):
        Settings(challengers="fraud=none", champions="fraud=none")


def test_every_bad_setting_is_one_line_naming_its_variable() -> None:
    lines = problems(
        lambda: Settings.from_env({"SCORING_BATCH_SIZE": "0", "SCORING_METRICS_PORT": "x", "SCORING_X": "1"})
    )
    assert len(lines) == 2
    assert lines[0].startswith("SCORING_BATCH_SIZE: ") and "'0'" in lines[0]
    assert lines[1].startswith("SCORING_METRICS_PORT: ") and "'x'" in lines[1]
    assert problems(Settings.from_env) == []


def test_booleans_and_numbers_are_parsed_not_cast() -> None:
    settings = Settings.from_env({"SCORING_BATCH_WINDOW_SECONDS": "0.25", "SCORING_TOPIC_PARTITIONS": "8"})
    assert (settings.batch_window_seconds, settings.topic_partitions) == (0.25, 8)
    assert Settings.from_env(settings.environment()) == settings
