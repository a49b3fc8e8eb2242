"""The alert board folds changes by id; one change is one scannable line."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from consumers.alerts import AlertBoard, format_change
from consumers.reader import record_type
from stream.records import Alert
from stream.tools.cli import build_parser

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def change(alert_id: str, state: str, minutes: float = 0, **fields: Any) -> Alert:
    values: dict[str, Any] = {
        "id": alert_id,
        "state": state,
        "kind": "concept_drift",
        "model": "fraud",
        "model_version": "fraud.1200",
        "detector": "adwin",
        "statistic": 0.031,
        "threshold": 0.02,
        "severity": "critical",
        "window": "2000 labels",
        "first_seen": T0,
        "at": T0 + dt.timedelta(minutes=minutes),
        "detail": "ROC AUC fell from 0.97 to 0.81",
    }
    values.update(fields)
    return Alert.model_validate(values)


def board_of(*changes: Alert) -> AlertBoard:
    board = AlertBoard()
    for one in changes:
        board.apply(one)
    return board


def test_alerts_drift_is_read_as_alerts() -> None:
    assert record_type("alerts.drift") is Alert


def test_the_board_counts_updates_keeps_the_latest_statistic_and_drops_resolved_alerts() -> None:
    board = board_of(
        change("a", "open"),
        change("b", "open", 1, severity="warning", kind="data_drift", feature="amount", detector="psi"),
        change("a", "update", 2, statistic=0.04, model_version="fraud.1300"),
        change("a", "update", 7, statistic=0.05, model_version="fraud.1400"),
    )

    (a, b) = board.open_alerts()
    assert (a.id, a.updates, a.statistic, a.latest.model_version) == ("a", 2, 0.05, "fraud.1400")
    assert a.duration == dt.timedelta(minutes=7)
    assert (b.id, b.updates, b.statistic, b.duration) == ("b", 0, 0.031, dt.timedelta(minutes=1))
    assert (len(board), board.resolved, board.changes) == (2, 0, 4)

    assert board.apply(change("a", "resolve", 9, statistic=0.01))
    assert [x.id for x in board.open_alerts()] == ["b"]
    assert (len(board), board.resolved, board.changes) == (1, 1, 5)


def test_most_severe_first_then_longest_open() -> None:
    board = board_of(
        change("info", "open", severity="info", first_seen=T0 - dt.timedelta(hours=5)),
        change("warning-new", "open", severity="warning"),
        change("warning-old", "open", severity="warning", first_seen=T0 - dt.timedelta(hours=1)),
        change("critical", "open", 3),
    )
    assert [a.id for a in board.open_alerts()] == ["critical", "warning-old", "warning-new", "info"]


def test_replayed_and_stale_changes_are_ignored() -> None:
    opened, updated = change("a", "open"), change("a", "update", 5, statistic=0.04)
    board = board_of(opened, updated)

    assert not board.apply(opened)  # a learner replaying its journal
    assert not board.apply(updated)
    assert not board.apply(change("a", "update", 3, statistic=0.09))  # older than the latest
    (a,) = board.open_alerts()
    assert (a.updates, a.statistic, board.changes) == (1, 0.04, 2)

    resolved = change("a", "resolve", 8)
    assert board.apply(resolved)
    for replayed in (opened, updated, resolved):  # the whole history again
        assert not board.apply(replayed)
    assert (len(board), board.resolved, board.changes) == (0, 1, 3)


def test_an_alert_seen_only_from_an_update_or_reopened_after_resolving_is_on_the_board() -> None:
    board = board_of(change("a", "update", 4, statistic=0.05))
    (a,) = board.open_alerts()
    assert (a.updates, a.statistic) == (1, 0.05)

    board = board_of(change("b", "open"), change("b", "resolve", 5), change("b", "open", 9))
    assert [(x.id, x.updates) for x in board.open_alerts()] == [("b", 0)]
    assert board.resolved == 0

    board = board_of(change("c", "resolve", 5))  # its open came before what we read
    assert (len(board), board.resolved) == (0, 1)


def test_a_change_is_one_line_with_the_fields_ops_scan() -> None:
    line = format_change(
        change(
            "a-17",
            "update",
            125,
            severity="warning",
            kind="data_drift",
            model="demand",
            model_version="demand.88",
            feature="unit price",
            detector="psi",
            statistic=0.23456789,
            threshold=0.2,
            window="1h",
            detail="shifted up:\n  mean 3.10 -> 4.70\r\n",
        )
    )
    assert "\n" not in line and "\r" not in line
    assert line == (
        "2025-03-01T14:05:00Z UPDATE  warning  demand@demand.88 data_drift "
        'feature="unit price" psi=0.2346/0.2 window=1h open=2h05m id=a-17 shifted up: mean 3.10 -> 4.70'
    )


@pytest.mark.parametrize(
    ("state", "severity", "feature", "starts", "contains"),
    [
        ("open", "critical", None, "2025-03-01T12:00:00Z OPEN    critical fraud@fraud.1200", "feature=- "),
        (
            "resolve",
            "info",
            "amount",
            "2025-03-01T12:00:00Z RESOLVE info     fraud@fraud.1200",
            "feature=amount",
        ),
    ],
)
def test_states_and_severities_line_up(
    state: str, severity: str, feature: str | None, starts: str, contains: str
) -> None:
    line = format_change(change("x", state, severity=severity, feature=feature, detail=""))
    assert line.startswith(starts) and contains in line
    assert line.endswith('adwin=0.031/0.02 window="2000 labels" open=0s id=x')


def test_the_board_renders_a_summary_and_a_row_per_open_alert() -> None:
    board = board_of(
        change("a", "open"),
        change("a", "update", 10, statistic=0.05),
        change(
            "b", "open", 12, severity="warning", feature="amount", first_seen=T0 + dt.timedelta(minutes=12)
        ),
        change("c", "open", 1),
        change("c", "resolve", 3),
    )
    summary, header, first, second = board.render().splitlines()
    assert summary == "2 open alerts (1 critical, 1 warning) as of 2025-03-01T12:12:00Z; 1 resolved"
    assert header.split() == [
        "severity",
        "model@version",
        "kind",
        "feature",
        "detector",
        "statistic/threshold",
        "updates",
        "open",
        "for",
        "first",
        "seen",
        "id",
    ]
    assert first.split() == [
        "critical",
        "fraud@fraud.1200",
        "concept_drift",
        "-",
        "adwin",
        "0.05/0.02",
        "1",
        "10m00s",
        "2025-03-01T12:00:00Z",
        "a",
    ]
    assert second.split()[:4] == ["warning", "fraud@fraud.1200", "concept_drift", "amount"]
    assert header.index("kind") == first.index("concept_drift") == second.index("concept_drift")

    assert board_of(change("c", "open"), change("c", "resolve", 1)).render() == (
        "no open alerts (2 changes, 1 resolved)"
    )


def test_the_command_line_has_alerts_tail_with_open() -> None:
    parser = build_parser()
    args = parser.parse_args(["alerts", "tail", "--open"])
    assert (args.command, args.action, args.open) == ("alerts", "tail", True)
    assert parser.parse_args(["alerts", "tail"]).open is False
