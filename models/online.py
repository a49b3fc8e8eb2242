"""An online model: one River estimator serving one use case.

:class:`OnlineModel` scores batches of feature dicts without ever changing the estimator, learns
labels one at a time as they arrive, and keeps a prequential metric fed with the predictions made
*before* each label was learned.

Scoring is read-only because River pipelines only update their unsupervised steps (scaler,
one-hot encoder) in `learn_one`, unless `compose.learn_during_predict` is active: never enter that
context manager in the service, it flips a process-wide switch. One harmless exception: a numeric
feature the scaler has never learned gets a zero entry in its running statistics, which changes
no prediction.

"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, cast

import pandas as pd
from river import base, compose, metrics

from models.pipelines import Task

__all__ = ["BATCH_MIN_ROWS", "Features", "OnlineModel", "new_metric"]

Features = dict[str, float | str]
"""A flat feature dict: numbers are scaled, strings one-hot encoded."""

_RiverFeatures = dict[Hashable, Any]
"""How River types a feature dict: dict keys are invariant, so :data:`Features` must be cast."""

BATCH_MIN_ROWS = 512
"""Smallest batch scored with River's `*_many` methods: below it, their pandas overhead (2-3 ms a
call) costs more than scoring one row at a time (~6 µs a row); they break even at 450-550 rows."""


_METRICS: dict[Task, type[metrics.base.Metric]] = {
    "classification": metrics.ROCAUC,
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

    """

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

    def predict_many(self, xs: Sequence[Features]) -> list[float]:
        """Predicts each feature dict of `xs`, leaving the estimator untouched.

        Batches of at least :data:`BATCH_MIN_ROWS` rows go through River's `*_many` methods when
        every step of the estimator has them and the rows share the same features with the same
        kinds; their predictions equal those made one row at a time, to float rounding (~1e-15).

        """
        estimator = self.estimator
        rows = cast(Sequence[_RiverFeatures], xs)
        frame = _frame(xs) if self._batchable and len(xs) >= BATCH_MIN_ROWS else None
        if isinstance(estimator, base.Classifier):
            if frame is not None and isinstance(estimator, base.MiniBatchClassifier):
                return [float(p) for p in estimator.predict_proba_many(frame)[True]]
            return [float(estimator.predict_proba_one(x).get(True, 0.0)) for x in rows]
        if frame is not None and isinstance(estimator, base.MiniBatchRegressor):
            ys = estimator.predict_many(frame)
        else:
            ys = [estimator.predict_one(x) for x in rows]
        return [max(0.0, float(y)) for y in ys]

    def learn_one(self, x: Features, y: float) -> None:
        """Learns one label: ``bool(y)`` for a classification, `y` for a regression."""
        estimator, row = self.estimator, cast(_RiverFeatures, x)
        if isinstance(estimator, base.Classifier):
            estimator.learn_one(row, bool(y))
        else:
            estimator.learn_one(row, float(y))
        self.labels_learned += 1

    def update_metric(self, y_true: float, y_pred: float) -> None:
        """Scores `y_pred`, the prediction made before `y_true` was learned."""
        self.metric.update(y_true, y_pred)


def _batchable(estimator: base.Estimator) -> bool:
    """Whether each step of `estimator` has mini-batch methods."""
    if isinstance(estimator, compose.Pipeline):
        return all(_batchable(step) for step in estimator.steps.values())
    if isinstance(estimator, compose.TransformerUnion):
        return all(_batchable(step) for step in estimator.transformers.values())
    return isinstance(
        estimator, base.MiniBatchTransformer | base.MiniBatchClassifier | base.MiniBatchRegressor
    )


def _frame(xs: Sequence[Features]) -> pd.DataFrame | None:
    """`xs` as a DataFrame, or ``None`` when `*_many` could disagree with `*_one` on it.

    They disagree when a feature is missing from some rows (pandas fills in NaN where
    `transform_one` just sees no feature) or mixes strings and numbers (`SelectKind` routes a
    column by its dtype but a value by its type).

    """
    frame = pd.DataFrame(list(xs))
    if frame.isna().to_numpy().any():
        return None
    api = pd.api.types
    if all(api.is_numeric_dtype(frame[c]) or api.is_string_dtype(frame[c]) for c in frame.columns):
        return frame
    return None
