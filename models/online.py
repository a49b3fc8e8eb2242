"""An online model: one River estimator serving one use case.

:class:`OnlineModel` scores batches of feature dicts without ever changing the estimator, learns
labels one at a time as they arrive, and keeps a prequential metric fed with the predictions made
*before* each label was learned.

Scoring is read-only because River pipelines only update their unsupervised steps (the
encoder) in `learn_one`, unless `compose.learn_during_predict` is active: never enter that
context manager in the service, it flips a process-wide switch.

"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
from river import base, compose, metrics

from models.pipelines import Task

__all__ = ["BATCH_MIN_ROWS", "ROCAUC", "Features", "OnlineModel", "new_metric"]

Features = dict[str, float | str]
"""A flat feature dict: numbers are scaled, strings one-hot encoded."""

BATCH_MIN_ROWS = 768
"""Smallest batch scored with River's `*_many` methods: below it, their pandas overhead (~1.5 ms a
call) costs more than scoring one row at a time (~3 µs a row); they break even at 700-800 rows."""


class ROCAUC(metrics.ROCAUC):
    """River's ROC AUC, to the same number, updated in constant time.

    River's metric updates one confusion matrix per threshold for each prediction. This one
    counts, per class, the predictions by how many thresholds they exceed, and derives each
    threshold's true and false positive rates from those counts when asked.

    Parameters
    ----------
    n_thresholds
        How many thresholds discretize the ROC curve, evenly spaced over ``[0, 1]``.
    pos_val
        The positive label.

    Examples
    --------
    >>> fast, river = ROCAUC(), metrics.ROCAUC()
    >>> for y, p in [(False, 0.1), (False, 0.4), (True, 0.35), (True, 0.8)]:
    ...     fast.update(y, p)
    ...     river.update(y, p)
    >>> print(fast, fast.get() == river.get())
    ROCAUC: 87.50% True

    """

    def __init__(self, n_thresholds: int = 10, pos_val: bool = True) -> None:
        self.n_thresholds = n_thresholds
        self.pos_val = pos_val
        self.thresholds = [i / (n_thresholds - 1) for i in range(n_thresholds)]
        self.thresholds[0] -= 1e-7
        self.thresholds[-1] += 1e-7
        # Weight of the positive (negative) predictions by how many thresholds they exceed.
        self._positives = [0.0] * (n_thresholds + 1)
        self._negatives = [0.0] * (n_thresholds + 1)

    def update(self, y_true: Any, y_pred: Any, w: float = 1.0) -> None:
        self._add(y_true, y_pred, w)

    def revert(self, y_true: Any, y_pred: Any, w: float = 1.0) -> None:
        self._add(y_true, y_pred, -w)

    def _add(self, y_true: Any, y_pred: Any, w: float) -> None:
        p = y_pred.get(True, 0.0) if isinstance(y_pred, dict) else y_pred
        counts = self._positives if y_true == self.pos_val else self._negatives
        counts[bisect.bisect_left(self.thresholds, p)] += w

    def get(self) -> float:
        positives, negatives = sum(self._positives), sum(self._negatives)
        tprs = [_ratio(sum(self._positives[i + 1 :]), positives) for i in range(self.n_thresholds)]
        fprs = [_ratio(sum(self._negatives[i + 1 :]), negatives) for i in range(self.n_thresholds)]
        return -float(np.trapezoid(x=fprs, y=tprs))  # River's scipy.integrate.trapezoid


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


_METRICS: dict[Task, type[metrics.base.Metric]] = {
    "classification": ROCAUC,
    "regression": metrics.MAE,
}


def new_metric(task: Task) -> metrics.base.Metric:
    """The prequential metric of a task: ROC AUC for a classification, MAE for a regression.

    Examples
    --------
    >>> new_metric("regression")
    MAE: 0.

    """
    return _METRICS[task]()


class OnlineModel:
    """One River estimator serving one use case.

    Parameters
    ----------
    name
        The name of the model (its use case).
    task
        ``"classification"``: :meth:`predict_many` returns the probability of the label ``True``.
        ``"regression"``: it returns the forecast clipped to be non-negative.
    estimator
        A fresh River classifier or regressor (or a pipeline ending with one), matching `task`.

    Attributes
    ----------
    labels_learned
        How many labels the estimator has learned.
    metric
        Prequential metric (see :func:`new_metric`), fed by :meth:`update_metric`.

    Examples
    --------
    >>> from models.pipelines import linear_regression
    >>> model = OnlineModel("demand", "regression", linear_regression())
    >>> x = {"price": 2.0, "dow": "sat"}
    >>> model.predict_many([x]), model.labels_learned
    ([0.0], 0)

    The service caches the prediction until the label arrives, then scores it and learns:

    >>> model.update_metric(5.0, 0.0)
    >>> model.learn_one(x, 5.0)
    >>> model.labels_learned, model.metric
    (1, MAE: 5.)
    >>> model.predict_many([x])[0] > 0.0
    True

    A model remembers its last prediction until it learns: predicting the same dict again
    (the very object, as an offline replay does when the champion serves itself and then
    predicts the label's features before learning them) returns it without a second pass. A
    feature dict is never changed once predicted.

    """

    # The last dict predicted and its prediction, until the next label learned. A class
    # default, so that a model unpickled from before it existed has one; never pickled.
    _predicted: tuple[Features, float] | None = None

    def __init__(self, name: str, task: Task, estimator: base.Estimator) -> None:
        if (task == "classification" and isinstance(estimator, base.Classifier)) or (
            task == "regression" and isinstance(estimator, base.Regressor)
        ):
            self.estimator = estimator
        else:
            kind = "classifier" if task == "classification" else "regressor"
            raise TypeError(f"{name}: a {task} needs a River {kind}, not {estimator}")
        self.name = name
        self.task = task
        self.labels_learned = 0
        self.metric = new_metric(task)
        self._batchable = _batchable(estimator)

    def predict_one(self, x: Features) -> float:
        """Predicts the feature dict `x`, leaving the estimator untouched."""
        last = self._predicted
        if last is not None and last[0] is x:
            return last[1]
        # No typing.cast here: it is a call, and this runs several times per label.
        estimator: Any = self.estimator
        if self.task == "classification":
            y = float(estimator.predict_proba_one(x).get(True, 0.0))
        else:
            y = max(0.0, float(estimator.predict_one(x)))
        self._predicted = (x, y)
        return y

    def predict_many(self, xs: Sequence[Features]) -> list[float]:
        """Predicts each feature dict of `xs`, leaving the estimator untouched.

        Batches of at least :data:`BATCH_MIN_ROWS` rows go through River's `*_many` methods when
        every step of the estimator has them and the rows share the same features with the same
        kinds; their predictions equal those made one row at a time (:meth:`predict_one`), to
        float rounding (~1e-15).

        """
        estimator = self.estimator
        frame = _frame(xs) if self._batchable and len(xs) >= BATCH_MIN_ROWS else None
        if frame is None:
            return [self.predict_one(x) for x in xs]
        if isinstance(estimator, base.MiniBatchClassifier):
            return [float(p) for p in estimator.predict_proba_many(frame)[True]]
        ys = cast(base.MiniBatchRegressor, estimator).predict_many(frame)
        return [max(0.0, float(y)) for y in ys]

    def learn_one(self, x: Features, y: float) -> None:
        """Learns one label: ``bool(y)`` for a classification, `y` for a regression."""
        self._predicted = None
        estimator: Any = self.estimator  # a base.Classifier or base.Regressor, by the task
        if self.task == "classification":
            estimator.learn_one(x, bool(y))
        else:
            estimator.learn_one(x, float(y))
        self.labels_learned += 1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_predicted", None)  # a reference to a feature dict, not the model's state
        return state

    def update_metric(self, y_true: float, y_pred: float) -> None:
        """Scores `y_pred`, the prediction made before `y_true` was learned."""
        self.metric.update(y_true, y_pred)


def _batchable(estimator: base.Estimator) -> bool:
    """Whether each step of `estimator` has mini-batch methods."""
    if isinstance(estimator, compose.Pipeline):
        return all(_batchable(step) for step in estimator.steps.values())
    return isinstance(
        estimator, base.MiniBatchTransformer | base.MiniBatchClassifier | base.MiniBatchRegressor
    )


def _frame(xs: Sequence[Features]) -> pd.DataFrame | None:
    """`xs` as a DataFrame, or ``None`` when `*_many` could disagree with `*_one` on it.

    They disagree when a feature is missing from some rows (pandas fills in NaN where
    `transform_one` just sees no feature) or mixes strings and numbers (the encoder routes a
    column by its dtype but a value by its type).

    """
    frame = pd.DataFrame(list(xs))
    if frame.isna().to_numpy().any():
        return None
    api = pd.api.types
    if all(api.is_numeric_dtype(frame[c]) or api.is_string_dtype(frame[c]) for c in frame.columns):
        return frame
    return None
