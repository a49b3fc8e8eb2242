"""Quality of the service measured from outside: predictions joined with late labels.

This is what a downstream team can compute from the topics alone. Predictions and labels
are joined by ``event_id``; each model's joined events are ordered by the prediction's
``scored_at`` and measured over the first and the last ``window`` of them, which shows
whether online learning improved the model. A model whose predictions carry a ``score``
is measured by ROC AUC against boolean labels; one whose predictions carry a
``forecast``, by mean absolute error against numeric labels, next to the MAE of a naive
running-mean baseline.

Examples
--------
>>> roc_auc([0.1, 0.4, 0.4, 0.8], [False, True, False, True])
0.875
>>> running_means([2.0, 4.0, 6.0])
[0.0, 2.0, 3.0]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from stream.records import Prediction

WINDOW = 500
"""Joined events in the first and in the last window a report measures."""

VERSION_MIN_JOINED = 200
"""Joined events a model version needs to be measured on its own (its worst is reported)."""


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Exact area under the ROC curve (Mann-Whitney U), tied scores sharing their rank.

    Parameters
    ----------
    scores
        Predicted scores, higher meaning more likely positive.
    labels
        Whether each event is positive.

    Returns
    -------
    float or None
        The AUC, or ``None`` when the labels hold a single class (or none).
    """
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    rank_sum = 0.0
    first_rank = 1
    for _, tied in groupby(sorted(zip(scores, labels, strict=True)), key=lambda pair: pair[0]):
        flags = [label for _, label in tied]
        rank_sum += (first_rank + (len(flags) - 1) / 2) * sum(flags)
        first_rank += len(flags)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def mae(forecasts: Sequence[float], actuals: Sequence[float]) -> float | None:
    """Mean absolute error, ``None`` when there is nothing to measure.

    Parameters
    ----------
    forecasts, actuals
        Paired forecasts and true values.

    Returns
    -------
    float or None
        The mean of ``|forecast - actual|``.
    """
    if not actuals:
        return None
    return sum(abs(f - a) for f, a in zip(forecasts, actuals, strict=True)) / len(actuals)


def running_means(values: Iterable[float]) -> list[float]:
    """The naive forecast of each value: the mean of all values before it (0 for the first).

    Parameters
    ----------
    values
        Values in time order.

    Returns
    -------
    list of float
        One forecast per value.
    """
    forecasts: list[float] = []
    total = 0.0
    for count, value in enumerate(values):
        forecasts.append(total / count if count else 0.0)
        total += value
    return forecasts


@dataclass(frozen=True)
class ModelQuality:
    """How one model (``Prediction.model``) did on its joined events.

    Attributes
    ----------
    model
        The model's name.
    metric
        ``"roc_auc"`` (higher is better) or ``"mae"`` (lower is better).
    messages
        Prediction messages read.
    events
        Distinct event ids among them.
    joined
        Events having both a prediction and a label.
    early, late
        The metric over the first and the last ``window`` joined events by ``scored_at``
        (``None``: undefined, e.g. a single class for AUC).
    baseline_early, baseline_late
        MAE of the running-mean baseline over the same events (``None`` for AUC).
    overall
        The metric over every joined event.
    worst_version
        The version (``model_version``) served to at least :data:`VERSION_MIN_JOINED` joined
        events whose metric on them is the worst, that metric, and how many events it served
        (``None``: no version served that many).
    """

    model: str
    metric: str
    messages: int
    events: int
    joined: int
    early: float | None
    late: float | None
    baseline_early: float | None = None
    baseline_late: float | None = None
    overall: float | None = None
    worst_version: tuple[str, float, int] | None = None

    @property
    def duplicates(self) -> int:
        """Prediction messages repeating an already predicted event id."""
        return self.messages - self.events


@dataclass(frozen=True)
class QualityReport:
    """Quality of every model seen, plus what could not be used.

    Attributes
    ----------
    window
        Number of joined events in the early and late windows.
    models
        One entry per model, by name.
    labels
        Distinct labelled event ids.
    """

    window: int
    models: tuple[ModelQuality, ...]
    labels: int

    def model(self, name: str) -> ModelQuality:
        """The entry of one model.

        Parameters
        ----------
        name
            ``Prediction.model``, e.g. ``"fraud"``.

        Returns
        -------
        ModelQuality
            Its quality.

        Raises
        ------
        KeyError
            If no prediction of that model was seen.
        """
        for quality in self.models:
            if quality.model == name:
                return quality
        raise KeyError(name)

    def format(self) -> str:
        """A small table, one line per model, then the label counts.

        Returns
        -------
        str
            Human-readable text (``-`` marks an undefined value).
        """
        header = ["model", "metric", "messages", "events", "duplicates", "joined"]
        header += [f"first {self.window}", f"last {self.window}", "baseline first", "baseline last"]
        rows = [header] + [
            [q.model, q.metric, *map(str, (q.messages, q.events, q.duplicates, q.joined))]
            + [_number(v) for v in (q.early, q.late, q.baseline_early, q.baseline_late)]
            for q in self.models
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(width) if i < 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        for q in self.models:
            if q.worst_version is not None:
                version, value, n = q.worst_version
                lines.append(
                    f"{q.model}: worst version served to {VERSION_MIN_JOINED}+ joined events: {version}, "
                    f"{q.metric} {_number(value)} on {n} (all versions: {_number(q.overall)})"
                )
        lines.append(f"labelled events: {self.labels}")
        return "\n".join(lines)


class QualityTracker:
    """Joins predictions with labels, whichever arrives first.

    Of several predictions for one event id (redeliveries), the earliest scored one is
    kept. Event ids are assumed unique within boolean labels and within numeric labels.

    Examples
    --------
    >>> tracker = QualityTracker()
    >>> tracker.add_label("t-1", True)
    >>> tracker.report().labels
    1
    """

    def __init__(self) -> None:
        self._kept: dict[str, dict[str, Prediction]] = {}
        self._messages: Counter[str] = Counter()
        self._flags: dict[str, bool] = {}
        self._amounts: dict[str, float] = {}

    def add_prediction(self, prediction: Prediction) -> None:
        """Record a prediction message.

        Parameters
        ----------
        prediction
            A record read from a ``predictions.*`` topic.
        """
        self._messages[prediction.model] += 1
        kept = self._kept.setdefault(prediction.model, {})
        earlier = kept.get(prediction.event_id)
        if earlier is None or prediction.scored_at < earlier.scored_at:
            kept[prediction.event_id] = prediction

    def add_label(self, event_id: str, value: bool | float) -> None:
        """Record the true outcome of an event (the last one given wins).

        Parameters
        ----------
        event_id
            The labelled event.
        value
            ``bool`` for a scored (classification) event, a number for a forecast one.
        """
        if isinstance(value, bool):
            self._flags[event_id] = value
        else:
            self._amounts[event_id] = float(value)

    def report(self, early: int = WINDOW) -> QualityReport:
        """Measure every model seen so far.

        Parameters
        ----------
        early
            Number of joined events in each of the early and late windows.

        Returns
        -------
        QualityReport
            The measures.
        """
        return QualityReport(
            window=early,
            models=tuple(self._quality(model, early) for model in sorted(self._kept)),
            labels=len(self._flags) + len(self._amounts),
        )

    def _quality(self, model: str, window: int) -> ModelQuality:
        kept = self._kept[model]
        ordered = sorted(kept.values(), key=lambda p: (p.scored_at, p.event_id))
        if any(p.score is not None for p in ordered):
            scored = [
                (p.score, self._flags[p.event_id])
                for p in ordered
                if p.score is not None and p.event_id in self._flags
            ]
            scores, flags = [s for s, _ in scored], [f for _, f in scored]
            by_version = _by_version(
                ordered, lambda p: (p.score, self._flags[p.event_id]) if p.event_id in self._flags else None
            )
            return ModelQuality(
                model=model,
                metric="roc_auc",
                messages=self._messages[model],
                events=len(kept),
                joined=len(scored),
                early=roc_auc(scores[:window], flags[:window]),
                late=roc_auc(scores[-window:], flags[-window:]),
                overall=roc_auc(scores, flags),
                worst_version=_worst(by_version, roc_auc, min),
            )
        forecast = [
            (p.forecast, self._amounts[p.event_id])
            for p in ordered
            if p.forecast is not None and p.event_id in self._amounts
        ]
        forecasts, actuals = [f for f, _ in forecast], [a for _, a in forecast]
        naive = running_means(actuals)
        by_version = _by_version(
            ordered,
            lambda p: (p.forecast, self._amounts[p.event_id]) if p.event_id in self._amounts else None,
        )
        return ModelQuality(
            model=model,
            metric="mae",
            messages=self._messages[model],
            events=len(kept),
            joined=len(forecast),
            early=mae(forecasts[:window], actuals[:window]),
            late=mae(forecasts[-window:], actuals[-window:]),
            baseline_early=mae(naive[:window], actuals[:window]),
            baseline_late=mae(naive[-window:], actuals[-window:]),
            overall=mae(forecasts, actuals),
            worst_version=_worst(by_version, mae, max),
        )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _by_version(
    ordered: Sequence[Prediction], joined: Callable[[Prediction], tuple[Any, Any] | None]
) -> dict[str, list[tuple[Any, Any]]]:
    """Each version's joined ``(prediction, label)`` pairs, for versions with enough of them."""
    pairs: dict[str, list[tuple[Any, Any]]] = {}
    for prediction in ordered:
        pair = joined(prediction)
        if pair is not None and pair[0] is not None:
            pairs.setdefault(prediction.model_version, []).append(pair)
    return {v: p for v, p in pairs.items() if len(p) >= VERSION_MIN_JOINED}


def _worst(
    by_version: dict[str, list[tuple[Any, Any]]],
    measure: Callable[[Sequence[Any], Sequence[Any]], float | None],
    pick: Callable[..., tuple[str, float, int]],
) -> tuple[str, float, int] | None:
    """The version ``pick`` (``min`` for AUC, ``max`` for MAE) chooses by its metric, if any."""
    measured = [
        (version, value, len(pairs))
        for version, pairs in by_version.items()
        if (value := measure([p for p, _ in pairs], [y for _, y in pairs])) is not None
    ]
    return pick(measured, key=lambda item: item[1]) if measured else None
