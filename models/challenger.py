"""Champion versus challenger: a paired, always-valid sequential test decides promotions.

The champion is the model the service serves; a challenger (another candidate pipeline) runs
beside it. For each label, *before* either learns it, both predict the label's features and
:func:`loss` scores each prediction; the paired test (:class:`PairedTest`) gets the two losses,
then both models learn the label. The challenger is promoted when the test is sure that its
expected loss is lower: the roles swap (the old champion stays on as the challenger, so it may
win back) and the test starts over. :class:`Contest` holds the two models and runs all of it.

Both are judged on predictions made *at learn time*, after both models learned the same labels:
the champion's served prediction (made when the event was scored, fewer labels ago) would be
staler than the challenger's and bias the test against the champion.

A contest can start with a warm-up (both models learn, nothing is tested) so that a fresh
model is not judged on its first labels: when the contest starts, and when the challenger is
restarted from scratch, e.g. on a confirmed concept drift.

The test is checked after every label, so it has to stay valid under continuous monitoring: a
fixed-sample z-test checked after every label rejects a true null hypothesis far more often than
its nominal level. :class:`PairedTest` is the mixture sequential probability ratio test (mSPRT)
of Johari, Pekelis and Walsh, *Always valid inference: continuous monitoring of A/B tests*
(Operations Research, 2022; arXiv 1512.04922, 2015), i.e. Robbins' normal mixture, on the paired
loss differences ``d = loss_champion - loss_challenger``.

Examples
--------
>>> from models.online import OnlineModel
>>> from models.pipelines import CANDIDATES
>>> contest = Contest(
...     OnlineModel("demand", "regression", CANDIDATES["regression"]["linear_regression"]()),
...     "linear_regression",
...     OnlineModel("demand", "regression", CANDIDATES["regression"]["hoeffding_tree"]()),
...     "hoeffding_tree",
...     min_labels=100,
... )
>>> x = {"price": 2.0, "dow": "sat"}
>>> contest.learn(x, 5.0)
False
>>> contest.champion_name, contest.test.n, contest.champion.labels_learned
('linear_regression', 1, 1)

"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

from river import base, metrics

from models.online import Features, OnlineModel, new_metric
from models.pipelines import Task

__all__ = ["CLIP", "Contest", "PairedTest", "loss", "mixture_log_ratio"]

CLIP = 1e-6
"""A predicted probability is clipped to ``[CLIP, 1 - CLIP]`` before its log loss: one confident
miss then costs at most ``-log(1e-6) ≈ 13.8`` instead of infinity."""


def loss(task: Task, y_true: float, y_pred: float) -> float:
    """The loss of one prediction: what the champion and the challenger are judged by.

    A classification is judged by the log loss of the predicted probability of ``True``, clipped
    to ``[1e-6, 1 - 1e-6]`` (see :data:`CLIP`): a proper scoring rule that decomposes per label,
    unlike the ROC AUC the service reports. A regression is judged by the absolute error, whose
    mean is the MAE the service reports.

    Parameters
    ----------
    task
        ``"classification"`` (`y_true` is truthy for ``True``; `y_pred` is the probability of
        ``True``) or ``"regression"``.
    y_true
        The label.
    y_pred
        The prediction made before the label was learned.

    Examples
    --------
    >>> round(loss("classification", True, 0.5), 4), round(loss("classification", False, 1.0), 4)
    (0.6931, 13.8155)
    >>> loss("regression", 5.0, 3.5)
    1.5

    """
    if task == "classification":
        p = min(max(y_pred, CLIP), 1.0 - CLIP)
        return -math.log(p if y_true else 1.0 - p)
    return abs(y_true - y_pred)


def mixture_log_ratio(n: int, mean: float, variance: float, tau: float) -> float:
    """The log of the normal-mixture likelihood ratio of `n` differences against a zero mean.

    For `n` differences with mean `mean` and variance ``s² = variance``, mixing the alternative's
    mean over ``N(0, τ²)`` with ``τ = tau · s``, the likelihood ratio is

    ``Λ = sqrt(s² / (s² + n τ²)) · exp(n² τ² mean² / (2 s² (s² + n τ²)))``;

    with ``r = n tau²`` and ``z² = n mean² / s²`` its log is
    ``z² r / (2 (1 + r)) - log(1 + r) / 2``, computed as such: no exponential, so no overflow.

    Parameters
    ----------
    n
        How many differences; fewer than 2 give 0 (no evidence: Λ = 1).
    mean
        Their mean.
    variance
        Their (sample) variance. When it is 0, the statistic is that of ``z = 0`` if the mean is
        0 (identical losses: no evidence) and infinite otherwise (every difference equal and
        non-zero).
    tau
        The mixing distribution's standard deviation, in units of the differences' standard deviation.

    Examples
    --------
    >>> round(mixture_log_ratio(1000, 0.0, 1.0, 0.1), 4)  # no difference: Λ < 1
    -1.1989
    >>> round(mixture_log_ratio(1000, 0.15, 1.0, 0.1), 4)  # z = 4.74
    9.0283

    """
    if n < 2:
        return 0.0
    r = n * tau * tau
    if variance > 0.0:
        z2 = n * mean * mean / variance
    elif mean == 0.0:  # every difference 0, as between identical models: no evidence
        z2 = 0.0
    else:  # every difference the same non-zero number
        z2 = math.inf
    return z2 * r / (2.0 * (1.0 + r)) - 0.5 * math.log1p(r)


class PairedTest:
    """An always-valid sequential test that the challenger's expected loss is below the champion's.

    The mixture sequential probability ratio test (mSPRT; Johari, Pekelis and Walsh, *Always valid
    inference*, 2015/2022; Robbins' normal mixture) on the paired differences
    ``d = loss_champion - loss_challenger``. After each pair, :attr:`statistic` is the log of the
    likelihood ratio of the differences under a normal alternative whose mean is mixed over
    ``N(0, τ²)``, against a zero mean (see :func:`mixture_log_ratio`). For independent normal
    differences of known variance and zero mean, it is the log of a nonnegative martingale, so by
    Ville's inequality it ever reaches :attr:`threshold` ``= log(1 / alpha)`` with probability at
    most `alpha`, however long the test runs and however often it is looked at.

    The decision is one-sided: the test is :attr:`decided` (the challenger wins) once, after at
    least `min_labels` pairs, the statistic reaches the threshold *and* the mean difference is
    positive (the challenger's loss is lower). A challenger whose loss is higher is never promoted,
    and one that is not better is promoted with probability at most `alpha` (under the assumptions
    discussed below). Once decided, it stays decided until
    :meth:`reset`: the always-valid p-value is the running minimum of ``1 / Λ``.

    The unknown variance s² is plugged in from the running sample variance (Welford), and τ is
    ``tau · s``, which makes the test invariant to the losses' scale. Plugging in the variance
    makes the guarantee asymptotic (Johari et al. do the same): `min_labels` keeps the early,
    noisy estimates from deciding. Simulated over 2,000 null streams of 5,000 pairs with the
    defaults, the test promotes 0.1 % of them for normal differences (0.45 % cross the two-sided
    threshold), 0.15 % for Student t ones (3 degrees of freedom) and 0.5 % for skewed
    ``1 - Exp(1)`` ones, where a fixed-sample z-test at 1 % looked at after every label promotes
    6.7 % of the normal ones.

    The guarantee assumes independent differences with moderate tails; two cases break it.

    * Rare, huge losses of the challenger that have not happened yet: a challenger slightly
      better on every label but missing 0.1 % of them at a log loss of 13.8 looks better with a
      small variance after 1,000 labels (34 % of such null streams are promoted; 6.2 % at a
      0.5 % miss rate). Resampling independently the real differences of the simulator's streams,
      centered to a zero mean, a Hoeffding tree challenging fraud's logistic regression (skewness
      -15 to -18: confident misses) is promoted 5.4 to 8.8 % of the time (0.6 to 1.6 % with
      ``min_labels=5000``), the other fraud challengers 0.8 to 1.7 %, the demand ones 0.1 to 0.9 %.
      The same way on 2,000 streams of 20,000 pairs from three 100,000-label simulated streams,
      the Hoeffding tree with majority-class leaves (``hoeffding_tree_mc``, skewness -10 to -12)
      is promoted 3.4 to 5.1 % of the time (0.4 to 0.5 % with ``min_labels=5000``), the adaptive
      one 6.7 to 20 % (1.1 to 3.3 %).
    * Autocorrelated differences: fraud comes in bursts, and the two models' relative quality
      wanders as they learn, so a sum of differences varies more than the plug-in variance says.
      Resampling the same centered differences in blocks of 100 consecutive labels, 18 to 49 % of
      the fraud streams and 3 to 8 % of the demand ones are promoted (``hoeffding_tree_mc``: 48
      to 57 %, 26 to 37 % with ``min_labels=5000``). Such a stream has a zero
      mean overall but not over every stretch of it: a promotion then says that the challenger
      did better since the test started, not that it will do better.

    Choosing τ: the boundary ``z = √n · mean / s`` that the statistic crosses is lowest where
    ``n tau² ≈ 12`` (for alpha = 0.01), and grows only with ``log n`` away from it. The default
    ``tau = 0.1`` (τ² = s² / 100) puts that optimum near 1,200 pairs, the scale at which a
    promotion is worth having: the boundary is z ≈ 3.6 at 1,000 to 2,000 pairs, 3.7 at 5,000 and
    3.8 at 20,000, against 4.0 to 4.4 for τ² = s². The statistic depends on ``n tau²`` and the
    standardized mean only.

    Parameters
    ----------
    alpha
        The bound on the probability of ever promoting a challenger that is not better.
    min_labels
        No decision before this many pairs.
    tau
        The standard deviation of the mixing distribution, in units of the differences' standard
        deviation.

    Attributes
    ----------
    alpha, min_labels, tau
        As given.

    Examples
    --------
    A challenger whose loss is 0.1 lower on average, give or take 1, is promoted after 1,368 labels:

    >>> import random
    >>> rng = random.Random(0)
    >>> test = PairedTest(alpha=0.01, min_labels=1000)
    >>> while not test.decided:
    ...     champion = rng.expovariate(1.0)
    ...     test.update(champion, champion - 0.1 + rng.gauss(0.0, 1.0))
    >>> test
    PairedTest(n=1368, mean_difference=0.100889, statistic=4.662, threshold=4.605, decided=True)

    """

    def __init__(self, alpha: float = 0.01, min_labels: int = 1000, tau: float = 0.1) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be within (0, 1), not {alpha}")
        if min_labels < 0:
            raise ValueError(f"min_labels must be >= 0, not {min_labels}")
        if not tau > 0.0:
            raise ValueError(f"tau must be > 0, not {tau}")
        self.alpha = alpha
        self.min_labels = min_labels
        self.tau = tau
        self.reset()

    def reset(self) -> None:
        """Forgets every pair: the test starts over."""
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._decided = False

    def update(self, loss_champion: float, loss_challenger: float) -> None:
        """Adds the losses of the champion and the challenger on one label."""
        d = loss_champion - loss_challenger
        if not math.isfinite(d):
            raise ValueError(f"the losses must be finite, not {loss_champion} and {loss_challenger}")
        self._n += 1
        delta = d - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (d - self._mean)
        if (
            not self._decided
            and self._n >= self.min_labels
            and self._mean > 0.0
            and self.statistic >= self.threshold
        ):
            self._decided = True

    @property
    def n(self) -> int:
        """How many pairs the test has seen."""
        return self._n

    @property
    def mean_difference(self) -> float:
        """The mean of ``loss_champion - loss_challenger``: positive when the challenger does better."""
        return self._mean

    @property
    def variance(self) -> float:
        """The sample variance of the differences (0 before two pairs)."""
        return self._m2 / (self._n - 1) if self._n > 1 else 0.0

    @property
    def statistic(self) -> float:
        """The log of the mixture likelihood ratio (two-sided): compare it with :attr:`threshold`."""
        return mixture_log_ratio(self._n, self._mean, self.variance, self.tau)

    @property
    def threshold(self) -> float:
        """``log(1 / alpha)``: the :attr:`statistic` crosses it with probability at most `alpha`."""
        return -math.log(self.alpha)

    @property
    def decided(self) -> bool:
        """Whether the challenger has won: see the class's description."""
        return self._decided

    def __repr__(self) -> str:
        return (
            f"PairedTest(n={self._n}, mean_difference={self._mean:.6g}, "
            f"statistic={self.statistic:.4g}, threshold={self.threshold:.4g}, decided={self._decided})"
        )


class Contest:
    """A champion, the model served, and a challenger learning the same labels beside it.

    :meth:`learn` takes each label in turn: both models predict its features, the
    :class:`PairedTest` gets their losses (see :func:`loss`), both learn the label, and when the
    test is decided the challenger is promoted: champion and challenger swap roles (with their
    names) and the test starts over. :meth:`restart_challenger` replaces the challenger by a fresh
    one, for instance on a confirmed concept drift, so that a model learning only the new concept
    can take over instead of waiting for the champion to unlearn the old one.

    Everything is deterministic given the estimators, and a contest pickles (the factories passed
    to :meth:`restart_challenger` are not kept). A restarted challenger is a new
    :class:`~models.online.OnlineModel` whose :attr:`~models.online.OnlineModel.version` counts its
    labels from 0 again: once promoted, it can serve a version number that the old champion
    served before, so anything keyed on versions should add the pipeline's name.

    Parameters
    ----------
    champion
        The model served.
    champion_name
        Its pipeline's name (a key of :data:`~models.pipelines.CANDIDATES`).
    challenger
        The model challenging it, for the same task; ``None`` for none (then :meth:`learn` only
        teaches the champion).
    challenger_name
        Its pipeline's name; required with a challenger.
    alpha, min_labels, tau
        The parameters of the :class:`PairedTest`.
    warmup
        How many labels both models learn, without testing, when the contest starts and after
        :meth:`restart_challenger`: a fresh model is judged once it has learned something, and
        a champion that starts slower but learns better is not swapped out for its first labels
        only. Not after a promotion: both models are warm by then.

    Attributes
    ----------
    champion, challenger
        The two models. They swap on promotion.
    champion_name, challenger_name
        Their pipelines' names.
    test
        The paired test since the last promotion, or the end of the warm-up.
    warming
        How many labels of warm-up are left.
    champion_metric, challenger_metric
        Prequential metrics of each role (see :func:`~models.online.new_metric`) on the
        learn-time predictions since the test last started over. They are not the models' own
        :attr:`~models.online.OnlineModel.metric`, which the service feeds with served
        predictions.
    promotions
        How many times a challenger was promoted.
    last_decision
        A copy of the test that decided the last promotion (``None`` before the first), for its
        figures: the test itself starts over at once.

    Examples
    --------
    See the module's example.

    """

    def __init__(
        self,
        champion: OnlineModel,
        champion_name: str,
        challenger: OnlineModel | None = None,
        challenger_name: str | None = None,
        *,
        alpha: float = 0.01,
        min_labels: int = 1000,
        tau: float = 0.1,
        warmup: int = 0,
    ) -> None:
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, not {warmup}")
        if (challenger is None) != (challenger_name is None):
            raise ValueError("give both a challenger and its name, or neither")
        if challenger is not None and challenger.task != champion.task:
            raise ValueError(f"the challenger does a {challenger.task}, the champion a {champion.task}")
        self.champion = champion
        self.champion_name = champion_name
        self.challenger = challenger
        self.challenger_name = challenger_name
        self.test = PairedTest(alpha=alpha, min_labels=min_labels, tau=tau)
        self.warmup = warmup
        self.warming = warmup
        self.promotions = 0
        self.last_decision: PairedTest | None = None
        # The challenger's prediction of the last label before it learned it (None in warm-up).
        self.last_challenger_pred: float | None = None
        self.champion_metric: metrics.base.Metric = new_metric(champion.task)
        self.challenger_metric: metrics.base.Metric = new_metric(champion.task)

    @property
    def task(self) -> Task:
        """The models' task."""
        return self.champion.task

    def learn(self, x: Features, y: float, champion_pred: float | None = None) -> bool:
        """Predicts `x` with both models, tests their losses, teaches both `y`.

        During the warm-up, both models only learn `y`.

        Parameters
        ----------
        x, y
            The label's features and the label.
        champion_pred
            The champion's prediction of `x` (:meth:`~models.online.OnlineModel.predict_one`),
            when the caller has made it already; predicted here otherwise.

        Returns
        -------
        bool
            ``True`` when this label promoted the challenger: :attr:`champion` is now the former
            challenger, and the test has started over.

        """
        challenger = self.challenger
        self.last_challenger_pred = None
        if challenger is None or self.warming:
            self.champion.learn_one(x, y)
            if challenger is not None:
                challenger.learn_one(x, y)
                self.warming -= 1
            return False
        if champion_pred is None:
            champion_pred = self.champion.predict_one(x)
        challenger_pred = self.last_challenger_pred = challenger.predict_one(x)
        self.test.update(loss(self.task, y, champion_pred), loss(self.task, y, challenger_pred))
        self.champion_metric.update(y, champion_pred)
        self.challenger_metric.update(y, challenger_pred)
        self.champion.learn_one(x, y)
        challenger.learn_one(x, y)
        if not self.test.decided:
            return False
        assert self.challenger_name is not None  # set with the challenger
        self.champion, self.challenger = challenger, self.champion
        self.champion_name, self.challenger_name = self.challenger_name, self.champion_name
        self.promotions += 1
        self.last_decision = copy.copy(self.test)
        self._start_over()
        return True

    def restart_challenger(self, factory: Callable[[], base.Estimator], name: str | None = None) -> None:
        """Replaces the challenger by a fresh model of ``factory()`` and starts the test over.

        Parameters
        ----------
        factory
            Returns a fresh, untrained estimator for the champion's task.
        name
            The new challenger's pipeline name; by default the current challenger's.

        """
        name = name if name is not None else self.challenger_name
        if name is None:
            raise ValueError("a first challenger needs a name")
        self.challenger = OnlineModel(self.champion.name, self.task, factory())
        self.challenger_name = name
        self.warming = self.warmup
        self._start_over()

    def adopt(self, champion: OnlineModel, name: str | None = None) -> None:
        """Serves `champion` from now on, e.g. a rollback to an earlier version: the test starts over.

        The challenger stays, without a warm-up (both models have learned).

        Parameters
        ----------
        champion
            The model to serve, for the same task.
        name
            Its pipeline's name; by default the current champion's.

        """
        if champion.task != self.task:
            raise ValueError(f"the new champion does a {champion.task}, the contest a {self.task}")
        self.champion = champion
        self.champion_name = name if name is not None else self.champion_name
        self._start_over()

    def _start_over(self) -> None:
        self.test.reset()
        self.champion_metric = new_metric(self.task)
        self.challenger_metric = new_metric(self.task)

    def __repr__(self) -> str:
        return (
            f"Contest(champion={self.champion_name!r}, challenger={self.challenger_name!r}, "
            f"promotions={self.promotions}, warming={self.warming}, test={self.test!r})"
        )
