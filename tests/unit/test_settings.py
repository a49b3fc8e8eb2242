"""The settings: read from the environment, validated at start, one clear line per bad value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stream.settings import Settings, problems


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
    with pytest.raises(ValidationError) as refused:
        Settings.from_env({"SCORING_BATCH_SIZE": "0", "SCORING_METRICS_PORT": "x", "SCORING_X": "1"})
    lines = problems(refused.value)
    assert len(lines) == 2
    assert lines[0].startswith("SCORING_BATCH_SIZE: ") and "'0'" in lines[0]
    assert lines[1].startswith("SCORING_METRICS_PORT: ") and "'x'" in lines[1]
    Settings.from_env()  # the environment the tests run in is valid: this does not raise


def test_booleans_and_numbers_are_parsed_not_cast() -> None:
    settings = Settings.from_env({"SCORING_BATCH_WINDOW_SECONDS": "0.25", "SCORING_TOPIC_PARTITIONS": "8"})
    assert (settings.batch_window_seconds, settings.topic_partitions) == (0.25, 8)
    assert Settings.from_env(settings.environment()) == settings


def test_an_explicit_environment_or_the_defaults_ignore_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCORING_NAMESPACE", "from-the-shell")
    monkeypatch.setenv("SCORING_BATCH_SIZE", "7")
    assert Settings().namespace == "from-the-shell"  # the process environment, when asked
    assert Settings.defaults().namespace == "" and Settings.defaults().batch_size == 2000
    assert Settings.from_env({"SCORING_BATCH_SIZE": "3"}).namespace == ""
    assert Settings.defaults().replace(batch_size=5).namespace == ""
