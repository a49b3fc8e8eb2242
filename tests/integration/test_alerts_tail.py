"""`scoring alerts tail` against a real broker: every change as a line, the open board."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from confluent_kafka import Producer

from consumers.alerts import format_change, watch
from stream.records import Alert
from stream.settings import Settings
from stream.tools.cli import main

pytestmark = pytest.mark.integration

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def drift(state: str, minutes: int, statistic: float) -> Alert:
    return Alert(
        id="fraud-concept-adwin-1",
        state=state,  # type: ignore[arg-type]
        kind="concept_drift",
        model="fraud",
        model_version=f"fraud.{1000 + 100 * minutes}",
        detector="adwin",
        statistic=statistic,
        threshold=0.02,
        severity="critical",
        window="2000 labels",
        first_seen=T0,
        at=T0 + dt.timedelta(minutes=minutes),
        detail="ROC AUC fell from 0.97 to 0.81",
    )


OTHER = Alert(
    id="demand-data-psi-price",
    state="open",
    kind="data_drift",
    model="demand",
    model_version="demand.88",
    feature="price",
    detector="psi",
    statistic=0.31,
    threshold=0.2,
    severity="warning",
    window="1h",
    first_seen=T0 + dt.timedelta(minutes=3),
    at=T0 + dt.timedelta(minutes=4),
)
HISTORY = [drift("open", 0, 0.031), drift("update", 2, 0.045), drift("resolve", 6, 0.012)]


def produce(settings: Settings, messages: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for key, value in messages:
        producer.produce(settings.topic("alerts.drift"), value, key=key.encode())
    assert producer.flush(10) == 0


@pytest.fixture
def published(settings: Settings) -> Settings:
    """Settings whose ``alerts.drift`` holds one alert's history, another's open, and garbage."""
    produce(
        settings,
        [(a.id, a.to_json()) for a in [*HISTORY, OTHER]] + [("junk", b'{"id": "x", "state": "open"}')],
    )
    return settings


def test_watch_prints_every_change_in_order_and_flags_garbage(published: Settings) -> None:
    out = io.StringIO()

    board = watch(published, out=out, idle_timeout=1.0)

    lines = out.getvalue().splitlines()
    assert len(lines) == 5
    mine = [line for line in lines if "id=fraud-concept-adwin-1" in line]
    assert mine == [format_change(a) for a in HISTORY]  # one key: one partition, in order
    assert [line.split()[1] for line in mine] == ["OPEN", "UPDATE", "RESOLVE"]
    assert format_change(OTHER) in lines
    (junk,) = [line for line in lines if "WARNING" in line]
    assert "alerts.drift[" in junk and "unparseable (missing_field)" in junk
    assert [a.id for a in board.open_alerts()] == [OTHER.id]


def test_open_prints_only_the_board_once_caught_up(published: Settings) -> None:
    out = io.StringIO()

    board = watch(published, open_only=True, idle_timeout=1.0, out=out)

    assert (len(board), board.resolved, board.changes) == (1, 1, 4)
    lines = out.getvalue().splitlines()
    junk, summary, header, row = lines
    assert "WARNING unparseable" in junk
    assert summary == "1 open alert (1 warning) as of 2025-03-01T12:04:00Z; 1 resolved"
    assert header.startswith("severity") and row.split() == [
        "warning",
        "demand@demand.88",
        "data_drift",
        "price",
        "psi",
        "0.31/0.2",
        "0",
        "1m00s",
        "2025-03-01T12:03:00Z",
        OTHER.id,
    ]


def test_the_command_exits_with_the_board(
    published: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "SCORING_KAFKA_BOOTSTRAP": published.kafka_bootstrap,
        "SCORING_NAMESPACE": published.namespace,
        "SCORING_SESSION_TIMEOUT_SECONDS": str(published.session_timeout_seconds),
        "SCORING_HEARTBEAT_INTERVAL_SECONDS": str(published.heartbeat_interval_seconds),
    }.items():
        monkeypatch.setenv(name, value)

    assert main(["alerts", "tail", "--open"]) == 0

    output = capsys.readouterr().out
    assert "1 open alert (1 warning)" in output and OTHER.id in output
    assert "fraud-concept-adwin-1" not in output
