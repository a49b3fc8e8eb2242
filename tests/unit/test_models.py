"""Online models learn synthetic concepts, score without side effects, batch or not."""

from __future__ import annotations

import math
import numbers
import pickle
import random
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
from river import base, compose, metrics, preprocessing

from models import pipelines
from models.evaluation import compare, format_table, prequential
from models.online import BATCH_MIN_ROWS, Features, OnlineModel, new_metric
from models.pipelines import CANDIDATES
from stream.usecases import DEMAND, FRAUD

CATEGORIES = {"dairy": 20.0, "bakery": 10.0, "produce": 30.0}


def fraud_stream(n: int, seed: int = 0) -> Iterator[tuple[Features, bool]]:
    """Fraud iff a large amount at a new merchant, with 1% of the labels flipped."""
    rng = random.Random(seed)
    for _ in range(n):
        amount_z = rng.gauss(0.0, 1.0)
        merchant_new = float(rng.random() < 0.3)
        x: Features = {
            "amount_z": amount_z,
            "merchant_new": merchant_new,
            "hour_sin": math.sin(rng.uniform(0.0, 2 * math.pi)),
            "channel": rng.choice(["online", "pos", "atm"]),
        }
        yield x, (amount_z > 1.0 and merchant_new == 1.0) != (rng.random() < 0.01)


def demand_stream(n: int, seed: int = 0) -> Iterator[tuple[Features, float]]:
    """Units sold fall with the price, rise at the weekend, depend on the category."""
    rng = random.Random(seed)
    for _ in range(n):
        price = rng.uniform(1.0, 10.0)
        dow = rng.choice(["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
        category = rng.choice(list(CATEGORIES))
        weekend = 1.5 if dow in ("sat", "sun") else 1.0
        units = CATEGORIES[category] * weekend * math.exp(-0.15 * price)
        x: Features = {
            "price": price,
            "log_price": math.log(price),
            "margin_missing": 0.0,
            "dow": dow,
            "category": category,
        }
        yield x, max(0.0, rng.gauss(units, 1.0))


STREAMS: dict[str, Callable[[int, int], Iterator[tuple[Features, Any]]]] = {
    "fraud": fraud_stream,
    "demand": demand_stream,
}

USE_CASES = {uc.name: uc for uc in (FRAUD, DEMAND)}
ALL_CANDIDATES = [(uc.name, name) for uc in USE_CASES.values() for name in CANDIDATES[uc.task]]


def trained(case: str, name: str, n: int = 300) -> OnlineModel:
    model = OnlineModel(name, USE_CASES[case].task, CANDIDATES[USE_CASES[case].task][name]())
    for x, y in STREAMS[case](n, 1):
        model.learn_one(x, y)
    return model


def probe(case: str, n: int) -> list[Features]:
    return [x for x, _ in STREAMS[case](n, 2)]


def test_fraud_model_learns_the_concept() -> None:
    result = prequential(
        CANDIDATES["classification"][FRAUD.champion], fraud_stream(4000), "classification", early=300
    )
    assert result.metric == "ROCAUC"
    assert result.baseline is None
    assert result.scores.late > 0.8
    assert result.scores.late > result.scores.early + 0.05


def test_demand_model_beats_the_running_mean() -> None:
    result = prequential(
        CANDIDATES["regression"][DEMAND.champion], demand_stream(3000), "regression", early=300
    )
    assert result.metric == "MAE"
    assert result.baseline is not None
    assert result.scores.late < 0.6 * result.baseline.late
    assert result.scores.late < result.scores.early


@pytest.mark.parametrize(("case", "name"), ALL_CANDIDATES)
def test_scoring_never_mutates_the_model(case: str, name: str) -> None:
    model = trained(case, name)
    xs = probe(case, BATCH_MIN_ROWS + 10)
    state = pickle.dumps(model.estimator)
    batch = model.predict_many(xs)
    singles = [model.predict_many([x])[0] for x in xs[:50]]
    for _ in range(3):
        assert model.predict_many(xs) == batch
        assert [model.predict_many([x])[0] for x in xs[:50]] == singles
    assert pickle.dumps(model.estimator) == state
    assert model.labels_learned == 300


def test_labels_learned_counts_every_label() -> None:
    model = OnlineModel("fraud", "classification", pipelines.logistic_regression())
    assert model.labels_learned == 0
    for i, (x, y) in enumerate(fraud_stream(3), start=1):
        model.learn_one(x, y)
        assert model.labels_learned == i


@pytest.mark.parametrize(
    ("case", "name"), [("fraud", "logistic_regression_adam"), ("demand", "linear_regression")]
)
def test_batch_and_one_at_a_time_agree(case: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = trained(case, name)
    xs = probe(case, BATCH_MIN_ROWS)
    # What the encoder never learned: a category, and a numeric feature whose variance is 0 (the
    # scaler maps it to 0 one row at a time but leaves it unscaled in a batch).
    xs[0] = {**xs[0], "channel" if case == "fraud" else "dow": "unseen"}
    xs = [{**x, "new": float(i)} for i, x in enumerate(xs)]
    method = "predict_proba_many" if case == "fraud" else "predict_many"
    batch_method = getattr(model.estimator, method)
    calls: list[int] = []

    def spy(X: Any) -> Any:
        calls.append(len(X))
        return batch_method(X)

    monkeypatch.setattr(model.estimator, method, spy)

    batch = model.predict_many(xs)
    assert calls == [len(xs)]
    one_at_a_time = [p for x in xs for p in model.predict_many([x])]
    assert batch == pytest.approx(one_at_a_time, rel=1e-9, abs=1e-12)

    # A feature missing from a row: the batch falls back to one row at a time.
    ragged = [xs[0], {k: v for k, v in xs[0].items() if k != "new"}, *xs[2:]]
    assert model.predict_many(ragged)[1] == model.predict_many([ragged[1]])[0]
    assert calls == [len(xs)]


@pytest.mark.parametrize("name", list(CANDIDATES["regression"]))
def test_demand_forecasts_are_never_negative(name: str) -> None:
    model = trained("demand", name, n=500)
    xs = [{**x, "price": 60.0, "log_price": math.log(60.0)} for x in probe("demand", 20)]
    assert all(y >= 0.0 for y in model.predict_many(xs))
    assert all(y >= 0.0 for x in xs for y in model.predict_many([x]))


def test_the_linear_demand_forecast_is_clipped() -> None:
    model = trained("demand", "linear_regression", n=500)
    x: Features = {"price": 60.0, "log_price": math.log(60.0), "dow": "mon", "category": "bakery"}
    assert isinstance(model.estimator, base.Regressor)
    assert model.estimator.predict_one(x) < 0.0
    assert model.predict_many([x]) == [0.0]


@pytest.mark.parametrize("case", ["fraud", "demand"])
def test_a_categorical_only_feature_is_learned(case: str) -> None:
    declared = USE_CASES[case]
    model = OnlineModel(case, declared.task, CANDIDATES[declared.task][declared.champion]())
    rng = random.Random(0)
    targets: dict[str, float] = {"atm": 1.0, "pos": 0.0} if case == "fraud" else CATEGORIES
    for _ in range(5000):
        value = rng.choice(list(targets))
        model.learn_one({"category": value}, targets[value])
    predictions = model.predict_many([{"category": value} for value in targets])
    tolerance = 0.2 if case == "fraud" else 1.0
    assert predictions == pytest.approx(list(targets.values()), abs=tolerance)


@pytest.mark.parametrize(("case", "name"), ALL_CANDIDATES)
def test_every_candidate_predicts_before_and_after_learning(case: str, name: str) -> None:
    model = OnlineModel(name, USE_CASES[case].task, CANDIDATES[USE_CASES[case].task][name]())
    xs = probe(case, 5)
    for predictions in (model.predict_many(xs), trained(case, name, n=20).predict_many(xs)):
        assert len(predictions) == len(xs)
        assert all(isinstance(p, float) and p >= 0.0 for p in predictions)
        if USE_CASES[case].task == "classification":
            assert all(p <= 1.0 for p in predictions)


def test_a_model_must_match_its_task() -> None:
    with pytest.raises(TypeError):
        OnlineModel("demand", "regression", pipelines.logistic_regression())
    with pytest.raises(TypeError):
        OnlineModel("fraud", "classification", pipelines.linear_regression())


def test_the_metric_scores_the_cached_predictions() -> None:
    model = OnlineModel("demand", "regression", pipelines.linear_regression())
    model.update_metric(5.0, 2.0)
    model.update_metric(1.0, 2.0)
    assert model.metric.get() == 2.0
    assert model.labels_learned == 0


def test_compare_runs_every_candidate_on_the_same_stream() -> None:
    results = compare("regression", lambda: demand_stream(400), early=100)
    assert [result.name for result in results] == list(CANDIDATES["regression"])
    assert all(result.examples == 400 and result.throughput > 0 for result in results)
    baselines = {result.baseline for result in results}
    assert len(baselines) == 1
    table = format_table(results).splitlines()
    assert len(table) == 1 + len(results)
    assert all(name in "\n".join(table) for name in CANDIDATES["regression"])


def rivers_encoder() -> compose.TransformerUnion:
    """What :class:`~models.pipelines.Encoder` replaces: River's scaler and one-hot encoder side by side."""
    return compose.TransformerUnion(
        compose.SelectType(numbers.Number) | preprocessing.StandardScaler(),
        compose.SelectType(str) | preprocessing.OneHotEncoder(),
    )


@pytest.mark.parametrize("case", ["fraud", "demand"])
def test_the_encoder_gives_rivers_numbers(case: str) -> None:
    encoder, river = pipelines.Encoder(), rivers_encoder()
    unseen = {"margin_missing": 0.0, "new": 2.5, "channel" if case == "fraud" else "dow": "unseen"}
    for i, (x, _) in enumerate(STREAMS[case](500, 1)):
        for probe_x in (x, {**x, **unseen}):
            assert encoder.transform_one(probe_x) == river.transform_one(probe_x), i
        encoder.learn_one(x)
        river.learn_one(x)
        learned = encoder.transform_one(x)  # the transform learn_one made, not the loop's
        assert learned == river.transform_one(x), i
        assert list(learned.items()) == list(encoder.transform_one(dict(x)).items()), i
    frame = pd.DataFrame(probe(case, 20))
    batch = encoder.transform_many(frame)
    rows = [encoder.transform_one(x) for x in probe(case, 20)]
    assert sorted(batch.columns) == sorted(rows[0])
    assert batch.to_dict("records") == rows


def test_the_encoder_pickles_and_clones() -> None:
    model = trained("demand", "linear_regression")
    xs = probe("demand", 20)
    restored = pickle.loads(pickle.dumps(model))
    assert restored.predict_many(xs) == model.predict_many(xs)
    assert isinstance(model.estimator, compose.Pipeline)
    # the dict last learned is not the encoder's state: no copy of it is pickled
    assert "_learned" in vars(model.estimator["Encoder"])
    assert "_learned" not in vars(restored.estimator["Encoder"])
    fresh = model.estimator.clone()
    assert fresh["Encoder"].stats == {} and fresh["Encoder"].zeros == {}


def test_the_roc_auc_is_rivers() -> None:
    rng = random.Random(0)
    fast, river = new_metric("classification"), metrics.ROCAUC()
    assert type(fast).__name__ == "ROCAUC"
    for i in range(3000):
        y = rng.random() < 0.1
        p = rng.choice([0.0, 1.0, 0.5, 1 / 9]) if i % 7 == 0 else rng.random() ** (0.3 if y else 3.0)
        fast.update(float(y), p)
        river.update(float(y), p)
        if i % 100 == 0:
            assert fast.get() == river.get()
    assert fast.get() == river.get() > 0.5
