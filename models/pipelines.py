"""Candidate River pipelines for each use case.

Each candidate is a factory returning a fresh, untrained estimator. :data:`CANDIDATES` maps a
learning task to its candidates by name; which one a use case serves is the use case's business
(``stream/usecases.py``).

Every candidate accepts any flat dict of ``str -> float | str``, so the feature names are the
caller's business: :class:`Encoder` scales the numbers and one-hot encodes the strings for every
candidate but :func:`hoeffding_tree_mc_classifier`, a tree that splits on them as they come.

Examples
--------
>>> model = CANDIDATES["classification"]["logistic_regression_adam"]()
>>> x = {"amount_z": 3.0, "channel": "online"}
>>> model.learn_one(x, True)
>>> model.predict_proba_one(x)[True] > 0.5
True

"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd
from river import base, compose, forest, linear_model, optim, preprocessing, tree

Task = Literal["classification", "regression"]

__all__ = [
    "CANDIDATES",
    "Encoder",
    "Task",
    "hoeffding_tree_classifier",
    "hoeffding_tree_mc_classifier",
    "hoeffding_tree_regressor",
    "linear_regression",
    "log_linear_regression",
    "logistic_regression",
    "logistic_regression_adam",
    "random_forest_classifier",
    "target_scaled_linear_regression",
]


class Encoder(base.MiniBatchTransformer):
    """Standard-scales the numeric features and one-hot encodes the categorical ones, in one pass.

    A feature is categorical when its value is a ``str``; in a mini-batch, when its column has a
    string dtype. The numbers are those of River's ``StandardScaler`` and ``OneHotEncoder`` side
    by side: a number becomes ``(x - mean) / std`` over the values learned for its feature (0
    while their variance is 0, or before any), a category becomes ``<feature>_<value>`` = 1,
    and every other category learned so far (of any feature) an explicit 0. It learns only in
    `learn_one`: transforming never changes it.

    A pipeline learns a dict, then transforms that same dict for the next step: `learn_one`
    computes the transform as it learns, and `transform_one` of the dict just learned (the very
    object, never changed once learned, as :class:`models.online.OnlineModel` assumes) returns
    it without a second pass over the features.

    Attributes
    ----------
    stats
        Numeric feature -> ``[count, mean, variance, standard deviation]`` of the values learned.
    zeros
        The one-hot column of every category learned, in the order first learned, each -> 0.

    Examples
    --------
    >>> enc = Encoder()
    >>> for x in ({"price": 1.0, "dow": "sat"}, {"price": 3.0, "dow": "sun"}):
    ...     enc.learn_one(x)
    >>> enc.transform_one({"price": 3.0, "dow": "sat"})
    {'dow_sat': 1, 'dow_sun': 0, 'price': 1.0}
    >>> enc.transform_many(pd.DataFrame([{"price": 3.0, "dow": "sat"}])).to_dict("records")
    [{'price': 1.0, 'dow_sat': 1, 'dow_sun': 0}]

    """

    # The dict last learned and its transform's own values (the zeros left out), until the
    # next learn_one. A class default, so that an encoder unpickled from before it existed
    # has one; never pickled.
    _learned: tuple[dict[base.typing.FeatureName, Any], dict[base.typing.FeatureName, Any]] | None = None

    def __init__(self) -> None:
        self.stats: dict[base.typing.FeatureName, list[float]] = {}
        self.zeros: dict[base.typing.FeatureName, int] = {}

    def learn_one(self, x: dict[base.typing.FeatureName, Any]) -> None:
        stats, zeros = self.stats, self.zeros
        values: dict[base.typing.FeatureName, Any] = {}  # x's transform, but for the zeros
        for i, xi in x.items():
            if isinstance(xi, str):
                name = f"{i}_{xi}"
                zeros.setdefault(name, 0)
                values[name] = 1
                continue
            s = stats.get(i)
            if s is None:
                s = stats[i] = [0.0, 0.0, 0.0, 0.0]
            # Welford, with River's StandardScaler's operations, so its very numbers.
            n, mean, var = s[0] + 1.0, s[1], s[2]
            new_mean = mean + (xi - mean) / n
            var += ((xi - mean) * (xi - new_mean) - var) / n
            std = var**0.5
            s[0], s[1], s[2], s[3] = n, new_mean, var, std
            values[i] = (xi - new_mean) / std if std else 0.0
        self._learned = (x, values)

    def transform_one(self, x: dict[base.typing.FeatureName, Any]) -> dict[base.typing.FeatureName, Any]:
        out: dict[base.typing.FeatureName, Any] = dict(self.zeros)
        learned = self._learned
        if learned is not None and learned[0] is x:
            out.update(learned[1])  # the same keys in the same order as the loop below
            return out
        stats = self.stats
        for i, xi in x.items():
            if isinstance(xi, str):
                out[f"{i}_{xi}"] = 1
                continue
            s = stats.get(i)
            out[i] = (xi - s[1]) / s[3] if s is not None and s[3] else 0.0
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_learned", None)  # a reference to a feature dict, not the encoder's state
        return state

    def transform_many(self, X: pd.DataFrame) -> pd.DataFrame:
        columns: dict[base.typing.FeatureName, Any] = {}
        categorical = []
        for c in X.columns:
            if pd.api.types.is_string_dtype(X[c]):
                categorical.append(c)
                continue
            s = self.stats.get(c)
            values = X[c].to_numpy(dtype=float)
            columns[c] = (values - s[1]) / s[3] if s is not None and s[3] else np.zeros(len(X))
        for c in categorical:
            for value in X[c].unique():
                columns.setdefault(f"{c}_{value}", (X[c] == value).to_numpy(dtype=np.uint8))
        for name in self.zeros:
            columns.setdefault(name, np.zeros(len(X), dtype=np.uint8))
        return pd.DataFrame(columns, index=X.index)


def logistic_regression() -> compose.Pipeline:
    """Logistic regression on encoded features, plain SGD."""
    return Encoder() | linear_model.LogisticRegression(optimizer=optim.SGD(0.01))


def logistic_regression_adam() -> compose.Pipeline:
    """Logistic regression on encoded features, Adam."""
    return Encoder() | linear_model.LogisticRegression(optimizer=optim.Adam(0.01))


def hoeffding_tree_classifier() -> compose.Pipeline:
    """Hoeffding adaptive tree on encoded features: replaces subtrees on drift."""
    return Encoder() | tree.HoeffdingAdaptiveTreeClassifier(grace_period=100, seed=42)


def hoeffding_tree_mc_classifier() -> tree.HoeffdingTreeClassifier:
    """Hoeffding tree with majority-class leaves, on the raw features: a fifth of the adaptive tree's cost.

    A tree needs neither scaled numbers nor one-hot categories: it splits on the values as they come.
    """
    return tree.HoeffdingTreeClassifier(grace_period=100, leaf_prediction="mc")


def random_forest_classifier() -> compose.Pipeline:
    """Adaptive random forest of five trees on encoded features: about 10x slower than the rest."""
    return Encoder() | forest.ARFClassifier(n_models=5, seed=42)


def _sgd_linear_regression(lr: float) -> linear_model.LinearRegression:
    # The squared loss's gradient grows with the error: clipping it keeps one outlier (or
    # a feature whose scale is still being learned) from throwing the weights away.
    return linear_model.LinearRegression(optimizer=optim.SGD(lr), intercept_lr=lr, clip_gradient=1.0)


def linear_regression() -> compose.Pipeline:
    """Linear regression on encoded features, plain SGD with clipped gradients."""
    return Encoder() | _sgd_linear_regression(0.01)


def target_scaled_linear_regression() -> compose.Pipeline:
    """:func:`linear_regression` learning a standard-scaled target, so SGD sees unit scales."""
    return Encoder() | preprocessing.TargetStandardScaler(regressor=_sgd_linear_regression(0.01))


def log_linear_regression() -> compose.Pipeline:
    """Linear regression of ``log1p(units)``: demand effects multiply, their logs add up."""
    regressor = compose.TargetTransformRegressor(
        regressor=_sgd_linear_regression(0.003), func=math.log1p, inverse_func=_expm1
    )
    return Encoder() | regressor


def _expm1(y: float) -> float:
    # Capped: a forecast of e^50 units is a broken model, not a number to overflow on.
    return math.expm1(min(y, 50.0))


def hoeffding_tree_regressor() -> compose.Pipeline:
    """Hoeffding adaptive tree regressor on encoded features, linear models in the leaves."""
    return Encoder() | tree.HoeffdingAdaptiveTreeRegressor(grace_period=100, seed=42)


CANDIDATES: dict[Task, dict[str, Callable[[], base.Estimator]]] = {
    "classification": {
        "logistic_regression": logistic_regression,
        "logistic_regression_adam": logistic_regression_adam,
        "hoeffding_tree": hoeffding_tree_classifier,
        "hoeffding_tree_mc": hoeffding_tree_mc_classifier,
        "random_forest": random_forest_classifier,
    },
    "regression": {
        "linear_regression": linear_regression,
        "target_scaled_linear_regression": target_scaled_linear_regression,
        "log_linear_regression": log_linear_regression,
        "hoeffding_tree": hoeffding_tree_regressor,
    },
}
"""Learning task -> candidate name -> factory of a fresh, untrained estimator."""
