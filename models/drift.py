"""Drift detectors and the alert lifecycle of one model.

A :class:`Monitor` watches one model through the learner's journal, entry by entry and in
journal order: :meth:`Monitor.scored` for each event scored (its features and the prediction
served) and :meth:`Monitor.learned` for each label joined to its prediction. Each call returns
the alert changes it caused. Four kinds of detectors run:

``concept_drift``
    A one-sided CUSUM on the model's per-label error: the error *rising* above its own
    usual level (a model that gets better raises nothing). Classification error is the log
    loss of the probability given to the true class, clipped; regression error is
    ``|sqrt(y) - sqrt(y_pred)|``, which has the same spread at every level for counts.
``data_drift``
    For each input feature, the population stability index (PSI) between the current
    tumbling window of events and the window before it.
``prediction_drift``
    The same PSI on the served predictions.
``label_coverage``
    The share of scored events whose label arrives (labels learned / events scored, over a
    window of stream time) against its usual level: labels that stop arriving.

Every alert goes through one lifecycle: it **opens** when its detector crosses its threshold,
is **updated** (never opened again) while the condition lasts, at most once per update
period, and **resolves** when the condition has gone (with hysteresis: a lower level than the
one that opened it) or when a lasting change has been adopted as the new normal. After a
resolve, a cooldown keeps the same detector from opening again at once, so one episode does
not flap. There is at most one open alert per ``(kind, feature)``; its ``id`` is the same
for all its changes. Severity is ``critical`` when the statistic is far past the threshold
(:attr:`MonitorConfig.critical_ratio`), else ``warning``.

Time is the journal's stream time, passed in by the caller, never the wall clock, and all
state is plain data updated deterministically: replaying the same journal into a fresh (or
an unpickled) monitor gives the same alerts, ids included. State is bounded: histograms on a
fixed grid for two windows per feature, the numbers of the last few hundred events not yet
binned (they are binned together, every 256 events), a few numbers per detector (a few kB
pickled per feature; see the tests for the measured bound).

Examples
--------
A demand model whose forecasts triple after 3,000 events, while demand does not (windows of
1,000 events here, to keep the example short):

>>> import random
>>> rng = random.Random(0)
>>> monitor = Monitor("demand", "regression", MonitorConfig(window=1000, window_warmup=1))
>>> changes = []
>>> for i in range(6000):  # an event every 0.1 s, its label 0.5 s later
...     y_pred, y = (10.0 if i < 3000 else 30.0), float(rng.randint(5, 15))
...     changes += monitor.scored({"price": rng.uniform(1.0, 2.0)}, y_pred, t=i / 10)
...     changes += monitor.learned(y, y_pred, t=i / 10 + 0.5)
>>> for change in changes:
...     print(change.at, change.state, change.kind, change.detector, change.window, change.severity)
301.7 open concept_drift CUSUM 52 labels warning
399.9 open prediction_drift PSI 1000 events critical
401.7 update concept_drift CUSUM 1052 labels critical
499.9 resolve prediction_drift PSI 1000 events warning
501.7 update concept_drift CUSUM 2052 labels critical
>>> print(changes[0].detail)
demand: the model's error (|sqrt(y) - sqrt(forecast)|) rose: 25 of excess error over the last 52 labels, \
beyond its usual 0.455 per label
>>> [(alert.kind, alert.state, alert.first_seen) for alert in monitor.open_alerts()]
[('concept_drift', 'update', 301.7)]

The forecasts' new distribution is adopted one window after it is seen; the error stays
high, so the concept drift alert stays open.

"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "KINDS",
    "AlertChange",
    "Kind",
    "Monitor",
    "MonitorConfig",
    "Reading",
    "Severity",
    "State",
]

Kind = Literal["concept_drift", "data_drift", "prediction_drift", "label_coverage"]
KINDS: tuple[Kind, ...] = ("concept_drift", "data_drift", "prediction_drift", "label_coverage")
"""Every kind of alert a :class:`Monitor` raises."""
State = Literal["open", "update", "resolve"]
Severity = Literal["warning", "critical"]
Task = Literal["classification", "regression"]

_NAMESPACE = uuid.UUID("6f1c3c52-8d0e-5b8e-9a55-2f7d0c1e4a10")
# The fine grid of the histograms: bins of 1/16 in sign(x) * log1p(|x| / 0.001), i.e. 6 % of a
# value above 0.001, and 6e-5 wide below (probabilities near zero keep their resolution).
_STEP = 1.0 / 16.0
_LINEAR = 1e-3
_OTHER = "\x00other"  # the categories of a feature beyond MonitorConfig.max_categories
_NAN = "\x00nan"
_CHUNK = 256  # events between two binnings of the numbers they brought (see _Distribution)


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
        ``CUSUM``, ``PSI`` or ``coverage_shortfall``.
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
class Reading:
    """One detector's live value (for the ``scoring_drift_statistic`` gauges).

    ``feature`` is ``""`` for the model-wide detectors. Every detector opens an alert when its
    statistic reaches its threshold.
    """

    kind: Kind
    detector: str
    feature: str
    statistic: float
    threshold: float


@dataclass(frozen=True)
class MonitorConfig:
    """Every threshold and window of a :class:`Monitor`, with the reasons for the defaults.

    The defaults were calibrated with ``python -m stream.tools.calibrate`` on the simulated streams
    of both use cases (100,000 events each, ten seeds): no alert of any kind on the stationary
    streams, while the injected concept drifts, feature shifts and lost labels were all
    caught (that command prints the table).

    Expected false alarms, from sampling noise alone: data and prediction drift, none (PSI
    between two windows of one distribution is ~0.002, the thresholds are 100 standard
    deviations away); label coverage, ~1e-7 per window (Poisson). What remains is structure
    the stream really has (bursts, daily cycles, a model that keeps learning): the largest
    statistics seen on the stationary streams are quoted below with each threshold.

    Parameters
    ----------
    concept_warmup
        Labels before the concept drift detector arms: a fresh model's error falls fast at
        first, and its mean is the baseline's starting point.
    concept_half_life
        Half-life, in labels, of the baseline error (an exponentially weighted mean, followed
        while no alert is open): long against an episode, so a drift is not absorbed before it
        is detected, short enough to follow a model that keeps improving.
    classification_clip
        Probabilities are clipped to ``[clip, 1 - clip]`` before the log loss: one confident
        miss costs at most ``-log(1e-3) = 6.9`` nats, so a few misses cannot open an alert.
    regression_error_cap
        Cap of ``|sqrt(y) - sqrt(y_pred)|``. For Poisson counts the square root has a standard
        deviation of about 0.5 at every level, so 3 is ~6 sigma: one absurd forecast (a
        diverging model once forecast 10^21 units) adds at most 3.
    classification_allowance, regression_allowance
        CUSUM slack, as a fraction of the baseline error: the detector accumulates only the
        error beyond ``(1 + allowance) * baseline``, so only a rise counts (a model that gets
        better raises nothing). A classifier's log loss is mostly near zero with rare large
        misses, and swings with the share of positives (10x between blocks of 2,000 labels
        over a simulated day): only a doubling counts. A regression's error is spread evenly
        around its mean: 10 % above it counts.
    classification_threshold, regression_threshold
        CUSUM level that opens an alert, in the error's units (nats, square-root units):
        25 nats is about four fully missed fraud bursts beyond the usual rate. On ten
        stationary simulated streams of 100,000 labels the largest CUSUM was 0.43-0.72 of it
        for fraud and 0.40-0.62 for demand; a Gumbel fit to those maxima puts a false alarm
        at ~1e-3 (fraud) and ~1e-4 (demand) per 100,000 labels. The drifts injected by the
        simulator were caught 169-362 (fraud) and 248-481 (demand) labels after them. A known
        limit: labels fed in strict event order (not spread by their arrival delays)
        concentrate the demand model's transient errors at the start of each simulated day
        into ~30 labels, and there its CUSUM reached 1.0-1.45x the threshold (4 seeds of 4).
    concept_update_every
        Labels between two updates of an open concept drift alert.
    concept_resolve_window
        The alert resolves when the mean error over this many labels is back under the
        CUSUM's reference level (the pre-drift baseline plus its allowance).
    concept_adopt_after
        An alert still open after this many labels (the model works worse for good, e.g. a
        harder concept) resolves by adopting the current error level as the new baseline, so
        that a further rise is alerted again; the prequential metric shows the level.
    concept_cooldown
        Labels after a resolve during which the CUSUM is held at zero.
    window
        Events per tumbling window of the data and prediction drift detectors. Long enough
        to average over the bursts and the daily mix of a stream (fraud is 20 % of the
        events at night in the simulator), short enough to report a shift within minutes
        at production rates.
    bins
        Bins of the PSI, of equal mass in the reference window; categories are bins of their
        own. With 10 bins and 8,000 events per window, PSI between two windows of one
        stationary distribution is about ``2 * 9 / 8000 = 0.002``, sd 0.001.
    psi_open, psi_resolve
        The usual PSI rule of thumb: above 0.25 a shift is significant, below 0.1 it is
        negligible; hysteresis between the two. On the simulator's stationary streams the
        largest PSI of a monitored feature was 0.093 (a shifted feature: 0.9-1.5).
    prediction_psi_open, prediction_psi_resolve
        The same for the predictions, twice as high: they follow the mix of the events, which
        moves more than any one feature through a day (fraud is ~0.1 % of the events by day
        and ~20 % at night in the simulator, where the largest stationary PSI of the fraud
        scores was 0.29).
    window_warmup
        Windows before the first comparison. A fresh model's predictions move while it learns
        its first labels, and so do features built from entity state while the entities are
        new (on the simulator, PSI up to 0.8 between the second and the first window, 0.13
        between the third and the second, under 0.1 later).
    reference_lag
        The reference of a window is the window this many windows before it. With 1, a
        lasting shift is adopted as the new normal one window after it is seen, and the alert
        resolves: the detector reports *changes*. A longer lag also catches slower drifts but
        pages on features that trend by construction (entity counts growing as the stream
        ages, the daily mix): on the simulator, lag 2 doubled their PSI.
    data_cooldown
        Windows after a resolve during which the same feature does not open again.
    max_categories
        Distinct values of a categorical feature counted per window; the rest share one bin.
    min_window_values
        A feature seen in fewer events than this in a window is not compared.
    exempt
        Features not monitored for data drift because they move by construction on a
        stationary stream: the clock and the calendar (a window shorter than a day or a week
        sees only part of the cycle: ``hour_sin``, ``hour_cos``, ``dow``, ``weekend``), how
        much history an entity has (``history_log_n``, ``recent_units_log_n`` grow as
        entities age) and the time since an entity's last event (``log_gap_seconds``, which
        follows the daily cycle of activity). The defaults name those of this service's use
        cases (``stream/features.py``).
    coverage_window
        Seconds of stream time per label coverage window. A window closes only once it has
        ``coverage_min_scored`` scored events and ``coverage_min_expected`` expected labels,
        so at low rates it stretches.
    coverage_min_scored, coverage_min_expected
        With at least 100 expected labels, a window's count falls under half of it by chance
        with probability ~1e-7 (Poisson), once in ~10^7 windows.
    coverage_warmup
        Windows before the label coverage detector arms: the first labels come a label delay
        after the first events.
    coverage_half_life
        Half-life, in windows, of the usual coverage (followed while no alert is open).
    coverage_open, coverage_resolve
        Shortfall (``1 - recent / usual coverage``) that opens an alert (labels at half their
        usual rate) and under which it resolves (back to 80 %).
    coverage_update_every
        Windows between two updates of an open label coverage alert.
    critical_ratio
        An alert is critical when its statistic is at least this multiple of its threshold
        (a shortfall of 0.5 * 2 = 1: no label at all).

    """

    concept_warmup: int = 1000
    concept_half_life: int = 2000
    classification_clip: float = 1e-3
    regression_error_cap: float = 3.0
    classification_allowance: float = 1.0
    regression_allowance: float = 0.1
    classification_threshold: float = 25.0
    regression_threshold: float = 25.0
    concept_update_every: int = 1000
    concept_resolve_window: int = 2000
    concept_adopt_after: int = 20_000
    concept_cooldown: int = 2000
    window: int = 8000
    bins: int = 10
    psi_open: float = 0.25
    psi_resolve: float = 0.1
    prediction_psi_open: float = 0.5
    prediction_psi_resolve: float = 0.2
    window_warmup: int = 3
    reference_lag: int = 1
    data_cooldown: int = 2
    max_categories: int = 50
    min_window_values: int = 500
    exempt: frozenset[str] = frozenset(
        {"hour_sin", "hour_cos", "dow", "weekend", "history_log_n", "recent_units_log_n", "log_gap_seconds"}
    )
    coverage_window: float = 60.0
    coverage_min_scored: int = 200
    coverage_min_expected: float = 100.0
    coverage_warmup: int = 3
    coverage_half_life: float = 20.0
    coverage_open: float = 0.5
    coverage_resolve: float = 0.2
    coverage_update_every: int = 10
    critical_ratio: float = 2.0

    def __post_init__(self) -> None:
        positive = {
            "concept_warmup": self.concept_warmup,
            "concept_half_life": self.concept_half_life,
            "concept_update_every": self.concept_update_every,
            "concept_resolve_window": self.concept_resolve_window,
            "window": self.window,
            "bins": self.bins,
            "reference_lag": self.reference_lag,
            "max_categories": self.max_categories,
            "coverage_window": self.coverage_window,
            "coverage_half_life": self.coverage_half_life,
            "coverage_update_every": self.coverage_update_every,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, not {value}")
        if not 0.0 < self.classification_clip < 0.5:
            raise ValueError("classification_clip must be within (0, 0.5)")
        if not 0.0 <= self.psi_resolve <= self.psi_open:
            raise ValueError("psi_resolve must be within [0, psi_open]")
        if not 0.0 <= self.prediction_psi_resolve <= self.prediction_psi_open:
            raise ValueError("prediction_psi_resolve must be within [0, prediction_psi_open]")
        if not 0.0 <= self.coverage_resolve <= self.coverage_open <= 1.0:
            raise ValueError("coverage_resolve <= coverage_open <= 1 is required")
        if self.critical_ratio < 1.0:
            raise ValueError("critical_ratio must be >= 1")


# --------------------------------------------------------------------------- alerts


@dataclass
class _Alert:
    """An open alert: its latest change and when it was last published."""

    last: AlertChange
    since_update: int = 0


@dataclass
class _Lifecycle:
    """Open alerts by ``(kind, feature)``, and how many alerts were ever opened."""

    model: str
    critical_ratio: float
    alerts: dict[tuple[Kind, str], _Alert] = field(default_factory=dict)
    opened: int = 0

    def is_open(self, kind: Kind, feature: str) -> bool:
        return (kind, feature) in self.alerts

    def change(
        self,
        state: State,
        kind: Kind,
        feature: str,
        detector: str,
        statistic: float,
        threshold: float,
        window: str,
        at: float,
        detail: str,
    ) -> AlertChange:
        key = (kind, feature)
        if state == "open":
            if key in self.alerts:
                raise RuntimeError(f"{kind} {feature!r} is open already")
            self.opened += 1
            name = f"{self.model}/{kind}/{feature}/{at!r}/{self.opened}"
            alert_id, first_seen = str(uuid.uuid5(_NAMESPACE, name)), at
        else:
            previous = self.alerts[key].last
            alert_id, first_seen = previous.id, previous.first_seen
        critical = threshold > 0 and statistic >= self.critical_ratio * threshold
        result = AlertChange(
            id=alert_id,
            state=state,
            kind=kind,
            feature=feature or None,
            detector=detector,
            statistic=float(statistic),
            threshold=float(threshold),
            severity="critical" if critical else "warning",
            window=window,
            first_seen=first_seen,
            at=at,
            detail=detail,
        )
        if state == "resolve":
            del self.alerts[key]
        else:
            self.alerts[key] = _Alert(result)
        return result


# --------------------------------------------------------------------------- concept drift


@dataclass
class _Concept:
    """One-sided CUSUM of the per-label error above its baseline, and its alert's state."""

    task: Task
    labels: int = 0
    baseline: float = 0.0  # exponentially weighted mean error (running mean during warm-up)
    cusum: float = 0.0
    run: int = 0  # labels since the CUSUM last left zero
    cooldown: int = 0
    # while open: the frozen reference, the current block of errors, labels since opening
    reference: float = 0.0
    block_sum: float = 0.0
    block_n: int = 0
    open_for: int = 0

    def error(self, config: MonitorConfig, y_true: float, y_pred: float) -> float:
        if self.task == "classification":
            p = y_pred if y_true >= 0.5 else 1.0 - y_pred
            return -math.log(min(1.0, max(config.classification_clip, p)))
        e = abs(math.sqrt(max(y_true, 0.0)) - math.sqrt(max(y_pred, 0.0)))
        return min(e, config.regression_error_cap)

    def allowance(self, config: MonitorConfig) -> float:
        if self.task == "classification":
            return config.classification_allowance
        return config.regression_allowance

    def threshold(self, config: MonitorConfig) -> float:
        if self.task == "classification":
            return config.classification_threshold
        return config.regression_threshold

    @property
    def transform(self) -> str:
        return "log loss" if self.task == "classification" else "|sqrt(y) - sqrt(forecast)|"


# --------------------------------------------------------------------------- data drift


def _bins(values: list[float]) -> dict[int | str, int]:
    """How many of ``values`` fall in each bin of the fine grid: an int per bin, ``_NAN`` for NaN."""
    v = np.array(values, dtype=float)
    nan = np.isnan(v)
    counts: dict[int | str, int] = {}
    if nan.any():
        counts[_NAN] = int(nan.sum())
        v = v[~nan]
    s = np.copysign(np.log1p(np.minimum(np.abs(v), 1e300) / _LINEAR), v)
    keys, n = np.unique(np.floor(s / _STEP).astype(np.int64), return_counts=True)
    counts.update(zip(keys.tolist(), n.tolist(), strict=True))
    return counts


def psi(reference: Mapping[int | str, int], current: Mapping[int | str, int], bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (fine-grid histograms).

    Numeric bins of the fine grid are merged, in order, into bins of at least ``1 / bins`` of
    the reference's mass (the last bin takes what is left; values below the reference's range
    join its first bin); each string (category) is a bin of its own. Both distributions get
    half a count per bin (so a new category has a large, finite PSI), then
    ``PSI = sum((c - r) * log(c / r))`` over the bins' shares ``c`` and ``r``.

    Examples
    --------
    >>> psi({0: 50, 1: 50}, {0: 50, 1: 50})
    0.0
    >>> round(psi({"pos": 90, "online": 10}, {"pos": 60, "online": 10, "atm": 30}), 2)
    1.33

    """
    n_ref, n_cur = sum(reference.values()), sum(current.values())
    if n_ref == 0 or n_cur == 0:
        return 0.0
    numbers = sorted({k for k in (*reference, *current) if isinstance(k, int)})
    groups: list[tuple[int, int]] = []
    target = sum(reference.get(k, 0) for k in numbers) / bins
    ref_acc = cur_acc = 0
    for k in numbers:
        ref_acc += reference.get(k, 0)
        cur_acc += current.get(k, 0)
        if ref_acc >= target > 0:
            groups.append((ref_acc, cur_acc))
            ref_acc = cur_acc = 0
    if ref_acc or cur_acc:
        groups.append((ref_acc, cur_acc))
    categories = [k for k in dict.fromkeys((*reference, *current)) if isinstance(k, str)]
    groups += [(reference.get(k, 0), current.get(k, 0)) for k in categories]
    half = 0.5 * len(groups)
    total = 0.0
    for r_count, c_count in groups:
        r = (r_count + 0.5) / (n_ref + half)
        c = (c_count + 0.5) / (n_cur + half)
        total += (c - r) * math.log(c / r)
    return total


@dataclass
class _Distribution:
    """A feature's (or the prediction's) histogram in the current and the reference windows.

    Categories are counted as they come; numbers wait in ``pending`` until :meth:`count` bins
    them all at once (vectorised), which the monitor calls every :data:`_CHUNK` events and
    before it compares windows.
    """

    current: dict[int | str, int] = field(default_factory=dict)
    history: list[dict[int | str, int]] = field(default_factory=list)  # oldest first
    pending: list[float] = field(default_factory=list)  # numbers not yet in current
    statistic: float = 0.0
    cooldown: int = 0

    def add_category(self, value: str, max_categories: int) -> None:
        counts = self.current
        if value not in counts and len(counts) >= max_categories:
            value = _OTHER
        counts[value] = counts.get(value, 0) + 1

    def count(self) -> None:
        """Bins the pending numbers into the current window's histogram."""
        if self.pending:
            counts = self.current
            for key, n in _bins(self.pending).items():
                counts[key] = counts.get(key, 0) + n
            self.pending = []


# --------------------------------------------------------------------------- label coverage


@dataclass
class _Coverage:
    """Labels learned per event scored over windows of stream time, against the usual level."""

    start: float | None = None
    scored: int = 0
    learned: int = 0
    windows: int = 0
    total_scored: int = 0
    total_learned: int = 0
    usual: float = 0.0
    statistic: float = 0.0
    since_update: int = 0


# --------------------------------------------------------------------------- the monitor


class Monitor:
    """The drift detectors of one model and the lifecycle of their alerts.

    Parameters
    ----------
    model
        The model's name (part of each alert's id).
    task
        ``"classification"`` (predictions are probabilities of the label ``True``) or
        ``"regression"`` (forecasts of non-negative counts).
    config
        Thresholds and windows; :class:`MonitorConfig` defaults when ``None``.

    """

    def __init__(self, model: str, task: Task, config: MonitorConfig | None = None) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"unknown task {task!r}")
        self.model = model
        self.task: Task = task
        self.config = config or MonitorConfig()
        self._alerts = _Lifecycle(model, self.config.critical_ratio)
        self._concept = _Concept(task)
        self._features: dict[str, _Distribution] = {}
        self._prediction = _Distribution()
        self._events = 0  # events in the current window
        self._windows = 0  # windows closed
        self._coverage = _Coverage()

    # -- inputs --------------------------------------------------------------------------

    def scored(self, x: Mapping[str, float | str], y_pred: float, t: float) -> list[AlertChange]:
        """An event with features ``x`` was scored ``y_pred`` at stream time ``t``."""
        changes = self._coverage_step(t)
        self._coverage.scored += 1
        config, features = self.config, self._features
        for name, value in x.items():
            distribution = features.get(name)
            if distribution is None:
                if name in config.exempt:
                    continue
                distribution = features[name] = _Distribution()
            if isinstance(value, str):
                distribution.add_category(value, config.max_categories)
            else:
                distribution.pending.append(value)
        if not math.isnan(y_pred):
            self._prediction.pending.append(float(y_pred))
        self._events += 1
        if self._events >= config.window:
            changes += self._close_window(t)
        elif self._events % _CHUNK == 0:
            self._count()
        return changes

    def learned(self, y_true: float, y_pred: float, t: float) -> list[AlertChange]:
        """The label ``y_true`` of an event served ``y_pred`` was learned at stream time ``t``."""
        changes = self._coverage_step(t)
        self._coverage.learned += 1
        if not (math.isnan(y_true) or math.isnan(y_pred)):
            changes += self._concept_step(y_true, y_pred, t)
        return changes

    # -- outputs -------------------------------------------------------------------------

    def readings(self) -> list[Reading]:
        """Every detector's current statistic and threshold."""
        config, concept = self.config, self._concept
        readings = [
            Reading("concept_drift", "CUSUM", "", concept.cusum, concept.threshold(config)),
            Reading("prediction_drift", "PSI", "", self._prediction.statistic, config.prediction_psi_open),
            Reading(
                "label_coverage", "coverage_shortfall", "", self._coverage.statistic, config.coverage_open
            ),
        ]
        readings += [
            Reading("data_drift", "PSI", name, distribution.statistic, config.psi_open)
            for name, distribution in self._features.items()
        ]
        return readings

    def open_alerts(self) -> list[AlertChange]:
        """The latest change of each open alert, oldest alert first."""
        return [alert.last for alert in self._alerts.alerts.values()]

    # -- concept drift -------------------------------------------------------------------

    def _concept_step(self, y_true: float, y_pred: float, t: float) -> list[AlertChange]:
        config, c = self.config, self._concept
        e = c.error(config, y_true, y_pred)
        c.labels += 1
        if c.labels <= config.concept_warmup:
            c.baseline += (e - c.baseline) / c.labels
            return []
        threshold, allowance = c.threshold(config), c.allowance(config)
        if not self._alerts.is_open("concept_drift", ""):
            reference = c.baseline * (1.0 + allowance)
            c.cusum = max(0.0, c.cusum + e - reference)
            c.run = c.run + 1 if c.cusum > 0 else 0
            c.baseline += (e - c.baseline) * (math.log(2.0) / config.concept_half_life)
            if c.cooldown > 0:
                c.cooldown -= 1
                c.cusum, c.run = 0.0, 0
                return []
            if c.cusum < threshold:
                return []
            c.reference, c.block_sum, c.block_n, c.open_for = c.baseline, 0.0, 0, 0
            detail = (
                f"{self.model}: the model's error ({c.transform}) rose: {c.cusum:.3g} of excess error "
                f"over the last {c.run} labels, beyond its usual {c.baseline:.3g} per label"
            )
            return [self._concept_change("open", t, detail)]
        # open: follow the excess against the frozen pre-drift reference
        reference = c.reference * (1.0 + allowance)
        c.cusum = min(max(0.0, c.cusum + e - reference), 10.0 * threshold)
        c.run += 1
        c.open_for += 1
        c.block_sum += e
        c.block_n += 1
        alert = self._alerts.alerts["concept_drift", ""]
        alert.since_update += 1
        if c.block_n >= config.concept_resolve_window:
            level = c.block_sum / c.block_n
            c.block_sum, c.block_n = 0.0, 0
            if level <= reference:
                detail = (
                    f"{self.model}: the model's error is back to its pre-drift level: {level:.3g} per "
                    f"label over the last {config.concept_resolve_window} labels (usual {c.reference:.3g})"
                )
                return [self._concept_resolve(t, detail, c.reference)]
            if c.open_for >= config.concept_adopt_after:
                detail = (
                    f"{self.model}: the model's error has stayed at {level:.3g} per label "
                    f"({level / max(c.reference, 1e-12):.1f}x its pre-drift {c.reference:.3g}) for "
                    f"{c.open_for} labels: adopted as its new usual level"
                )
                return [self._concept_resolve(t, detail, level)]
        if alert.since_update >= config.concept_update_every:
            recent = c.block_sum / c.block_n if c.block_n else e
            detail = (
                f"{self.model}: the model's error is still elevated: {c.cusum:.3g} of excess error "
                f"over {c.run} labels (recent {recent:.3g} per label, usual {c.reference:.3g})"
            )
            return [self._concept_change("update", t, detail)]
        return []

    def _concept_change(self, state: State, t: float, detail: str, window: str | None = None) -> AlertChange:
        c = self._concept
        threshold = c.threshold(self.config)
        window = window or f"{c.run} labels"
        return self._alerts.change(state, "concept_drift", "", "CUSUM", c.cusum, threshold, window, t, detail)

    def _concept_resolve(self, t: float, detail: str, baseline: float) -> AlertChange:
        """Resolves the alert: the CUSUM restarts from zero, after a cooldown, on ``baseline``."""
        c, config = self._concept, self.config
        c.baseline, c.cusum, c.run, c.cooldown = baseline, 0.0, 0, config.concept_cooldown
        return self._concept_change("resolve", t, detail, f"{config.concept_resolve_window} labels")

    # -- data and prediction drift -------------------------------------------------------

    def _count(self) -> None:
        self._prediction.count()
        for distribution in self._features.values():
            distribution.count()

    def _close_window(self, t: float) -> list[AlertChange]:
        config = self.config
        self._count()
        self._events = 0
        self._windows += 1
        changes: list[AlertChange] = []
        targets: list[tuple[Kind, str, _Distribution]] = [("prediction_drift", "", self._prediction)]
        targets += [("data_drift", name, d) for name, d in self._features.items()]
        for kind, name, distribution in targets:
            changes += self._compare(kind, name, distribution, t)
            distribution.history.append(distribution.current)
            del distribution.history[: -config.reference_lag]
            distribution.current = {}
        return changes

    def _compare(self, kind: Kind, name: str, d: _Distribution, t: float) -> list[AlertChange]:
        config = self.config
        if self._windows <= config.window_warmup or len(d.history) < config.reference_lag:
            return []
        reference = d.history[0]
        if min(sum(reference.values()), sum(d.current.values())) < config.min_window_values:
            return []
        d.statistic = value = psi(reference, d.current, config.bins)
        if kind == "prediction_drift":
            threshold, resolve = config.prediction_psi_open, config.prediction_psi_resolve
        else:
            threshold, resolve = config.psi_open, config.psi_resolve
        what = f"feature {name}" if name else "the predictions"
        window = f"{config.window} events"
        versus = f"between the last {config.window} events and the {config.window} events"
        lag = config.reference_lag
        versus += " before" if lag == 1 else f" {lag} windows before"
        if not self._alerts.is_open(kind, name):
            if d.cooldown > 0:
                d.cooldown -= 1
                return []
            if value < threshold:
                return []
            detail = f"{self.model}: the distribution of {what} shifted: PSI {value:.3g} {versus}"
            return [self._alerts.change("open", kind, name, "PSI", value, threshold, window, t, detail)]
        if value < resolve:
            d.cooldown = config.data_cooldown
            detail = (
                f"{self.model}: the distribution of {what} is stable again (PSI {value:.3g} {versus}): "
                "its current form is the new reference"
            )
            return [self._alerts.change("resolve", kind, name, "PSI", value, threshold, window, t, detail)]
        detail = f"{self.model}: the distribution of {what} is still moving: PSI {value:.3g} {versus}"
        return [self._alerts.change("update", kind, name, "PSI", value, threshold, window, t, detail)]

    # -- label coverage ------------------------------------------------------------------

    def _coverage_step(self, t: float) -> list[AlertChange]:
        """Closes the coverage window if it is due at ``t`` (before the entry at ``t`` counts)."""
        config, cov = self.config, self._coverage
        if cov.start is None:
            cov.start = t
            return []
        if t - cov.start < config.coverage_window or cov.scored < config.coverage_min_scored:
            return []
        armed = cov.windows >= config.coverage_warmup and cov.usual > 0.0
        if armed and cov.usual * cov.scored < config.coverage_min_expected:
            return []  # too few labels expected yet: the window stretches
        ratio = cov.learned / cov.scored
        seconds = t - cov.start
        scored, learned = cov.scored, cov.learned
        cov.start, cov.scored, cov.learned = t, 0, 0
        cov.windows += 1
        if not armed:
            cov.total_scored += scored
            cov.total_learned += learned
            cov.usual = cov.total_learned / cov.total_scored
            return []
        shortfall = max(0.0, 1.0 - ratio / cov.usual)
        cov.statistic = shortfall
        window = f"{seconds:.0f} s"
        facts = (
            f"{learned} labels for {scored} events scored in the last {seconds:.0f} s, "
            f"{ratio:.1%} against a usual {cov.usual:.1%}"
        )
        is_open = self._alerts.is_open("label_coverage", "")
        if not is_open:
            cov.usual += (ratio - cov.usual) * (math.log(2.0) / config.coverage_half_life)
            if shortfall < config.coverage_open:
                return []
            cov.since_update = 0
            detail = f"{self.model}: labels stopped arriving for scored events: {facts}"
            state: State = "open"
        elif shortfall < config.coverage_resolve:
            detail = f"{self.model}: labels arrive at their usual rate again: {facts}"
            state = "resolve"
        else:
            cov.since_update += 1
            if cov.since_update < config.coverage_update_every:
                return []
            cov.since_update = 0
            detail = f"{self.model}: labels are still missing: {facts}"
            state = "update"
        return [
            self._alerts.change(
                state, "label_coverage", "", "coverage_shortfall", shortfall, config.coverage_open, window, t,
                detail,
            )
        ]  # fmt: skip
