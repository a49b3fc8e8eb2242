"""Prequential (test-then-train) evaluation of the candidate models.

Each example of a stream is first predicted, then learned, through :class:`~models.online.OnlineModel`
exactly as the service scores events and later learns their labels. A model is scored over the
whole stream, over its first examples (how fast it starts) and over its last quarter (where it
ends up). A regression is also compared with a running-mean baseline, which predicts the mean
of the targets seen so far.

Examples
--------
>>> import random
>>> def stream():
...     rng = random.Random(0)
...     for _ in range(1000):
...         price = rng.uniform(1.0, 10.0)
...         yield {"price": price, "dow": rng.choice(["sat", "sun"])}, 30.0 - 3.0 * price
>>> results = compare("regression", stream, early=100)
>>> [result.name for result in results]
['linear_regression', 'target_scaled_linear_regression', 'log_linear_regression', 'hoeffding_tree']
>>> linear = results[0]
>>> linear.examples, linear.metric, linear.scores.late < linear.baseline.late
(1000, 'MAE', True)

"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from river import base, stats

from models.online import Features, OnlineModel, new_metric
from models.pipelines import CANDIDATES, Task

__all__ = ["EvaluationResult", "Windows", "compare", "format_table", "prequential"]


class Windows(NamedTuple):
    """A metric over the whole stream, its first examples and its last quarter."""

    overall: float
    early: float
    late: float


@dataclass(frozen=True)
class EvaluationResult:
    """The prequential evaluation of one model on one stream.

    Attributes
    ----------
    name
        The model's name.
    metric
        The metric's name, ``"ROCAUC"`` or ``"MAE"`` (see :func:`~models.online.new_metric`).
    examples
        The stream's length.
    scores
        The model's metric.
    baseline
        The running-mean baseline's metric, for a regression; ``None`` for a classification.
    throughput
        Examples predicted then learned per second.

    """

    name: str
    metric: str
    examples: int
    scores: Windows
    baseline: Windows | None
    throughput: float


def prequential(
    estimator_factory: Callable[[], base.Estimator],
    stream: Iterable[tuple[Features, float]],
    task: Task,
    *,
    name: str = "model",
    early: int = 500,
) -> EvaluationResult:
    """Predicts then learns each example of `stream` with a fresh estimator.

    Parameters
    ----------
    estimator_factory
        Builds the estimator to evaluate.
    stream
        ``(features, label)`` pairs in time order.
    task
        ``"classification"`` or ``"regression"``.
    name
        The name of the result.
    early
        How many examples make the early window.

    """
    model = OnlineModel(name, task, estimator_factory())
    ys: list[float] = []
    predictions: list[float] = []
    means: list[float] = []
    mean = stats.Mean()
    elapsed = 0.0
    for x, y in stream:
        start = time.perf_counter()
        (prediction,) = model.predict_many([x])
        model.learn_one(x, y)
        elapsed += time.perf_counter() - start
        ys.append(y)
        predictions.append(prediction)
        means.append(mean.get())
        mean.update(y)
    return EvaluationResult(
        name=name,
        metric=type(model.metric).__name__,
        examples=len(ys),
        scores=_windows(task, ys, predictions, early),
        baseline=_windows(task, ys, means, early) if task == "regression" else None,
        throughput=len(ys) / elapsed if elapsed else 0.0,
    )


def compare(
    task: Task,
    stream_factory: Callable[[], Iterable[tuple[Features, float]]],
    *,
    early: int = 500,
) -> list[EvaluationResult]:
    """Evaluates every candidate of `task` with :func:`prequential`, each on a fresh stream.

    Parameters
    ----------
    task
        A key of :data:`~models.pipelines.CANDIDATES`.
    stream_factory
        Returns the same stream of ``(features, label)`` pairs on every call.
    early
        How many examples make the early window.

    """
    return [
        prequential(factory, stream_factory(), task, name=name, early=early)
        for name, factory in CANDIDATES[task].items()
    ]


_HEADER = (
    "model",
    "metric",
    "overall",
    "early",
    "late",
    "base overall",
    "base early",
    "base late",
    "µs/example",
)


def format_table(results: Sequence[EvaluationResult]) -> str:
    """A plain-text table of `results`, one row each; "base" columns are the baseline's.

    Examples
    --------
    >>> result = EvaluationResult("linear", "MAE", 4, Windows(1.5, 2, 1), Windows(3, 3, 3), 1e5)
    >>> print(format_table([result]))
    model   metric  overall   early    late  base overall  base early  base late  µs/example
    linear     MAE   1.5000  2.0000  1.0000        3.0000      3.0000     3.0000        10.0

    """
    rows: list[list[str]] = [list(_HEADER)]
    for result in results:
        scores = [f"{value:.4f}" for value in result.scores]
        baseline = [f"{value:.4f}" for value in result.baseline] if result.baseline else ["-"] * 3
        cost = f"{1e6 / result.throughput:.1f}" if result.throughput else "-"
        rows.append([result.name, result.metric, *scores, *baseline, cost])
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def _windows(task: Task, ys: Sequence[float], predictions: Sequence[float], early: int) -> Windows:
    late = len(ys) - len(ys) // 4
    return Windows(
        overall=_score(task, ys, predictions),
        early=_score(task, ys[:early], predictions[:early]),
        late=_score(task, ys[late:], predictions[late:]),
    )


def _score(task: Task, ys: Sequence[float], predictions: Sequence[float]) -> float:
    metric = new_metric(task)
    for y, prediction in zip(ys, predictions, strict=True):
        metric.update(y, prediction)
    return float(metric.get())  # ROCAUC returns a numpy float
