"""Quality estimated before labels arrive: confidence-based performance estimation (CBPE).

Fraud labels (chargebacks) come days or weeks after the scores, so the realized quality of a
version is known only when the losses are made. If the served scores are calibrated
probabilities (among the events scored ``p``, a share ``p`` is fraud), the confusion matrix
they will have once the labels come is expected from the scores alone: an event scored ``p``
counts as ``p`` of a positive and ``1 - p`` of a negative. This is CBPE, as NannyML does it
(`NannyML, "Confidence-based Performance Estimation"
<https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html>`_).
:class:`PerformanceEstimate` gives, over the last ``estimate_window`` scored events:

- the **estimated ROC AUC**: the chance that a positive scores above a negative, each pair
  of events weighted by ``p_i (1 - p_j)`` (ties count half);
- the **estimated precision and recall** at a score threshold ``t``: expected true positives
  ``sum(p; p >= t)``, over the events flagged (``count(p >= t)``) and over the expected
  positives (``sum(p)``).

Beside them, from the labels as they come (each joined to the score it was served), the
**realized** ROC AUC, precision and recall over the last ``estimate_window`` labels, the same
way, and the **expected calibration error** (ECE) of the scores: the mean gap between the
score and the observed rate over ten bins of equal count. The estimate is only as good as the
calibration: it is **valid** while that ECE is at most ``estimate_max_calibration_error`` on a
full window of labels and the window holds at least ``estimate_min_positives`` expected
positives. CBPE sees a change of the *inputs* (events move to where the model is less sure:
scores nearer the middle), at once; it cannot see a change of the *concept* (the same inputs,
another fraud rate), which only labels show: that is what the concept drift detector and the
realized metrics are for.

It is also the detector of ``estimated_quality_drop`` alerts (their lifecycle is the
monitor's, :mod:`models.drift.alerts`): each step (a fifth of the window of scored events)
the estimated ROC AUC is compared with its reference, an exponentially weighted mean of its
past values; the alert opens when it is ``estimate_drop`` below it (and the estimate is
valid), resolves when back within half of that, or when the new level has lasted
``estimate_adopt_after`` steps (it becomes the reference). A promotion or a rollback serves
another model, whose quality is another's: :meth:`PerformanceEstimate.restart` starts the
windows and the reference over, and labels of scores made before the restart no longer count
for the calibration. Ordinary learning moves the estimate slowly, and mostly up; the
reference follows it.

State is a few hundred numbers in single precision (~7 kB pickled): histograms of the
scores on a fixed grid of 64 bins of ``log(p / (1 - p))`` (a quarter wide, from -8 to 8;
pairs within one bin count as ties) for each fifth of a window, and the sums that precision
and recall need.

Examples
--------
Scores that are calibrated: events whose fraud probability is ``p``, each labelled fraud with
probability ``p``. The estimate agrees with what the labels later show; then the events move
to where the model is unsure (scores near 0.3) and the estimate falls at once, before any of
their labels is in:

>>> import random
>>> from models.drift.config import MonitorConfig
>>> rng = random.Random(1)
>>> estimate = PerformanceEstimate(MonitorConfig(estimate_window=2000, estimate_warmup=2))
>>> def score() -> float:
...     return 1 / (1 + math.exp(-rng.gauss(-3.0, 2.0)))
>>> for _ in range(4000):
...     p = score()
...     signal = estimate.update(p)
...     estimate.learn(float(rng.random() < p), p, scored_at=0.0)
>>> {k: round(v, 2) for k, v in estimate.estimated.items()}
{'roc_auc': 0.88, 'precision': 0.68, 'recall': 0.35}
>>> {k: round(v, 2) for k, v in estimate.realized.items()}
{'roc_auc': 0.87, 'precision': 0.67, 'recall': 0.34}
>>> estimate.valid, round(estimate.calibration_error, 3)
(True, 0.01)
>>> signals = [estimate.update(1 / (1 + math.exp(-rng.gauss(-0.8, 0.3)))) for _ in range(2000)]
>>> [s.state for s in signals if s is not None]
['open']
>>> print(next(s for s in signals if s is not None).detail)
the estimated ROC AUC of the served scores fell to 0.791 from its usual 0.88 \
(CBPE over the last 2000 scored events; calibration error 0.01 on the last 2000 labels)

"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from models.drift.alerts import Detector, Kind, Signal
from models.drift.config import MonitorConfig

__all__ = ["METRICS", "PerformanceEstimate"]

METRICS: Final = ("roc_auc", "precision", "recall")
"""What is estimated, and realized, by name."""

_LOW, _STEP, _BINS = -8.0, 0.25, 64
"""The grid of the scores: bins of ``log(p / (1 - p))`` a quarter wide from -8 (p = 3.4e-4)
to 8; scores beyond fall in the first or the last bin."""
_ECE_BINS = 10

Array = npt.NDArray[np.floating[Any]]


_EDGES = [1.0 / (1.0 + math.exp(-(_LOW + _STEP * k))) for k in range(1, _BINS)]
"""The scores between the bins: a score's bin is how many edges it reaches (no logarithm per event)."""


def _auc(positives: Array, negatives: Array) -> float | None:
    """ROC AUC of binned scores: positives and negatives per bin, in the order of the scores."""
    p, n = float(positives.sum()), float(negatives.sum())
    if p <= 0.0 or n <= 0.0:
        return None
    below = np.cumsum(negatives) - negatives
    return float((positives * (below + 0.5 * negatives)).sum() / (p * n))


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0.0 else None


class PerformanceEstimate(Detector):
    """CBPE of a classifier's served scores, their realized quality and calibration, and the
    ``estimated_quality_drop`` detector.

    Parameters
    ----------
    config
        Its parameters: ``estimate_*``.

    Attributes
    ----------
    estimated, realized
        ``roc_auc``, ``precision`` and ``recall`` (:data:`METRICS`) over the last window of
        scored events and of labels, refreshed every step of the window; a metric that is
        undefined (no flagged event, a single class) is left out.
    calibration_error
        Expected calibration error of the served scores over the last window of labels (NaN
        before a full window).
    reference
        The estimated ROC AUC's usual level, ``None`` until the first full window.

    """

    kind: Kind = "estimated_quality_drop"
    name = "CBPE"

    def __init__(self, config: MonitorConfig) -> None:
        super().__init__(update_every=config.estimate_chunks)
        self.config = config
        self.threshold = config.estimate_drop
        self.step = max(1, config.estimate_window // config.estimate_chunks)
        self.estimated: dict[str, float] = {}
        self.realized: dict[str, float] = {}
        self.calibration_error = math.nan
        self.reference: float | None = None
        self.restarted_at = -math.inf
        self._replaced = False  # restarted while the alert was open: it resolves
        self._start()

    def _start(self) -> None:
        # scored events: count and sum of scores per bin; flagged count, their score sum, the rest's
        self._scored: list[Array] = []
        self._n, self._p = [0] * _BINS, [0.0] * _BINS
        self._flagged = [0, 0.0, 0.0]
        self._events = self._labels = 0  # in the open step
        # labels: count, score sum and label sum per bin; flagged count and label sum, the rest's
        self._labelled: list[Array] = []
        self._ln, self._lp, self._ly = [0] * _BINS, [0.0] * _BINS, [0.0] * _BINS
        self._lflagged = [0, 0.0, 0.0]
        self.steps = 0  # steps of the scored window since the (re)start
        self._open_for = 0

    # -- inputs --------------------------------------------------------------------------

    def update(self, y_pred: float) -> Signal | None:
        """An event was served the score ``y_pred`` (its label unknown yet); each step of the
        window, the estimate is refreshed and judged: what it does to the alert, if anything."""
        if math.isnan(y_pred):
            return None
        b = bisect_right(_EDGES, y_pred)
        self._n[b] += 1
        self._p[b] += y_pred
        flagged = self._flagged
        if y_pred >= self.config.estimate_threshold:
            flagged[0] += 1
            flagged[1] += y_pred
        else:
            flagged[2] += y_pred
        self._events += 1
        if self._events < self.step:
            return None
        return self._close_scored()

    def learn(self, y_true: float, y_pred: float, scored_at: float | None = None) -> None:
        """The label ``y_true`` of an event served ``y_pred`` (at stream time ``scored_at``)
        arrived. A label of a score served before the last :meth:`restart` is left out."""
        if (
            math.isnan(y_pred)
            or math.isnan(y_true)
            or (scored_at is not None and scored_at < self.restarted_at)
        ):
            return
        y = 1.0 if y_true >= 0.5 else 0.0
        b = bisect_right(_EDGES, y_pred)
        self._ln[b] += 1
        self._lp[b] += y_pred
        self._ly[b] += y
        flagged = self._lflagged
        if y_pred >= self.config.estimate_threshold:
            flagged[0] += 1
            flagged[1] += y
        else:
            flagged[2] += y
        self._labels += 1
        if self._labels >= self.step:
            self._close_labelled()

    def restart(self, at: float) -> None:
        """Another model serves from stream time ``at`` (a promotion, a rollback adopted): the
        windows and the reference start over, and labels of scores served before ``at`` no
        longer count. An open alert was the replaced model's: it resolves with the new model's
        first full window, which is its own reference."""
        self._replaced = self.alarm
        self.reference = None
        self.restarted_at = at
        self.estimated, self.realized, self.calibration_error = {}, {}, math.nan
        self._start()

    # -- outputs -------------------------------------------------------------------------

    @property
    def valid(self) -> bool:
        """Whether the estimate can be trusted: calibrated scores (on a full window of labels)
        and enough expected positives."""
        config = self.config
        return (
            len(self._labelled) >= config.estimate_chunks
            and self.calibration_error <= config.estimate_max_calibration_error
            and self._expected_positives >= config.estimate_min_positives
        )

    def as_record(self) -> dict[str, Any]:
        """The estimate as JSON-ready data (a version's registry record holds it)."""
        error = self.calibration_error
        return {
            "estimated": dict(self.estimated),
            "realized": dict(self.realized),
            "calibration_error": None if math.isnan(error) else error,
            "valid": self.valid,
            "window": self.config.estimate_window,
            "threshold": self.config.estimate_threshold,
        }

    @property
    def _expected_positives(self) -> float:
        return float(sum(chunk[_BINS : 2 * _BINS].sum() for chunk in self._scored))

    # -- windows -------------------------------------------------------------------------

    def _close_scored(self) -> Signal | None:
        config = self.config
        self._scored.append(np.array([*self._n, *self._p, *self._flagged], dtype=np.float32))
        del self._scored[: -config.estimate_chunks]
        self._n, self._p, self._flagged, self._events = [0] * _BINS, [0.0] * _BINS, [0, 0.0, 0.0], 0
        window: Array = np.stack(self._scored).sum(axis=0, dtype=np.float64)
        n, p = window[:_BINS], window[_BINS : 2 * _BINS]
        flagged, flagged_p, rest_p = window[2 * _BINS :].tolist()
        values = {
            "roc_auc": _auc(p, n - p),
            "precision": _ratio(flagged_p, flagged),
            "recall": _ratio(flagged_p, flagged_p + rest_p),
        }
        self.estimated = {k: v for k, v in values.items() if v is not None}
        if len(self._scored) < config.estimate_chunks:
            return None
        self.steps += 1
        return self._judge_estimate()

    def _close_labelled(self) -> None:
        config = self.config
        self._labelled.append(np.array([*self._ln, *self._lp, *self._ly, *self._lflagged], dtype=np.float32))
        del self._labelled[: -config.estimate_chunks]
        self._ln, self._lp, self._ly = [0] * _BINS, [0.0] * _BINS, [0.0] * _BINS
        self._lflagged, self._labels = [0, 0.0, 0.0], 0
        window: Array = np.stack(self._labelled).sum(axis=0, dtype=np.float64)
        n, p, y = window[:_BINS], window[_BINS : 2 * _BINS], window[2 * _BINS : 3 * _BINS]
        flagged, flagged_y, rest_y = window[3 * _BINS :].tolist()
        values = {
            "roc_auc": _auc(y, n - y),
            "precision": _ratio(flagged_y, flagged),
            "recall": _ratio(flagged_y, flagged_y + rest_y),
        }
        self.realized = {k: v for k, v in values.items() if v is not None}
        if len(self._labelled) >= config.estimate_chunks:
            self.calibration_error = _calibration_error(n, p, y)

    # -- the alert -----------------------------------------------------------------------

    def _judge_estimate(self) -> Signal | None:
        config = self.config
        auc = self.estimated.get("roc_auc")
        if auc is None:
            return None
        if not self.alarm and not self.valid:
            # Not to be trusted (uncalibrated scores, or not measured yet): no usual level either.
            self.reference, self.statistic, self.steps = None, 0.0, 0
            return None
        if self.reference is None:
            self.reference = auc
        drop = self.reference - auc
        self.statistic = max(0.0, drop)
        if not self.alarm:
            state = None
            if self.steps > config.estimate_warmup:
                state = self._judge(crossed=drop >= self.threshold)
            if state is None:
                # A model that gets better is no alarm: its new level is the usual one at once.
                # A fall is followed slowly, so that a sudden one stands out.
                rate = 1.0 if auc > self.reference else math.log(2.0) / config.estimate_half_life
                self.reference += (auc - self.reference) * rate
                return None
            self._open_for = 0
            return Signal(state, self._window(), self._detail("fell to", auc))
        self._open_for += 1
        if self._replaced:
            self._judge(cleared=True)
            self._replaced = False
            detail = self._detail("starts over at", auc) + ": another model serves since the alert opened"
            return Signal("resolve", self._window(), detail)
        if drop < self.threshold / 2:
            self._judge(cleared=True)
            return Signal("resolve", self._window(), self._detail("is back at", auc))
        if self._open_for >= config.estimate_adopt_after:
            self._judge(cleared=True)
            detail = self._detail("has stayed at", auc) + ": adopted as its new usual level"
            self.reference = auc
            return Signal("resolve", self._window(), detail)
        state = self._judge(cleared=False)
        return None if state is None else Signal(state, self._window(), self._detail("is still at", auc))

    def _window(self) -> str:
        return f"{self.step * len(self._scored)} events"

    def _detail(self, verb: str, auc: float) -> str:
        reference = self.reference if self.reference is not None else math.nan
        labels = self.step * len(self._labelled)
        calibration = (
            f"calibration error {self.calibration_error:.2g} on the last {labels} labels"
            if not math.isnan(self.calibration_error)
            else "calibration not measured yet"
        )
        return (
            f"the estimated ROC AUC of the served scores {verb} {auc:.3g} from its usual {reference:.3g} "
            f"(CBPE over the last {self.step * len(self._scored)} scored events; {calibration})"
        )


def _calibration_error(n: Array, p: Array, y: Array, bins: int = _ECE_BINS) -> float:
    """Expected calibration error: the grid's bins merged, in order, into about ``bins`` bins of
    equal count; the mean over the labels of ``|mean score - observed rate|`` of their bin."""
    total = float(n.sum())
    if total <= 0.0:
        return math.nan
    target = total / bins
    gap, count, score, rate = 0.0, 0.0, 0.0, 0.0
    for k in range(len(n)):
        count += float(n[k])
        score += float(p[k])
        rate += float(y[k])
        if count >= target:
            gap += abs(score - rate)
            count, score, rate = 0.0, 0.0, 0.0
    gap += abs(score - rate)
    return gap / total
