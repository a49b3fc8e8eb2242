"""Concept drift: a one-sided CUSUM on the model's error per label.

:class:`ConceptDrift` sums the error *rising* above its own usual level (a model that gets
better raises nothing). Classification error is the log loss of the probability given to
the true class, clipped; regression error is ``|sqrt(y) - sqrt(y_pred)|``, which has the
same spread at every level for counts. With no alarm on, the usual level (the baseline)
follows the error, slowly; once the CUSUM crosses its threshold the baseline is frozen, and the
alarm clears when the mean error over a block of labels is back under it, or when the error
has stayed high so long that its new level is adopted as the usual one. After that, a cooldown
holds the CUSUM at zero.

Examples
--------
A forecaster whose error per label doubles for 1,000 labels, from the 2,000th:

>>> detector = ConceptDrift("regression", MonitorConfig(concept_warmup=500))
>>> signals = [detector.update(9.0, 1.0 if 2000 <= i < 3000 else 4.0) for i in range(6100)]
>>> [(i, s.state, s.window) for i, s in enumerate(signals) if s is not None]
[(2027, 'open', '28 labels'), (3027, 'update', '1028 labels'), (4027, 'update', '2028 labels'), \
(5027, 'update', '3028 labels'), (6027, 'resolve', '2000 labels')]
>>> print(signals[2027].detail)
the model's error (|sqrt(y) - sqrt(forecast)|) rose: 25.1 of excess error over the last 28 labels, \
beyond its usual 1.01 per label
>>> print(signals[6027].detail)
the model's error is back to its pre-drift level: 1 per label over the last 2000 labels (usual 1.01)

"""

from __future__ import annotations

import math

from models.drift.alerts import Detector, Kind, Signal
from models.drift.config import MonitorConfig
from models.pipelines import Task

__all__ = ["ConceptDrift"]


class ConceptDrift(Detector):
    """One-sided CUSUM of a model's error per label above its usual level.

    Parameters
    ----------
    task
        ``"classification"`` (predictions are probabilities of the label ``True``) or
        ``"regression"`` (forecasts of non-negative counts).
    config
        Its parameters: ``concept_*`` and, for the task, ``classification_*`` or
        ``regression_*``.

    """

    kind: Kind = "concept_drift"
    name = "CUSUM"

    def __init__(self, task: Task, config: MonitorConfig) -> None:
        super().__init__(update_every=config.concept_update_every, cooldown=config.concept_cooldown)
        self.task, self.config = task, config
        classification = task == "classification"
        self.threshold = config.classification_threshold if classification else config.regression_threshold
        self.allowance = config.classification_allowance if classification else config.regression_allowance
        self.labels = 0
        self.baseline = 0.0  # exponentially weighted mean error (running mean during warm-up)
        self.run = 0  # labels since the CUSUM (the statistic) last left zero
        # in alarm: the frozen reference, the current block of errors, labels since opening
        self.reference = 0.0
        self.block_sum = 0.0
        self.block_n = 0
        self.open_for = 0

    @property
    def transform(self) -> str:
        """The error, for a human."""
        return "log loss" if self.task == "classification" else "|sqrt(y) - sqrt(forecast)|"

    def update(self, y_true: float, y_pred: float) -> Signal | None:
        """One label ``y_true`` of a prediction ``y_pred``: its error is a reading (after warm-up)."""
        e = self._error(y_true, y_pred)
        self.labels += 1
        if self.labels <= self.config.concept_warmup:
            self.baseline += (e - self.baseline) / self.labels
            return None
        return self._follow(e) if self.alarm else self._watch(e)

    def _error(self, y_true: float, y_pred: float) -> float:
        config = self.config
        if self.task == "classification":
            p = y_pred if y_true >= 0.5 else 1.0 - y_pred
            return -math.log(min(1.0, max(config.classification_clip, p)))
        e = abs(math.sqrt(max(y_true, 0.0)) - math.sqrt(max(y_pred, 0.0)))
        return min(e, config.regression_error_cap)

    def _watch(self, e: float) -> Signal | None:
        """No alarm on: the excess over the baseline, which follows the error."""
        reference = self.baseline * (1.0 + self.allowance)
        self.statistic = max(0.0, self.statistic + e - reference)
        self.run = self.run + 1 if self.statistic > 0 else 0
        self.baseline += (e - self.baseline) * (math.log(2.0) / self.config.concept_half_life)
        if self.resting:  # the cooldown holds the CUSUM at zero
            self.statistic, self.run = 0.0, 0
        if self._judge(crossed=self.statistic >= self.threshold) is None:
            return None
        self.reference, self.block_sum, self.block_n, self.open_for = self.baseline, 0.0, 0, 0
        detail = (
            f"the model's error ({self.transform}) rose: {self.statistic:.3g} of excess error "
            f"over the last {self.run} labels, beyond its usual {self.baseline:.3g} per label"
        )
        return Signal("open", f"{self.run} labels", detail)

    def _follow(self, e: float) -> Signal | None:
        """In alarm: the excess over the frozen pre-drift reference, and the error by blocks."""
        config = self.config
        reference = self.reference * (1.0 + self.allowance)
        self.statistic = min(max(0.0, self.statistic + e - reference), 10.0 * self.threshold)
        self.run += 1
        self.open_for += 1
        self.block_sum += e
        self.block_n += 1
        if self.block_n >= config.concept_resolve_window:
            level = self.block_sum / self.block_n
            self.block_sum, self.block_n = 0.0, 0
            if level <= reference:
                return self._clear(
                    self.reference,
                    f"the model's error is back to its pre-drift level: {level:.3g} per label over "
                    f"the last {config.concept_resolve_window} labels (usual {self.reference:.3g})",
                )
            if self.open_for >= config.concept_adopt_after:
                return self._clear(
                    level,
                    f"the model's error has stayed at {level:.3g} per label "
                    f"({level / max(self.reference, 1e-12):.1f}x its pre-drift {self.reference:.3g}) "
                    f"for {self.open_for} labels: adopted as its new usual level",
                )
        if self._judge(cleared=False) is None:
            return None
        recent = self.block_sum / self.block_n if self.block_n else e
        detail = (
            f"the model's error is still elevated: {self.statistic:.3g} of excess error over "
            f"{self.run} labels (recent {recent:.3g} per label, usual {self.reference:.3g})"
        )
        return Signal("update", f"{self.run} labels", detail)

    def _clear(self, baseline: float, detail: str) -> Signal:
        """Clears the alarm: the CUSUM restarts from zero, after the cooldown, on ``baseline``."""
        self._judge(cleared=True)
        self.baseline, self.statistic, self.run = baseline, 0.0, 0
        return Signal("resolve", f"{self.config.concept_resolve_window} labels", detail)
