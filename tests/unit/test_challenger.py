"""The paired sequential test is valid and powerful; a contest promotes, restarts and pickles."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
import pytest
from river import dummy, stats

from models.challenger import Contest, PairedTest, loss, mixture_log_ratio
from models.online import Features, OnlineModel
from models.pipelines import (
    CANDIDATES,
    hoeffding_tree_regressor,
    linear_regression,
    logistic_regression,
    target_scaled_linear_regression,
)

Draw = Callable[[np.random.Generator, tuple[int, int]], npt.NDArray[np.float64]]


def null_rejections(
    draw: Draw, *, runs: int, steps: int, alpha: float = 0.01, min_labels: int = 1000, tau: float = 0.1
) -> tuple[float, float, float, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Simulates `runs` null sequences of differences at once, checking after every step.

    Returns the rates of one-sided rejection (the test's decision), of two-sided rejection and of a
    fixed-sample one-sided z-test at level `alpha` looked at after every step; then the first run's
    differences and statistics.
    """
    rng = np.random.default_rng(0)
    n = np.arange(1, steps + 1, dtype=float)
    r = n * tau * tau
    threshold = math.log(1 / alpha)
    one_sided = two_sided = naive = 0
    first, first_statistic = np.empty(0), np.empty(0)
    chunk = 500
    for _ in range(runs // chunk):
        d = draw(rng, (chunk, steps))
        s1, s2 = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
        mean = s1 / n
        with np.errstate(divide="ignore", invalid="ignore"):
            z2 = n * mean * mean / ((s2 - s1 * mean) / (n - 1))
        statistic = z2 * r / (2 * (1 + r)) - 0.5 * np.log1p(r)  # as in mixture_log_ratio
        if not first.size:
            first, first_statistic = d[0], statistic[0]
        checked = n >= min_labels
        crossed = checked & (statistic >= threshold)
        one_sided += int(np.any(crossed & (mean > 0), axis=1).sum())
        two_sided += int(np.any(crossed, axis=1).sum())
        naive += int(np.any(checked & (mean > 0) & (z2 >= 2.326**2), axis=1).sum())
    return one_sided / runs, two_sided / runs, naive / runs, first, first_statistic


def test_the_false_promotion_rate_is_controlled_under_continuous_monitoring() -> None:
    one_sided, two_sided, naive, first, statistic = null_rejections(
        lambda rng, shape: rng.standard_normal(shape), runs=2000, steps=5000
    )
    # Ville's inequality bounds the two-sided rate by alpha = 0.01; the decision is one-sided.
    assert two_sided <= 0.01
    assert one_sided <= 0.005
    # A fixed-sample z-test at 1 % checked after every label rejects far more often (~7 %).
    assert naive >= 0.04

    # The simulation computes the statistic of PairedTest.
    test = PairedTest()
    for i, d in enumerate(first):
        test.update(float(d), 0.0)
        if i in (1, 10, 999, 4999):
            mean, variance = float(first[: i + 1].mean()), float(first[: i + 1].var(ddof=1))
            assert test.mean_difference == pytest.approx(mean, abs=1e-12)
            assert test.variance == pytest.approx(variance, rel=1e-9)
            assert test.statistic == pytest.approx(mixture_log_ratio(i + 1, mean, variance, 0.1), rel=1e-9)
            assert test.statistic == pytest.approx(float(statistic[i]), rel=1e-6, abs=1e-9)


def test_heavy_tails_keep_the_false_promotion_rate_below_alpha() -> None:
    one_sided, two_sided, _, _, _ = null_rejections(
        lambda rng, shape: rng.standard_t(3, shape), runs=1000, steps=5000
    )
    assert two_sided <= 0.01
    assert one_sided <= 0.005


def test_a_clearly_better_challenger_is_promoted_within_a_bounded_number_of_labels() -> None:
    decided_at = []
    for seed in range(50):
        rng = random.Random(seed)
        test = PairedTest(alpha=0.01, min_labels=1000)
        while not test.decided and test.n < 20_000:
            champion = rng.expovariate(1.0)
            test.update(champion, champion - 0.1 - rng.gauss(0.0, 1.0))  # lower by a tenth of the noise
        assert test.decided
        decided_at.append(test.n)
    assert max(decided_at) <= 5000
    assert sorted(decided_at)[len(decided_at) // 2] <= 2000


def test_no_decision_before_min_labels() -> None:
    test = PairedTest(min_labels=500)
    for _ in range(499):
        test.update(1.0 + random.random(), 0.0)
    assert test.statistic > 100 * test.threshold
    assert not test.decided
    test.update(1.0, 0.0)
    assert test.decided
    assert test.n == 500


def test_identical_models_are_never_promoted() -> None:
    test = PairedTest(min_labels=10)
    for i in range(5000):
        test.update(i % 7 / 3.0, i % 7 / 3.0)
    assert test.variance == 0.0 and test.mean_difference == 0.0
    assert test.statistic < 0.0
    assert not test.decided


def test_a_constant_gain_has_infinite_evidence() -> None:
    test = PairedTest(min_labels=10)
    for _ in range(10):
        test.update(1.5, 1.25)
    assert test.statistic == math.inf
    assert test.decided


def test_a_worse_challenger_is_never_promoted() -> None:
    rng = random.Random(0)
    test = PairedTest(min_labels=100)
    for _ in range(20_000):
        champion = rng.expovariate(1.0)
        test.update(champion, champion + 0.3 + rng.gauss(0.0, 1.0))
    assert test.mean_difference < -0.25
    assert test.statistic > 100 * test.threshold
    assert not test.decided


def test_huge_evidence_does_not_overflow() -> None:
    test = PairedTest(min_labels=10)
    for i in range(100_000):
        test.update(1e6 + (i % 2) * 1e-3, 0.0)
    assert math.isfinite(test.statistic)
    assert test.statistic > 1e20
    assert test.decided


def test_once_decided_stays_decided_until_reset() -> None:
    test = PairedTest(min_labels=10)
    for i in range(20):
        test.update(1.0 + i % 2, 0.0)
    assert test.decided
    for _ in range(1000):
        test.update(0.0, 1.0)
    assert test.mean_difference < 0.0
    assert test.decided
    test.reset()
    assert (test.n, test.mean_difference, test.statistic, test.decided) == (0, 0.0, 0.0, False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"min_labels": -1}, "min_labels"),
        ({"tau": 0.0}, "tau"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PairedTest(**kwargs)  # type: ignore[arg-type]


def test_non_finite_losses_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        PairedTest().update(math.inf, 1.0)


def test_losses() -> None:
    assert loss("classification", True, 1.0) == pytest.approx(-math.log(1 - 1e-6))
    assert loss("classification", True, 0.0) == pytest.approx(-math.log(1e-6))
    assert loss("classification", False, 0.25) == pytest.approx(-math.log(0.75))
    assert loss("regression", 2.0, 5.5) == 3.5


# --------------------------------------------------------------------------------------------- contest


def line(n: int, seed: int = 0) -> Iterator[tuple[Features, float]]:
    """Units sold rise with x: a linear model learns it, a running mean cannot."""
    rng = random.Random(seed)
    for _ in range(n):
        x = rng.uniform(0.0, 10.0)
        yield {"x": x, "dow": rng.choice(["sat", "sun"])}, max(0.0, 3.0 * x + rng.gauss(0.0, 1.0))


def mean_model() -> OnlineModel:
    return OnlineModel("demand", "regression", dummy.StatisticRegressor(stats.Mean()))


def linear_model() -> OnlineModel:
    return OnlineModel("demand", "regression", target_scaled_linear_regression())


def test_a_better_challenger_is_promoted_and_the_roles_swap() -> None:
    champion, challenger = mean_model(), linear_model()
    contest = Contest(champion, "mean", challenger, "target_scaled_linear_regression", min_labels=200)
    promoted_at = [i for i, (x, y) in enumerate(line(3000), start=1) if contest.learn(x, y)]
    assert promoted_at == [200]  # it learns fast: the test had crossed before min_labels
    assert contest.promotions == 1
    assert contest.champion is challenger and contest.champion_name == "target_scaled_linear_regression"
    assert contest.challenger is champion and contest.challenger_name == "mean"
    # Both learned every label; the test and the role metrics started over at the promotion.
    assert champion.labels_learned == challenger.labels_learned == 3000
    assert contest.test.n == 3000 - promoted_at[0]
    assert contest.test.mean_difference < 0.0  # the mean is still worse, as the challenger now
    assert contest.champion_metric.get() < contest.challenger_metric.get()
    assert contest.champion.metric.get() == 0.0  # the models' own metrics are the service's business


def test_a_promotion_resets_the_test() -> None:
    contest = Contest(mean_model(), "mean", linear_model(), "target_scaled_linear_regression", min_labels=200)
    for x, y in line(1000):
        if contest.learn(x, y):
            assert (contest.test.n, contest.test.decided) == (0, False)
            assert contest.champion_metric.get() == contest.challenger_metric.get() == 0.0
            break
    else:
        pytest.fail("no promotion")


def test_classification_contest() -> None:
    rng = random.Random(0)
    contest = Contest(
        OnlineModel("fraud", "classification", dummy.PriorClassifier()),
        "prior",
        OnlineModel("fraud", "classification", logistic_regression()),
        "logistic_regression",
        min_labels=300,
    )
    promotions = 0
    for _ in range(2000):
        z = rng.gauss(0.0, 1.0)
        promotions += contest.learn({"amount_z": z}, float(z > 1.0))
    assert promotions == 1
    assert contest.champion_name == "logistic_regression"
    assert contest.champion_metric.__class__.__name__ == "ROCAUC"


def test_restarting_the_challenger_gives_a_fresh_model_and_a_fresh_test() -> None:
    contest = Contest(linear_model(), "target_scaled_linear_regression", mean_model(), "mean", min_labels=200)
    for x, y in line(500):
        contest.learn(x, y)
    old = contest.challenger
    contest.restart_challenger(hoeffding_tree_regressor, "hoeffding_tree")
    challenger = contest.challenger
    assert challenger is not None and challenger is not old
    assert contest.challenger_name == "hoeffding_tree"
    assert (challenger.labels_learned, challenger.name, challenger.task) == (0, "demand", "regression")
    assert (contest.test.n, contest.champion_metric.get()) == (0, 0.0)
    fresh = OnlineModel("demand", "regression", hoeffding_tree_regressor())
    probe = [x for x, _ in line(20, seed=1)]
    assert challenger.predict_many(probe) == fresh.predict_many(probe)
    assert contest.champion.labels_learned == 500

    contest.restart_challenger(hoeffding_tree_regressor)  # keeps the name
    assert contest.challenger_name == "hoeffding_tree" and contest.challenger is not challenger


def test_the_champion_prediction_made_by_the_caller_is_the_one_tested() -> None:
    own = Contest(mean_model(), "mean", linear_model(), "target_scaled_linear_regression", min_labels=200)
    shared = Contest(mean_model(), "mean", linear_model(), "target_scaled_linear_regression", min_labels=200)
    for x, y in line(1000):
        assert own.learn(x, y) == shared.learn(x, y, shared.champion.predict_one(x))
    assert (
        (own.promotions, own.champion_name)
        == (shared.promotions, shared.champion_name)
        == (1, "target_scaled_linear_regression")
    )
    assert repr(own.test) == repr(shared.test)


def test_without_a_challenger_only_the_champion_learns() -> None:
    contest = Contest(linear_model(), "target_scaled_linear_regression")
    assert not any(contest.learn(x, y) for x, y in line(100))
    assert contest.champion.labels_learned == 100 and contest.test.n == 0
    with pytest.raises(ValueError, match="name"):
        contest.restart_challenger(linear_regression)
    contest.restart_challenger(CANDIDATES["regression"]["hoeffding_tree"], "hoeffding_tree")
    assert contest.challenger is not None and contest.challenger_name == "hoeffding_tree"


def test_mismatched_contests_are_refused() -> None:
    with pytest.raises(ValueError, match="both"):
        Contest(linear_model(), "target_scaled_linear_regression", mean_model())
    classifier = OnlineModel("fraud", "classification", logistic_regression())
    with pytest.raises(ValueError, match="classification"):
        Contest(linear_model(), "target_scaled_linear_regression", classifier, "logistic_regression")


def test_a_pickled_contest_continues_identically() -> None:
    contest = Contest(
        mean_model(),
        "mean",
        OnlineModel("demand", "regression", hoeffding_tree_regressor()),
        "hoeffding_tree",
        min_labels=200,
    )
    rows = list(line(3000))
    for x, y in rows[:150]:
        contest.learn(x, y)
    copy = pickle.loads(pickle.dumps(contest))
    probe = [x for x, _ in line(20, seed=1)]
    for x, y in rows[150:]:
        assert contest.learn(x, y) == copy.learn(x, y)
    assert contest.promotions == copy.promotions == 1
    assert (copy.champion_name, copy.test.n, copy.test.statistic) == (
        contest.champion_name,
        contest.test.n,
        contest.test.statistic,
    )
    assert copy.champion.predict_many(probe) == contest.champion.predict_many(probe)
    assert copy.champion_metric.get() == contest.champion_metric.get()


def test_the_warm_up_is_learned_but_not_tested() -> None:
    contest = Contest(
        mean_model(), "mean", linear_model(), "target_scaled_linear_regression", min_labels=200, warmup=300
    )
    rows = list(line(2000))
    promoted_at = []
    for i, (x, y) in enumerate(rows, start=1):
        if contest.learn(x, y):
            promoted_at.append(i)
        if i <= 300:
            assert (contest.warming, contest.test.n) == (300 - i, 0)
    assert promoted_at == [500]
    assert contest.champion.labels_learned == contest.challenger.labels_learned == 2000  # type: ignore[union-attr]
    # No warm-up after a promotion, a new one after a restart.
    assert contest.test.n == 1500
    contest.restart_challenger(linear_regression, "linear_regression")
    assert contest.warming == 300
    for x, y in rows[:300]:
        contest.learn(x, y)
    assert (contest.warming, contest.test.n, contest.challenger.labels_learned) == (0, 0, 300)  # type: ignore[union-attr]
    contest.learn(*rows[300])
    assert contest.test.n == 1


def test_a_negative_warm_up_is_refused() -> None:
    with pytest.raises(ValueError, match="warmup"):
        Contest(linear_model(), "target_scaled_linear_regression", warmup=-1)


def test_the_last_decision_is_kept_for_its_figures() -> None:
    contest = Contest(mean_model(), "mean", linear_model(), "target_scaled_linear_regression", min_labels=200)
    assert contest.last_decision is None
    for x, y in line(300):
        contest.learn(x, y)
    decision = contest.last_decision
    assert decision is not None and decision is not contest.test
    assert (decision.n, decision.decided) == (200, True)
    assert decision.mean_difference > 0.0 and decision.statistic >= decision.threshold
    assert contest.test.n == 100


def test_adopting_a_champion_starts_the_test_over() -> None:
    contest = Contest(linear_model(), "target_scaled_linear_regression", mean_model(), "mean", min_labels=200)
    for x, y in line(300):
        contest.learn(x, y)
    challenger = contest.challenger
    rollback = pickle.loads(pickle.dumps(contest.champion))
    contest.adopt(rollback)
    assert contest.champion is rollback and contest.challenger is challenger
    assert contest.champion_name == "target_scaled_linear_regression"
    assert (contest.test.n, contest.warming) == (0, 0)
    contest.adopt(mean_model(), "mean")
    assert contest.champion_name == "mean"
    with pytest.raises(ValueError, match="classification"):
        contest.adopt(OnlineModel("demand", "classification", logistic_regression()))
