"""Watching ``alerts.drift`` as ops would: a line per alert change, a board of open alerts.

The worker's monitoring publishes every change of an alert (it opens, is updated, is
resolved) as one :class:`~stream.records.Alert`; every change of one alert carries the
same ``id``. :class:`AlertBoard` folds changes by id into the alerts open now (pure: no
Kafka), :func:`format_change` renders one change as a single line, and :func:`watch`
reads the topic with :func:`consumers.reader.read` and prints either.

Times are the alerts' own (``at`` and ``first_seen`` are stream time), so how long an
alert has been open is measured up to its latest change, not to the reader's clock.

Examples
--------
>>> import datetime as dt
>>> t0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
>>> opened = Alert(
...     id="a1", state="open", kind="concept_drift", model="fraud", model_version="fraud.1200",
...     detector="adwin", statistic=0.031, threshold=0.02, severity="critical",
...     window="2000 labels", first_seen=t0, at=t0, detail="ROC AUC fell from 0.97 to 0.81",
... )
>>> print(format_change(opened))
2025-03-01T12:00:00Z OPEN    critical fraud@fraud.1200 concept_drift feature=- adwin=0.031/0.02 \
window="2000 labels" open=0s id=a1 ROC AUC fell from 0.97 to 0.81
>>> later = opened.model_copy(
...     update={"state": "update", "statistic": 0.042, "at": t0 + dt.timedelta(minutes=5)}
... )
>>> board = AlertBoard()
>>> board.apply(opened), board.apply(later), board.apply(opened)  # a replayed change is ignored
(True, True, False)
>>> [(a.id, a.updates, a.statistic, a.duration) for a in board.open_alerts()]
[('a1', 1, 0.042, datetime.timedelta(seconds=300))]
>>> board.apply(later.model_copy(update={"state": "resolve", "at": t0 + dt.timedelta(minutes=9)}))
True
>>> len(board), board.resolved
(0, 1)
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from consumers.reader import describe, read
from stream.records import Alert
from stream.settings import Settings
from stream.usecases import ALERTS_TOPIC as TOPIC

CAUGHT_UP_SECONDS = 2.0
"""With ``--open``: the topic counts as read to its end after this long without a message."""

_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class OpenAlert:
    """An alert open now, as folded from its changes.

    Attributes
    ----------
    latest
        Its latest change (``open`` or ``update``): severity, statistic, version, detail.
    updates
        How many ``update`` changes were read since it opened.
    """

    latest: Alert
    updates: int

    @property
    def id(self) -> str:
        """The alert's id, shared by all its changes."""
        return self.latest.id

    @property
    def statistic(self) -> float:
        """The detector's statistic at the latest change."""
        return self.latest.statistic

    @property
    def duration(self) -> dt.timedelta:
        """How long it has been open: from ``first_seen`` to its latest change (stream time)."""
        return max(self.latest.at - self.latest.first_seen, dt.timedelta(0))


class AlertBoard:
    """The alerts open now, folded from their changes in the order they were read.

    An ``open`` or ``update`` change (re)places its alert on the board, an update also
    counts; a ``resolve`` takes it off. Changes read again (a learner replaying its
    journal publishes the same changes again) are ignored, as are changes older than
    what the board already holds for their alert. An update whose ``open`` was never
    read (it came before what the topic still holds) puts the alert on the board all the
    same.

    Attributes
    ----------
    changes
        Changes applied so far (those ignored not counted).

    Examples
    --------
    >>> board = AlertBoard()
    >>> len(board), board.resolved, board.render()
    (0, 0, 'no open alerts (0 changes, 0 resolved)')
    """

    def __init__(self) -> None:
        self._open: dict[str, OpenAlert] = {}
        self._seen: dict[str, set[Alert]] = {}
        self._resolved: dict[str, dt.datetime] = {}
        self.changes = 0

    def __len__(self) -> int:
        return len(self._open)

    @property
    def resolved(self) -> int:
        """How many alerts are resolved (and not opened again)."""
        return len(self._resolved)

    def apply(self, change: Alert) -> bool:
        """Fold one change into the board.

        Parameters
        ----------
        change
            One alert change, as read from the topic.

        Returns
        -------
        bool
            ``False`` when the change was ignored: already read, or older than what the
            board holds for its alert.
        """
        resolved_at = self._resolved.get(change.id)
        if resolved_at is not None and _utc(change.at) <= resolved_at:
            return False
        current = self._open.get(change.id)
        seen = self._seen.setdefault(change.id, set())
        if change in seen or (current is not None and _utc(change.at) < _utc(current.latest.at)):
            return False
        self.changes += 1
        if change.state == "resolve":
            self._open.pop(change.id, None)
            self._seen.pop(change.id, None)
            self._resolved[change.id] = _utc(change.at)
            return True
        seen.add(change)
        self._resolved.pop(change.id, None)  # resolved, then opened again
        updates = current.updates if current is not None else 0
        self._open[change.id] = OpenAlert(latest=change, updates=updates + (change.state == "update"))
        return True

    def open_alerts(self) -> list[OpenAlert]:
        """The alerts open now, the most severe first, then the longest open.

        Returns
        -------
        list[OpenAlert]
            One entry per open alert.
        """
        return sorted(
            self._open.values(),
            key=lambda a: (_SEVERITY_RANK.get(a.latest.severity, 9), _utc(a.latest.first_seen), a.id),
        )

    def render(self) -> str:
        """The open alerts as a table under a one-line summary.

        Returns
        -------
        str
            ``"no open alerts (...)"``, or a summary line, then a header and a row per open
            alert: severity, model@version, kind, feature, detector, statistic/threshold,
            updates, how long open, first seen, id.
        """
        alerts = self.open_alerts()
        if not alerts:
            return f"no open alerts ({self.changes} changes, {self.resolved} resolved)"
        by_severity = {s: sum(a.latest.severity == s for a in alerts) for s in _SEVERITY_RANK}
        counts = ", ".join(f"{n} {s}" for s, n in by_severity.items() if n)
        newest = max(_utc(a.latest.at) for a in alerts)
        rows = [
            (
                "severity",
                "model@version",
                "kind",
                "feature",
                "detector",
                "statistic/threshold",
                "updates",
                "open for",
                "first seen",
                "id",
            )
        ]
        for alert in alerts:
            latest = alert.latest
            rows.append(
                (
                    latest.severity,
                    f"{latest.model}@{latest.model_version}",
                    latest.kind,
                    latest.feature or "-",
                    latest.detector,
                    f"{_number(latest.statistic)}/{_number(latest.threshold)}",
                    str(alert.updates),
                    _span(alert.duration),
                    _time(latest.first_seen),
                    alert.id,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        summary = (
            f"{len(alerts)} open alert{'s' if len(alerts) != 1 else ''} ({counts}) as of {_time(newest)}; "
            f"{self.resolved} resolved"
        )
        return "\n".join([summary, *lines])


def format_change(change: Alert) -> str:
    """One alert change as a single line ops can scan.

    Parameters
    ----------
    change
        The alert change.

    Returns
    -------
    str
        ``"<at> <STATE> <severity> <model>@<version> <kind> feature=<feature or ->
        <detector>=<statistic>/<threshold> window=<window> open=<since first seen>
        id=<id> <detail>"``; the detail's line breaks become spaces.

    Examples
    --------
    >>> import datetime as dt
    >>> t0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    >>> print(format_change(Alert(
    ...     id="d-7", state="resolve", kind="data_drift", model="demand", model_version="demand.88",
    ...     feature="price", detector="psi", statistic=0.08, threshold=0.2, severity="warning",
    ...     window="1h", first_seen=t0, at=t0 + dt.timedelta(hours=2, minutes=5),
    ...     detail="back under\\nthreshold",
    ... )))
    2025-03-01T14:05:00Z RESOLVE warning  demand@demand.88 data_drift feature=price psi=0.08/0.2 \
window=1h open=2h05m id=d-7 back under threshold
    """
    parts = [
        _time(change.at),
        change.state.upper().ljust(7),
        change.severity.ljust(8),
        f"{change.model}@{change.model_version}",
        change.kind,
        f"feature={_word(change.feature or '-')}",
        f"{_word(change.detector)}={_number(change.statistic)}/{_number(change.threshold)}",
        f"window={_word(change.window)}",
        f"open={_span(_utc(change.at) - _utc(change.first_seen))}",
        f"id={_word(change.id)}",
    ]
    detail = " ".join(change.detail.split())
    return " ".join([*parts, detail] if detail else parts)


def watch(
    settings: Settings,
    *,
    open_only: bool = False,
    out: TextIO | None = None,
    idle_timeout: float | None = None,
    stop: Callable[[], bool] | None = None,
) -> AlertBoard:
    """Read ``alerts.drift`` from its beginning: print every change, or the open alerts.

    Parameters
    ----------
    settings
        Deployment settings (broker, namespace).
    open_only
        Print nothing per change; once the topic is read to its end (no message for
        ``idle_timeout`` seconds), print the board of open alerts and return.
    out
        Where lines go; ``None``: the current ``sys.stdout``.
    idle_timeout
        Stop after this many seconds without a message. ``None``: never when printing
        every change (until Ctrl-C), :data:`CAUGHT_UP_SECONDS` with ``open_only``.
    stop
        Called between polls; stop when it returns ``True``.

    Returns
    -------
    AlertBoard
        The board as folded from every change read.

    Raises
    ------
    confluent_kafka.KafkaException
        If the topic cannot be created or read.
    """
    board = AlertBoard()
    if idle_timeout is None:
        idle_timeout = CAUGHT_UP_SECONDS if open_only else float("inf")
    for delivered in read(settings, [TOPIC], idle_timeout=idle_timeout, stop=stop):
        change = delivered.parse()
        if not isinstance(change, Alert):  # not an alert: say so, whatever the mode
            print(describe(delivered), file=out or sys.stdout, flush=True)
            continue
        board.apply(change)
        if not open_only:
            print(format_change(change), file=out or sys.stdout, flush=True)
    if open_only:
        print(board.render(), file=out or sys.stdout, flush=True)
    return board


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _time(moment: dt.datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: float) -> str:
    return f"{value:.4g}"


def _word(text: str) -> str:
    """``text`` as is when it is one plain word, else JSON-quoted (so it stays one token)."""
    return text if text and not any(c.isspace() or c == '"' for c in text) else json.dumps(text)


def _span(span: dt.timedelta) -> str:
    """A duration, short: ``45s``, ``5m12s``, ``3h05m``, ``2d04h``.

    Examples
    --------
    >>> [_span(dt.timedelta(seconds=s)) for s in (-3, 45, 312, 11100, 187200)]
    ['0s', '45s', '5m12s', '3h05m', '2d04h']
    """
    seconds = max(int(span.total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"
