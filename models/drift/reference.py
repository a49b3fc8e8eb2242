"""Prediction drift measured through one model for both windows: only the inputs can move it.

The served predictions move for two reasons: the events changed, which is what prediction
drift is about, or the model did, which is the service's own doing: it learns every label
(a version a second), a challenger is promoted, a version is rolled back and adopted, a
canary serves some entities, a bootstrap hands over a trained model. Comparing the served
predictions of two windows mixes both, and after a promotion it paged ops for a model that
was doing better.

:class:`PredictionDrift` never compares two models. It keeps a sample of each window's
events (their features), and when a window closes the model of that moment (the champion)
scores the sample of the window and the sample of its reference window, at once: the two
histograms it compares (PSI, as :class:`~models.drift.psi.DistributionDrift` does) are two
sets of inputs seen through one and the same function. Learning, promotions, rollbacks,
canaries and bootstraps change which function that is from one comparison to the next, but
never within one, so they cannot move the statistic; only the inputs can, and only in the
directions the model cares about. That is how ordinary learning is told apart from an input
change: whatever the model learned, the window and its reference are judged by the same
model.

The sample is ``prediction_samples`` events per window on average
(:class:`~models.drift.config.MonitorConfig`), picked by a seeded generator whose state is
part of the detector's, so a replay of the journal, and a restored pickle, sample the very
same events; scoring both samples costs two predictions per sampled event, at the window's
close. Without a model (``model=None``), the predictions given are counted as they come,
all of them: for a caller whose predictions come from one fixed model.

Examples
--------
A model that turns from constant to confident while the inputs stay the same raises nothing;
the inputs moving does (windows of 400 events here, every event sampled):

>>> from models.drift.config import MonitorConfig
>>> class Model:  # the probability grows with x once the model has learned
...     def __init__(self) -> None:
...         self.slope = 0.0
...     def predict_many(self, xs):
...         return [1.0 / (1.0 + math.exp(-self.slope * x["x"])) for x in xs]
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
>>> print(signals[4].detail)
the distribution of the predictions of one model for both windows (so the inputs moved) shifted: \
PSI 6.97 between the last 400 events and the 400 events before

"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from models.drift.alerts import Signal
from models.drift.config import MonitorConfig
from models.drift.psi import DistributionDrift, _bins

__all__ = ["PredictionDrift", "Scorer"]

_MASK = (1 << 64) - 1


class Scorer(Protocol):
    """What scores the samples: a model that predicts feature dicts, without learning from them."""

    def predict_many(self, xs: Sequence[Any]) -> list[float]: ...


class PredictionDrift(DistributionDrift):
    """PSI of one model's predictions on a sample of a window and of its reference window.

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
    sample
        The features of the current window's sampled events.
    samples
        Those of the reference windows, oldest first (``reference_lag`` of them).

    """

    def __init__(self, config: MonitorConfig, seed: str) -> None:
        super().__init__("prediction_drift", "", config)
        self.sample: list[Mapping[str, Any]] = []
        self.samples: list[list[Mapping[str, Any]]] = []
        self.scored = False  # whether a model scores the samples (else the predictions given count)
        self.rate = min(1.0, config.prediction_samples / config.window)
        self.min_values = max(1, round(config.min_window_values * self.rate))
        self._state = int.from_bytes(hashlib.sha256(f"prediction_drift:{seed}".encode()).digest()[:8])
        self._skip = 0  # events to let pass before the next one sampled

    def observe(self, x: Mapping[str, Any], model: Scorer | None, y_pred: float) -> None:
        """One event scored: its features ``x``, the model now learning, and what it was served.

        With a model, a sampled event's features are kept for the window's close; without,
        ``y_pred`` is counted (NaN is left out).
        """
        if model is None:
            if not math.isnan(y_pred):
                self.pending.append(y_pred)
            return
        if self._skip:
            self._skip -= 1
            return
        self._skip = self._gap()
        self.sample.append(x)

    def update(self, armed: bool, model: Scorer | None = None) -> Signal | None:
        """Closes the current window: once ``armed``, ``model`` scores its sample and its
        reference window's, which are compared; the sample is kept as a reference."""
        if model is None:
            return super().update(armed)
        self.scored = True
        lag = self.config.reference_lag
        signal = None
        if armed and len(self.samples) >= lag:
            reference, current = (_histogram(model.predict_many(s)) for s in (self.samples[0], self.sample))
            signal = self._judged(reference, current)
        self.samples.append(self.sample)
        del self.samples[:-lag]
        self.sample = []
        return signal

    def _what(self) -> str:
        if not self.scored:
            return "the predictions"
        return "the predictions of one model for both windows (so the inputs moved)"

    def _gap(self) -> int:
        """Events to skip before the next sample: geometric, so each event is sampled with
        probability ``rate`` whatever came before it."""
        if self.rate >= 1.0:
            return 0
        u = 1.0 - self._uniform()  # in (0, 1]
        return int(math.log(u) / math.log(1.0 - self.rate))

    def _uniform(self) -> float:
        """The next number of a SplitMix64 generator, in [0, 1): its whole state is one int
        (a few bytes in a checkpoint, where ``random.Random`` takes 4 kB)."""
        self._state = state = (self._state + 0x9E3779B97F4A7C15) & _MASK
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return ((z ^ (z >> 31)) >> 11) / 2.0**53


def _histogram(predictions: Sequence[float]) -> dict[int | str, int]:
    return _bins([p for p in predictions if not math.isnan(p)])
