"""Use cases declared as data: the built-in file, a deployment's file, their fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from stream.settings import Settings, problems
from stream.usecases import DEMAND, FRAUD, Declaration, DeclarationError, declared

MINE = """
[fraud]
champion = "logistic_regression"

[fraud.labels]
policy = "implicit"
maturity_seconds = 5
implicit_target = 0

[fraud.features]
log_amount = { kind = "numeric", field = "amount", transform = "log1p" }
country = { kind = "categorical", field = "country" }
currency = { kind = "categorical", field = "currency" }
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return str(path)


def test_a_file_replaces_the_declarations_it_names_and_keeps_the_others(tmp_path: Path) -> None:
    settings = Settings.from_env({"SCORING_USE_CASES_FILE": write(tmp_path, MINE)})
    fraud, demand = settings.use_cases
    assert fraud.features.names == ("log_amount", "country", "currency")
    assert (fraud.champion, fraud.challenger) == ("logistic_regression", None)
    assert fraud.labels.policy == "implicit" and fraud.labels.implicit_target == 0.0
    assert fraud.fingerprint != FRAUD.fingerprint
    assert demand is DEMAND
    assert settings.pipelines("challengers")["fraud"] is None


def test_the_fingerprint_is_the_meaning_not_the_spelling() -> None:
    table = FRAUD.declaration.model_dump()
    assert Declaration.model_validate(table).fingerprint == FRAUD.fingerprint
    assert Declaration.model_validate({**table, "challenger": None}).fingerprint == FRAUD.fingerprint
    assert Declaration.model_validate({**table, "decay": 0.2}).fingerprint != FRAUD.fingerprint
    reordered = {**table, "features": dict(reversed(table["features"].items()))}
    assert Declaration.model_validate(reordered).fingerprint == FRAUD.fingerprint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[fraud\n", "Expected ']'"),
        ("[payments]\nchampion = 'x'\n", "unknown use case payments (one of: fraud, demand)"),
        (
            "[fraud]\nchampion = 'nope'\n[fraud.features]\na = { kind = 'count' }\n",
            'fraud: unknown pipeline "nope"',
        ),
        (
            "[fraud]\nchampion = 'logistic_regression'\n"
            "[fraud.features]\na = { kind = 'zscore', field = 'amont' }\n",
            "fraud: features.a: 'amont' is not a field of Transaction",
        ),
        (
            "[demand]\nchampion = 'linear_regression'\nlabels = { policy = 'implicit' }\n"
            "[demand.features]\na = { kind = 'count' }\n",
            "demand.labels: an implicit label policy needs maturity_seconds and implicit_target",
        ),
    ],
)
def test_a_bad_file_is_refused_at_start_with_every_problem_named(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValidationError) as refused:
        Settings.from_env({"SCORING_USE_CASES_FILE": path})
    lines = problems(refused.value)
    assert any(line.startswith(f"SCORING_USE_CASES_FILE: {path}: ") and expected in line for line in lines), (
        lines
    )


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeclarationError, match="No such file"):
        declared(str(tmp_path / "absent.toml"))


def test_a_maturity_longer_than_the_label_ttl_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINE.replace("maturity_seconds = 5", "maturity_seconds = 9000"))
    with pytest.raises(ValidationError, match="past SCORING_LABEL_TTL_SECONDS"):
        Settings.from_env({"SCORING_USE_CASES_FILE": path, "SCORING_LABEL_TTL_SECONDS": "3600"})


def test_a_category_of_a_personal_field_is_refused_while_personal_data_is_hashed(tmp_path: Path) -> None:
    text = MINE + 'account = { kind = "categorical", field = "account_id" }\n'
    text += 'merchant = { kind = "categorical", field = "merchant_id" }\n'
    text += 'merchant_new = { kind = "new_value", field = "merchant_id" }\n'
    path = write(tmp_path, text)
    with pytest.raises(ValidationError) as refused:
        Settings.from_env({"SCORING_USE_CASES_FILE": path, "SCORING_PII_KEY": "k" * 32})
    (line,) = problems(refused.value)
    assert line.startswith("SCORING_PII_KEY: fraud declares account (categorical on account_id), ")
    assert "merchant (categorical on merchant_id)" in line and "country" not in line
    # Without the key nothing is hashed, so nothing is refused; the built-in declarations pass.
    assert Settings.from_env({"SCORING_USE_CASES_FILE": path}).use_cases[0].personal_in_clear
    Settings.from_env({"SCORING_PII_KEY": "k" * 32})
