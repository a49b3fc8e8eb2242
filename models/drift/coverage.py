"""Label coverage: the share of scored events whose label arrives, against its usual level.

:class:`LabelCoverage` counts events scored and labels learned over windows of stream time;
each window's coverage (labels learned / events scored) is compared with the usual one, an
exponentially weighted mean followed while no alarm is on. Its statistic is the shortfall,
``1 - coverage / usual``: 1 when no label arrives at all. A window closes only once it has
enough scored events and expected labels, so at low rates it stretches, and the first
windows (a label delay after the first events) only learn the usual level.

Examples
--------
Ten events scored a second, each labelled, until the labels stop arriving at 300 s:

>>> config = MonitorConfig(coverage_window=10.0, coverage_min_scored=50, coverage_min_expected=20)
>>> detector = LabelCoverage(config)
>>> signals = []
>>> for i in range(4000):
...     signals.append(detector.update(i / 10, label=False))
...     if i < 3000:
...         signals.append(detector.update(i / 10 + 0.5, label=True))
>>> [(s.state, s.window) for s in signals if s is not None]
[('open', '10 s')]
>>> round(detector.statistic, 2), detector.threshold
(1.0, 0.5)

"""

from __future__ import annotations

import math

from models.drift.alerts import Detector, Kind, Signal
from models.drift.config import MonitorConfig

__all__ = ["LabelCoverage"]


class LabelCoverage(Detector):
    """Labels learned per event scored, over windows of stream time, against the usual level.

    Parameters
    ----------
    config
        Its parameters: ``coverage_*``.

    """

    kind: Kind = "label_coverage"
    name = "coverage_shortfall"

    def __init__(self, config: MonitorConfig) -> None:
        super().__init__(update_every=config.coverage_update_every)
        self.config = config
        self.threshold = config.coverage_open
        self.start: float | None = None  # of the current window
        self.scored = 0
        self.learned = 0
        self.windows = 0
        self.total_scored = 0  # over the warm-up windows
        self.total_learned = 0
        self.usual = 0.0

    def update(self, t: float, *, label: bool) -> Signal | None:
        """An event was scored (or, with ``label``, a label learned) at stream time ``t``."""
        signal = self._close(t)
        if label:
            self.learned += 1
        else:
            self.scored += 1
        return signal

    def _close(self, t: float) -> Signal | None:
        """Closes the window if it is due at ``t`` (before the entry at ``t`` counts)."""
        config = self.config
        if self.start is None:
            self.start = t
            return None
        if t - self.start < config.coverage_window or self.scored < config.coverage_min_scored:
            return None
        armed = self.windows >= config.coverage_warmup and self.usual > 0.0
        if armed and self.usual * self.scored < config.coverage_min_expected:
            return None  # too few labels expected yet: the window stretches
        ratio = self.learned / self.scored
        seconds = t - self.start
        scored, learned = self.scored, self.learned
        self.start, self.scored, self.learned = t, 0, 0
        self.windows += 1
        if not armed:
            self.total_scored += scored
            self.total_learned += learned
            self.usual = self.total_learned / self.total_scored
            return None
        self.statistic = max(0.0, 1.0 - ratio / self.usual)
        facts = (
            f"{learned} labels for {scored} events scored in the last {seconds:.0f} s, "
            f"{ratio:.1%} against a usual {self.usual:.1%}"
        )
        if not self.alarm:
            self.usual += (ratio - self.usual) * (math.log(2.0) / config.coverage_half_life)
        state = self._judge(
            crossed=self.statistic >= config.coverage_open, cleared=self.statistic < config.coverage_resolve
        )
        if state is None:
            return None
        detail = {
            "open": f"labels stopped arriving for scored events: {facts}",
            "update": f"labels are still missing: {facts}",
            "resolve": f"labels arrive at their usual rate again: {facts}",
        }[state]
        return Signal(state, f"{seconds:.0f} s", detail)
