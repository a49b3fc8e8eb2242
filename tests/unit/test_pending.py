"""Pending records: what a scored event leaves in Redis, compact and exact."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.records import prediction_json
from stream.runtime.keys import EntityKey
from stream.runtime.pending import Layout, LayoutError, Recorded, layout_of, prediction, scored_text
from stream.runtime.state import Sources
from stream.usecases import DEMAND, FRAUD, UseCase

KEY = EntityKey("acc-1")


def test_every_value_comes_back_exactly() -> None:
    layout = Layout(
        ("zero", "minus_zero", "flag", "small", "large", "fraction", "nan", "text", "long", "empty"), "fraud"
    )
    x = {
        "zero": 0.0,
        "minus_zero": -0.0,
        "flag": 1.0,
        "small": -128.0,
        "large": 128.0,
        "fraction": 0.1 + 0.2,
        "nan": math.nan,
        "text": "pos",
        "long": "é" * 300,
        "empty": "",
    }
    made = Recorded("fraud.12", "canary", 1772625600.123456, 12.345, 0.25, "acc-1")
    record = layout.encode(x, made, KEY)
    assert layout.recorded(record, KEY) == made
    assert layout.decode(record, KEY)["model_version"] == "fraud.12"
    assert (
        Layout(("a",), "fraud")
        .recorded(
            Layout(("a",), "fraud").encode({"a": 1.0}, made._replace(model_version="other.3"), KEY), KEY
        )
        .model_version
        == "other.3"
    )
    back = layout.decode(record, KEY)["x"]
    assert list(back) == list(x)
    for name, value in x.items():
        if isinstance(value, str):
            assert back[name] == value
        elif math.isnan(value):
            assert math.isnan(float(back[name]))
        else:
            assert back[name] == value and math.copysign(1.0, float(back[name])) == math.copysign(1.0, value)


def test_the_entity_name_is_kept_only_when_it_is_not_its_key() -> None:
    layout = Layout(("a",), "fraud")
    plain = Recorded("fraud.1", "live", 1.0, 2.0, 0.5, "acc-1")
    crafted = plain._replace(entity="x:merchant")
    assert len(layout.encode({"a": 1.5}, crafted, EntityKey("x%3Amerchant"))) == len(
        layout.encode({"a": 1.5}, plain, KEY)
    ) + len("x:merchant")
    assert layout.recorded(layout.encode({"a": 1.5}, plain, KEY), KEY) == plain
    crafted_key = EntityKey("x%3Amerchant")
    assert layout.recorded(layout.encode({"a": 1.5}, crafted, crafted_key), crafted_key) == crafted


@pytest.mark.parametrize("use_case", [FRAUD, DEMAND], ids=lambda u: u.name)
def test_a_prediction_made_again_is_the_published_bytes(use_case: UseCase[Any, Any]) -> None:
    at = 1772625600.123456
    published = prediction_json(
        "e1",
        use_case.name,
        f"{use_case.name}.3",
        scored_text(at),
        1.5,
        "acc-1",
        use_case.output_field,
        0.75,
        "live",
    )
    made = Recorded(f"{use_case.name}.3", "live", at, 1.5, 0.75, "acc-1")
    assert prediction(use_case, "e1", made) == published


def test_a_long_name_an_unnumbered_version_and_a_long_latency_come_back() -> None:
    layout = Layout(("a",), "fraud")
    for made in (
        Recorded("fraud.300", "canary", 1.0, 3_600_000.001, 0.5, "é" * 200),  # a part of 400+ bytes
        Recorded("fraud.007", "live", 1.0, 0.0, 0.5, "acc-1"),  # not the number 7's name
        Recorded("imported-model", "canary", 1.0, 0.001, 0.5, "acc-1"),
    ):
        record = layout.encode({"a": 2.5}, made, KEY)
        assert layout.recorded(record, KEY) == made
        assert layout.decode(record, KEY) == {
            "x": {"a": 2.5},
            "y_pred": 0.5,
            "entity": KEY,
            "model_version": made.model_version,
            "scored_at": 1.0,
        }


def test_a_record_of_other_columns_is_refused() -> None:
    record = Layout(("a", "b"), "fraud").encode(
        {"a": 1.0, "b": 2.0}, Recorded("v.1", "live", 1.0, 1.0, 1.0, "acc-1"), KEY
    )
    with pytest.raises(LayoutError, match="another declaration"):
        Layout(("b", "a"), "fraud").decode(record, KEY)


def test_a_record_holds_values_without_names() -> None:
    x = {name: 0.123456789 for name in FRAUD.features.names}
    record = layout_of(FRAUD).encode(x, Recorded("fraud.1", "live", 1.0, 1.0, 0.5, "acc-1"), KEY)
    # The prediction part (its size: 1 byte; time and value: 16; the latency, 1,000 µs: 2;
    # version 1 and its arm: 1), the tag (4), how each value is written (a byte per 4
    # columns), 8 bytes a value.
    assert len(record) == 1 + 16 + 2 + 1 + 4 + 3 + 8 * len(x)


def test_a_published_time_reads_back_as_the_recorded_one() -> None:
    for ts in (1772625600.0, 1772625600.000001, 1772625600.999999, 1796032991.163898):
        published = dt.datetime.fromisoformat(scored_text(ts).replace("Z", "+00:00"))
        assert published.timestamp() == ts


@given(st.integers(0, 2**31), st.integers(0, 2**63 - 1), st.text().filter(lambda s: "\n" not in s))
def test_a_source_reads_back_as_it_was(partition: int, offset: int, other: str) -> None:
    sources = Sources("t1.transactions/")
    for source in (f"t1.transactions/{partition}/{offset}", other, f"t1.transactions/{other}"):
        stored = sources.stored(source)
        assert sources.read(stored + b"rest", 0) == (source, len(stored))
