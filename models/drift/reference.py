"""Prediction drift measured on frozen copies of the model: only the inputs can move it.

The served predictions move for two reasons: the events changed, which is what prediction
drift is about, or the model did, which is the service's own doing: it learns every label
(a version a second), a challenger is promoted, a version is rolled back and adopted, a
canary serves some entities, a bootstrap hands over a trained model. Comparing the served
predictions of two windows mixes both, and after a promotion it paged ops for a model that
was doing better.

:class:`PredictionDrift` never compares two models. When a window starts it freezes a copy of
the model (its *reference scorer*: a snapshot of the champion, which never learns), and
that window's events are scored by it; once the window is the reference of a later window,
that later window's events are scored by the same frozen copy too. The two histograms it
compares (PSI, as :class:`~models.drift.psi.DistributionDrift` does) are thus two sets of
inputs seen through one fixed function: learning, promotions, rollbacks, canaries and
bootstraps cannot move the statistic, only the inputs can, and only in the directions the
model cares about. Each window's reference scorer is re-taken when the window starts, so the
copies follow the champion, one window behind.

Each sampled event is scored twice (by the reference window's copy and by the current
window's), so only a sample of the events is scored: ``prediction_samples`` events per
window on average (:class:`~models.drift.config.MonitorConfig`), picked by a seeded
generator whose state is part of the detector's, so a replay of the journal, and a restored
pickle, sample the very same events. Without a model (``model=None``), the predictions given
are counted as they come, all of them: for a caller whose predictions come from one fixed
model.

Examples
--------
A model that turns from constant to confident while the inputs stay the same raises nothing;
the inputs moving does (windows of 400 events here, every event scored):

>>> from models.drift.config import MonitorConfig
>>> class Model:  # the probability grows with x once the model has learned
...     def __init__(self) -> None:
...         self.slope = 0.0
...     def predict_one(self, x):
...         return 1.0 / (1.0 + math.exp(-self.slope * x["x"]))
>>> config = MonitorConfig(window=400, min_window_values=200, prediction_samples=400)
>>> detector, model, signals = PredictionDrift(config, seed="doc"), Model(), []
>>> for window in range(6):
...     model.slope = float(window)  # learning: another model each window
...     shift = 2.0 if window >= 4 else 0.0  # the inputs move in the fifth window
...     for i in range(400):
...         detector.observe({"x": (i % 20) / 10 - 1 + shift}, model, float("nan"))
...     signals.append(detector.update(armed=True, model=model))
>>> [s.state if s else None for s in signals]
[None, None, None, None, 'open', 'resolve']

"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping
from typing import Any, Protocol

from models.drift.alerts import Signal
from models.drift.config import MonitorConfig
from models.drift.psi import DistributionDrift, _bins

__all__ = ["PredictionDrift", "Scorer"]


class Scorer(Protocol):
    """What a reference scorer is a frozen copy of: a model that predicts a feature dict."""

    def predict_one(self, x: Any) -> float: ...


def frozen(model: Scorer) -> Scorer:
    """An independent copy of ``model``, which its further learning leaves alone."""
    return copy.deepcopy(model)


class PredictionDrift(DistributionDrift):
    """PSI of a frozen copy of the model's predictions, between a window and its reference.

    Parameters
    ----------
    config
        Its thresholds (``prediction_psi_*``), windows, bins and ``prediction_samples``; a
        window is compared when its sample holds ``min_window_values`` times the share of
        the events sampled.
    seed
        Seeds the generator that picks the events sampled (the model's name: each model
        samples its own way, the same in every replay).

    Attributes
    ----------
    scorers
        The frozen copies, oldest first: the reference window's, the windows' after it, and
        the current window's last (``reference_lag + 1`` once they are all taken).
    versus
        The current window's sampled events as the reference window's copy predicts them:
        compared with the reference window's own histogram (``history[0]``), while
        ``current`` holds them as the current window's copy predicts them, which later
        windows are compared with.

    """

    def __init__(self, config: MonitorConfig, seed: str) -> None:
        super().__init__("prediction_drift", "", config)
        self.scorers: list[Scorer] = []
        self.versus: dict[int | str, int] = {}
        self.versus_pending: list[float] = []
        self.rate = min(1.0, config.prediction_samples / config.window)
        self.min_values = max(1, round(config.min_window_values * self.rate))  # of the sample
        self._rng = random.Random(f"prediction_drift:{seed}")
        self._skip = 0  # events to let pass before the next one sampled

    def observe(self, x: Mapping[str, Any], model: Scorer | None, y_pred: float) -> None:
        """One event scored: its features ``x``, the model now learning, and what it was served.

        With a model, a sampled event is scored by the frozen copies; without, ``y_pred`` is
        counted (NaN is left out).
        """
        if model is None:
            if not math.isnan(y_pred):
                self.pending.append(y_pred)
                self.versus_pending.append(y_pred)
            return
        if self._skip:
            self._skip -= 1
            return
        self._skip = self._gap()
        scorers = self.scorers
        if not scorers:
            scorers.append(frozen(model))
        own = scorers[-1].predict_one(x)
        if not math.isnan(own):
            self.pending.append(own)
        if len(scorers) > self.config.reference_lag:
            seen = scorers[0].predict_one(x)
            if not math.isnan(seen):
                self.versus_pending.append(seen)

    def count(self) -> None:
        """Bins the pending predictions of both copies."""
        super().count()
        if self.versus_pending:
            versus = self.versus
            for key, n in _bins(self.versus_pending).items():
                versus[key] = versus.get(key, 0) + n
            self.versus_pending = []

    def update(self, armed: bool, model: Scorer | None = None) -> Signal | None:
        """Closes the current window: compares it with its reference once ``armed``, keeps it as
        a reference, and freezes a copy of ``model`` (if any) for the next window."""
        signal = super().update(armed)
        self.versus = {}
        if model is not None:
            self.scorers.append(frozen(model))
            del self.scorers[: -(self.config.reference_lag + 1)]
        return signal

    def _compared(self) -> Mapping[int | str, int]:
        return self.versus

    def _what(self) -> str:
        if not self.scorers:
            return "the predictions"
        return "the predictions of one frozen copy of the model for both windows (so the inputs moved)"

    def _gap(self) -> int:
        """Events to skip before the next sample: geometric, so each event is sampled with
        probability ``rate`` whatever came before it."""
        if self.rate >= 1.0:
            return 0
        u = 1.0 - self._rng.random()  # in (0, 1]
        return int(math.log(u) / math.log(1.0 - self.rate))
