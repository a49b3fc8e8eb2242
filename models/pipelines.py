"""Candidate River pipelines for each use case.

Each candidate is a factory returning a fresh, untrained estimator. :data:`CANDIDATES` maps a use
case to its candidates by name, :data:`DEFAULT` names the candidate the service runs and
:data:`TASKS` says whether a use case is a classification or a regression.

Every candidate accepts any flat dict of ``str -> float | str``: :func:`encoder` scales the
numbers and one-hot encodes the strings, so the feature names are the caller's business.

Examples
--------
>>> model = CANDIDATES["fraud"][DEFAULT["fraud"]]()
>>> x = {"amount_z": 3.0, "channel": "online"}
>>> model.learn_one(x, True)
>>> model.predict_proba_one(x)[True] > 0.5
True

"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import pandas as pd
from river import base, compose, forest, linear_model, optim, preprocessing, tree

Task = Literal["classification", "regression"]

__all__ = [
    "CANDIDATES",
    "DEFAULT",
    "TASKS",
    "SelectKind",
    "Task",
    "encoder",
    "hoeffding_tree_classifier",
    "hoeffding_tree_regressor",
    "linear_regression",
    "logistic_regression",
    "logistic_regression_adam",
    "random_forest_classifier",
    "target_scaled_linear_regression",
]


class SelectKind(base.MiniBatchTransformer):
    """Keeps only the categorical features, or only the numeric ones.

    A feature is categorical when its value is a ``str``; in a mini-batch, when its column has a
    string dtype. Unlike `compose.SelectType`, this transformer supports mini-batches, so a
    pipeline built on it can use `predict_many`.

    Parameters
    ----------
    categorical
        Keep the categorical features if true, the numeric ones otherwise.

    Examples
    --------
    >>> x = {"amount": 12.5, "channel": "online"}
    >>> SelectKind(categorical=True).transform_one(x)
    {'channel': 'online'}
    >>> SelectKind(categorical=False).transform_one(x)
    {'amount': 12.5}

    >>> SelectKind(categorical=True).transform_many(pd.DataFrame([x])).columns.tolist()
    ['channel']

    """

    def __init__(self, categorical: bool) -> None:
        self.categorical = categorical

    def transform_one(self, x: dict[base.typing.FeatureName, Any]) -> dict[base.typing.FeatureName, Any]:
        return {i: xi for i, xi in x.items() if isinstance(xi, str) is self.categorical}

    def transform_many(self, X: pd.DataFrame) -> pd.DataFrame:
        kept = [c for c in X.columns if pd.api.types.is_string_dtype(X[c]) == self.categorical]
        return X[kept]


def encoder() -> compose.TransformerUnion:
    """Standard-scales the numeric features and one-hot encodes the categorical ones.

    Both scaler and encoder learn only in `learn_one`: predicting does not update them.

    Examples
    --------
    >>> enc = encoder()
    >>> for x in ({"price": 1.0, "dow": "sat"}, {"price": 3.0, "dow": "sun"}):
    ...     enc.learn_one(x)
    >>> enc.transform_one({"price": 3.0, "dow": "sat"})
    {'dow_sat': 1, 'dow_sun': 0, 'price': 1.0}

    """
    return compose.TransformerUnion(
        SelectKind(categorical=False) | preprocessing.StandardScaler(),
        SelectKind(categorical=True) | preprocessing.OneHotEncoder(),
    )


def logistic_regression() -> compose.Pipeline:
    """Logistic regression on encoded features, plain SGD."""
    return encoder() | linear_model.LogisticRegression(optimizer=optim.SGD(0.01))


def logistic_regression_adam() -> compose.Pipeline:
    """Logistic regression on encoded features, Adam."""
    return encoder() | linear_model.LogisticRegression(optimizer=optim.Adam(0.01))


def hoeffding_tree_classifier() -> compose.Pipeline:
    """Hoeffding adaptive tree on encoded features: replaces subtrees on drift."""
    return encoder() | tree.HoeffdingAdaptiveTreeClassifier(grace_period=100, seed=42)


def random_forest_classifier() -> compose.Pipeline:
    """Adaptive random forest of five trees on encoded features: about 10x slower than the rest."""
    return encoder() | forest.ARFClassifier(n_models=5, seed=42)


def _sgd_linear_regression(lr: float) -> linear_model.LinearRegression:
    # The squared loss's gradient grows with the error: clipping it keeps one outlier (or
    # a feature whose scale is still being learned) from throwing the weights away.
    return linear_model.LinearRegression(optimizer=optim.SGD(lr), intercept_lr=lr, clip_gradient=1.0)


def linear_regression() -> compose.Pipeline:
    """Linear regression on encoded features, plain SGD with clipped gradients."""
    return encoder() | _sgd_linear_regression(0.01)


def target_scaled_linear_regression() -> compose.Pipeline:
    """:func:`linear_regression` learning a standard-scaled target, so SGD sees unit scales."""
    return encoder() | preprocessing.TargetStandardScaler(regressor=_sgd_linear_regression(0.01))


def log_linear_regression() -> compose.Pipeline:
    """Linear regression of ``log1p(units)``: demand effects multiply, their logs add up."""
    regressor = compose.TargetTransformRegressor(
        regressor=_sgd_linear_regression(0.003), func=math.log1p, inverse_func=_expm1
    )
    return encoder() | regressor


def _expm1(y: float) -> float:
    # Capped: a forecast of e^50 units is a broken model, not a number to overflow on.
    return math.expm1(min(y, 50.0))


def hoeffding_tree_regressor() -> compose.Pipeline:
    """Hoeffding adaptive tree regressor on encoded features, linear models in the leaves."""
    return encoder() | tree.HoeffdingAdaptiveTreeRegressor(grace_period=100, seed=42)


CANDIDATES: dict[str, dict[str, Callable[[], base.Estimator]]] = {
    "fraud": {
        "logistic_regression": logistic_regression,
        "logistic_regression_adam": logistic_regression_adam,
        "hoeffding_tree": hoeffding_tree_classifier,
        "random_forest": random_forest_classifier,
    },
    "demand": {
        "linear_regression": linear_regression,
        "target_scaled_linear_regression": target_scaled_linear_regression,
        "log_linear_regression": log_linear_regression,
        "hoeffding_tree": hoeffding_tree_regressor,
    },
}
"""Use case -> candidate name -> factory of a fresh, untrained estimator."""

DEFAULT: dict[str, str] = {"fraud": "logistic_regression_adam", "demand": "log_linear_regression"}
"""Use case -> name of the candidate the service runs."""

TASKS: dict[str, Task] = {"fraud": "classification", "demand": "regression"}
"""Use case -> learning task."""
