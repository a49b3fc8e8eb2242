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


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        ("enable.idempotence=false", "not JSON"),
        ('["linger.ms", 5]', "a JSON object of librdkafka properties"),
        ('{"debug": ["broker"]}', "debug: a string, number or boolean"),
        ('{"bootstrap.servers": "elsewhere:9092"}', "bootstrap.servers: given by a SCORING_KAFKA_* setting"),
        ('{"sasl.password": "x"}', "sasl.password: given by a SCORING_KAFKA_* setting"),
    ],
)
def test_kafka_options_are_a_json_object_of_properties_the_other_settings_do_not_give(
    options: str, refusal: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings.from_env({"SCORING_KAFKA_OPTIONS": options})
    [line] = problems(refused.value)
    assert line.startswith(f"SCORING_KAFKA_OPTIONS: {refusal}"), line
    settings = Settings.from_env({"SCORING_KAFKA_OPTIONS": '{"client.rack": "r1", "linger.ms": 20}'})
    assert settings.kafka_client_options == {"client.rack": "r1", "linger.ms": "20"}
    assert Settings.from_env(settings.environment()) == settings  # a child process gets them as given


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
