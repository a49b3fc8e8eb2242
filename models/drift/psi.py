"""Data and prediction drift: the population stability index between windows of events.

A :class:`DistributionDrift` watches one distribution, an input feature's (``data_drift``)
or the served predictions' (``prediction_drift``), over tumbling windows of events: each
window is compared, by its PSI (:func:`psi`), with the window ``reference_lag`` windows
before it. The alert opens at ``psi_open`` (``prediction_psi_open``) and resolves under
``psi_resolve`` (``prediction_psi_resolve``), then rests ``data_cooldown`` windows. A
lasting shift is thus reported as a change, and adopted as the new normal once the window
before it shows it too.

State is bounded: histograms on a fixed fine grid (:func:`_bins`) for the current window and
the reference windows, and the numbers not binned yet. They are binned together (vectorised)
every few hundred events, and the fine grid is merged into ``bins`` bins of equal reference
mass only when two windows are compared.

Examples
--------
>>> detector = DistributionDrift("data_drift", "channel", MonitorConfig(window=100, min_window_values=50))
>>> for window in (["pos"] * 90 + ["online"] * 10, ["pos"] * 60 + ["online"] * 40):
...     for value in window:
...         detector.add(value)
...     print(detector.update(armed=True))
None
Signal(state='open', window='100 events', detail='the distribution of feature channel shifted: \
PSI 0.521 between the last 100 events and the 100 events before')
>>> detector.alarm, round(detector.statistic, 3), detector.threshold
(True, 0.521, 0.25)

"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from models.drift.alerts import Detector, Kind, Signal
from models.drift.config import MonitorConfig

__all__ = ["DistributionDrift", "psi"]

# The fine grid of the histograms: bins of 1/16 in sign(x) * log1p(|x| / 0.001), i.e. 6 % of a
# value above 0.001, and 6e-5 wide below (probabilities near zero keep their resolution).
_STEP = 1.0 / 16.0
_LINEAR = 1e-3
_OTHER = "\x00other"  # the categories of a feature beyond MonitorConfig.max_categories
_NAN = "\x00nan"


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


class DistributionDrift(Detector):
    """PSI of one distribution between a window of events and the window before it.

    Parameters
    ----------
    kind
        ``data_drift`` for an input feature, ``prediction_drift`` for the served predictions.
    feature
        The input feature's name; ``""`` for the predictions.
    config
        Its thresholds (``psi_*`` for a feature, ``prediction_psi_*`` for the predictions),
        ``data_cooldown``, ``bins``, ``reference_lag``, ``min_window_values`` and
        ``max_categories``; ``window`` names the windows in the alerts.

    Categories are counted as they come (:meth:`add`); numbers wait in ``pending`` until
    :meth:`count` bins them all at once (vectorised), which the monitor calls every few hundred
    events and :meth:`update` before it compares windows.

    """

    name = "PSI"

    def __init__(self, kind: Kind, feature: str, config: MonitorConfig) -> None:
        super().__init__(cooldown=config.data_cooldown)
        predictions = kind == "prediction_drift"
        self.kind, self.feature, self.config = kind, feature, config
        self.threshold = config.prediction_psi_open if predictions else config.psi_open
        self.resolve = config.prediction_psi_resolve if predictions else config.psi_resolve
        self.min_values = config.min_window_values  # values a window needs to be compared
        self.current: dict[int | str, int] = {}
        self.history: list[dict[int | str, int]] = []  # the reference windows, oldest first
        self.pending: list[float] = []  # numbers not yet in current

    def add(self, value: float | str) -> None:
        """One more value in the current window: a number, or a category."""
        if not isinstance(value, str):
            self.pending.append(value)
            return
        counts = self.current
        if value not in counts and len(counts) >= self.config.max_categories:
            value = _OTHER
        counts[value] = counts.get(value, 0) + 1

    def count(self) -> None:
        """Bins the pending numbers into the current window's histogram."""
        if self.pending:
            counts = self.current
            for key, n in _bins(self.pending).items():
                counts[key] = counts.get(key, 0) + n
            self.pending = []

    def update(self, armed: bool) -> Signal | None:
        """Closes the current window: compares it with its reference once ``armed`` (after the
        monitor's warm-up windows), then keeps it as a reference for the next ones."""
        self.count()
        signal = self._compare() if armed else None
        self.history.append(self.current)
        del self.history[: -self.config.reference_lag]
        self.current = {}
        return signal

    def _compare(self) -> Signal | None:
        if len(self.history) < self.config.reference_lag:
            return None
        return self._judged(self.history[0], self.current)

    def _judged(self, reference: Mapping[int | str, int], current: Mapping[int | str, int]) -> Signal | None:
        """What the PSI of ``current`` against ``reference`` does to the alert."""
        config = self.config
        if min(sum(reference.values()), sum(current.values())) < self.min_values:
            return None
        self.statistic = value = psi(reference, current, config.bins)
        state = self._judge(crossed=value >= self.threshold, cleared=value < self.resolve)
        if state is None:
            return None
        what = self._what()
        lag = config.reference_lag
        versus = f"between the last {config.window} events and the {config.window} events"
        versus += " before" if lag == 1 else f" {lag} windows before"
        detail = {
            "open": f"the distribution of {what} shifted: PSI {value:.3g} {versus}",
            "update": f"the distribution of {what} is still moving: PSI {value:.3g} {versus}",
            "resolve": (
                f"the distribution of {what} is stable again (PSI {value:.3g} {versus}): "
                "its current form is the new reference"
            ),
        }[state]
        return Signal(state, f"{config.window} events", detail)

    def _what(self) -> str:
        """What the distribution is of, for a human."""
        return f"feature {self.feature}" if self.feature else "the predictions"
