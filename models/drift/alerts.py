"""The lifecycle of a drift alert, written once for every detector.

A detector (:class:`Detector`) takes readings in its own ``update``: a label, a window of
events, a window of stream time. Each reading goes through :meth:`Detector._judge`, which
says what it does to the detector's alert (a :class:`Signal`):

- with no alarm on, a reading that **crosses** the threshold **opens** the alert, unless the
  detector is resting: for ``cooldown`` readings after a resolve it does not open again, so
  that one episode does not flap;
- in alarm, a reading that **clears** it (each detector says when: with hysteresis, at a
  lower level than the one that opened it, or when a lasting change has been adopted as the
  new normal) **resolves** the alert; any other reading counts towards the next **update**,
  published every ``update_every`` readings.

:class:`Alerts` turns those signals into the :class:`AlertChange` records a model publishes:
at most one open alert per ``(kind, feature)``, its ``id`` the same for all its changes and
derived from the model, kind, feature, stream time it opened and how many alerts were
opened before it (so replaying a journal gives the same ids); its severity ``critical``
when the statistic is at least ``critical_ratio`` times the threshold, else ``warning``.

Examples
--------
A detector of the predictions' distribution, on windows of 100 values that jump from 0-99 to
50-149 and stay there: the alert opens, then resolves once the new form is the reference.

>>> from models.drift.config import MonitorConfig
>>> from models.drift.psi import DistributionDrift
>>> config = MonitorConfig(window=100, min_window_values=50)
>>> detector, alerts = DistributionDrift("prediction_drift", "", config), Alerts("demand", 2.0)
>>> changes = []
>>> for at, start in enumerate((0, 0, 50, 50)):
...     for value in range(start, start + 100):
...         detector.add(float(value))
...     changes += alerts.follow(detector, detector.update(armed=True), at=float(at))
>>> for change in changes:
...     print(change.at, change.state, change.kind, change.detector, change.severity)
2.0 open prediction_drift PSI critical
3.0 resolve prediction_drift PSI warning
>>> changes[0].id == changes[1].id, alerts.open
(True, {})

"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import ClassVar, Literal

__all__ = ["KINDS", "AlertChange", "Alerts", "Detector", "Kind", "Severity", "Signal", "State"]

Kind = Literal[
    "concept_drift",
    "data_drift",
    "prediction_drift",
    "label_coverage",
    "estimated_quality_drop",
    "version_held",
    "rollback",
]
KINDS: tuple[Kind, ...] = (
    "concept_drift",
    "data_drift",
    "prediction_drift",
    "label_coverage",
    "estimated_quality_drop",
)
"""Every kind of alert a :class:`~models.drift.monitor.Monitor` raises (``version_held`` and
``rollback`` are :mod:`models.release`'s)."""
State = Literal["open", "update", "resolve"]
Severity = Literal["warning", "critical"]

_NAMESPACE = uuid.UUID("6f1c3c52-8d0e-5b8e-9a55-2f7d0c1e4a10")


@dataclass(frozen=True)
class AlertChange:
    """One change of one alert: it opens, is updated, or resolves.

    Attributes
    ----------
    id
        The same for every change of one alert: a UUID derived from the model, kind, feature,
        the stream time it opened and how many alerts the monitor had opened before.
    state
        ``open``, ``update`` or ``resolve``.
    kind
        One of :data:`KINDS`.
    feature
        The input feature of a ``data_drift`` alert; ``None`` for the model-wide kinds.
    detector
        ``CUSUM``, ``PSI``, ``coverage_shortfall`` or ``CBPE``.
    statistic, threshold
        The detector's statistic at this change, and the value at which it opens an alert.
    severity
        ``critical`` when the statistic is at least ``critical_ratio`` times the threshold.
    window
        What the statistic was computed over, for a human (``"8000 events"``, ``"412 labels"``).
    first_seen, at
        Stream time the alert opened, and of this change.
    detail
        One sentence for ops.

    """

    id: str
    state: State
    kind: Kind
    feature: str | None
    detector: str
    statistic: float
    threshold: float
    severity: Severity
    window: str
    first_seen: float
    at: float
    detail: str


@dataclass(frozen=True)
class Signal:
    """What one reading of a detector does to its alert, in the detector's own words.

    ``window`` is what the statistic was computed over and ``detail`` one sentence for ops
    (:class:`Alerts` puts the model's name before it).
    """

    state: State
    window: str
    detail: str


class Detector:
    """A statistic watched against a threshold: what every detector shares.

    Parameters
    ----------
    update_every
        Readings in alarm between two updates of the open alert.
    cooldown
        Readings after a resolve during which the detector does not open again.

    Attributes
    ----------
    kind, name, feature
        What its alerts are about: their kind, the detector's name (``AlertChange.detector``)
        and the input feature watched (``""`` for the model-wide detectors).
    statistic, threshold
        Its reading: the latest value of its statistic, and the value at which it opens an
        alert (the ``scoring_drift_statistic`` and ``scoring_drift_threshold`` gauges).
    alarm
        Whether it crossed its threshold and has not cleared since: its alert is open.
    resting
        Readings left of its cooldown.

    """

    kind: Kind
    name: ClassVar[str]
    feature: str = ""
    threshold: float
    critical: ClassVar[bool] = False
    """Whether its alerts are critical whatever the statistic (a rollback is)."""

    def __init__(self, *, update_every: int = 1, cooldown: int = 0) -> None:
        self.update_every = update_every
        self.cooldown = cooldown
        self.statistic = 0.0
        self.alarm = False
        self.resting = 0
        self._since_update = 0  # readings in alarm since the alert was opened or updated

    def _judge(self, *, crossed: bool = False, cleared: bool = False) -> State | None:
        """What a reading does to the alert: ``crossed`` (the statistic is past the threshold)
        counts with no alarm on, ``cleared`` (the condition has gone) in alarm."""
        if not self.alarm:
            if self.resting:
                self.resting -= 1
                return None
            if not crossed:
                return None
            self.alarm, self._since_update = True, 0
            return "open"
        if cleared:
            self.alarm, self.resting = False, self.cooldown
            return "resolve"
        self._since_update += 1
        if self._since_update < self.update_every:
            return None
        self._since_update = 0
        return "update"


@dataclass
class Alerts:
    """The open alerts of one model, and how many it has opened: ids, severities, changes.

    Parameters
    ----------
    model
        The model's name: part of each alert's id, and the first words of its detail.
    critical_ratio
        An alert is critical when its statistic is at least this multiple of its threshold.

    """

    model: str
    critical_ratio: float
    open: dict[tuple[Kind, str], AlertChange] = field(default_factory=dict)
    """The latest change of each open alert by ``(kind, feature)``, oldest alert first."""
    opened: int = 0

    def follow(self, detector: Detector, signal: Signal | None, at: float) -> list[AlertChange]:
        """The change ``signal`` makes to the alert of ``detector`` at stream time ``at``, if any."""
        if signal is None:
            return []
        kind, feature = key = detector.kind, detector.feature
        if signal.state == "open":
            if key in self.open:
                raise RuntimeError(f"{kind} {feature!r} is open already")
            self.opened += 1
            name = f"{self.model}/{kind}/{feature}/{at!r}/{self.opened}"
            alert_id, first_seen = str(uuid.uuid5(_NAMESPACE, name)), at
        else:
            previous = self.open[key]
            alert_id, first_seen = previous.id, previous.first_seen
        statistic, threshold = detector.statistic, detector.threshold
        critical = detector.critical or (threshold > 0 and statistic >= self.critical_ratio * threshold)
        change = AlertChange(
            id=alert_id,
            state=signal.state,
            kind=kind,
            feature=feature or None,
            detector=detector.name,
            statistic=float(statistic),
            threshold=float(threshold),
            severity="critical" if critical else "warning",
            window=signal.window,
            first_seen=first_seen,
            at=at,
            detail=f"{self.model}: {signal.detail}",
        )
        if signal.state == "resolve":
            del self.open[key]
        else:
            self.open[key] = change
        return [change]
