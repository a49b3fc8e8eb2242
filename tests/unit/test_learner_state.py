"""A fresh learner state follows the settings: pipelines and the promotion test's parameters."""

from __future__ import annotations

import pytest

from stream.runtime.learner import fresh_state
from stream.settings import Settings
from stream.usecases import DEMAND, FRAUD


def test_a_fresh_state_takes_its_pipelines_and_test_from_the_settings() -> None:
    settings = Settings(
        champions="fraud=logistic_regression,demand=linear_regression",
        challengers="fraud=random_forest",
        promotion_min_labels=123,
        promotion_alpha=0.05,
    )
    fraud = fresh_state(settings, FRAUD).lifecycle.contest
    assert (fraud.champion_name, fraud.challenger_name) == ("logistic_regression", "random_forest")
    assert (fraud.test.min_labels, fraud.test.alpha) == (123, 0.05)
    demand = fresh_state(settings, DEMAND).lifecycle.contest
    assert (demand.champion_name, demand.challenger) == ("linear_regression", None)


def test_an_unknown_pipeline_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown pipeline 'tree'"):
        fresh_state(Settings(challengers="fraud=tree"), FRAUD)
    with pytest.raises(ValueError, match="SCORING_CHAMPIONS names no pipeline for fraud"):
        fresh_state(Settings(champions="demand=linear_regression"), FRAUD)
