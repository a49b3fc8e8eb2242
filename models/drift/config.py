"""Every threshold and window of the drift monitor, in one validated place.

Each detector reads its own parameters here: :class:`~models.drift.concept.ConceptDrift`
the ``concept_*``, ``classification_*`` and ``regression_*`` ones,
:class:`~models.drift.psi.DistributionDrift` the windows, bins and PSI levels,
:class:`~models.drift.coverage.LabelCoverage` the ``coverage_*`` ones; the
:class:`~models.drift.monitor.Monitor` the windows it counts and the features it leaves
alone (``exempt``).

Examples
--------
>>> MonitorConfig(window=1000).window
1000
>>> MonitorConfig(psi_open=0.1, psi_resolve=0.2)
Traceback (most recent call last):
...
ValueError: psi_resolve must be within [0, psi_open]

"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MonitorConfig"]


@dataclass(frozen=True)
class MonitorConfig:
    """Every threshold and window of a :class:`Monitor`, with the reasons for the defaults.

    The defaults were calibrated with ``python -m stream.tools.calibrate`` on the simulated streams
    of both use cases (100,000 events each, ten seeds): no alert of any kind on the stationary
    streams, while the injected concept drifts, feature shifts and lost labels were all
    caught (that command prints the table).

    Expected false alarms, from sampling noise alone: data and prediction drift, none (PSI
    between two windows of one distribution is ~0.002, the thresholds are 100 standard
    deviations away); label coverage, ~1e-7 per window (Poisson). What remains is structure
    the stream really has (bursts, daily cycles, a model that keeps learning): the largest
    statistics seen on the stationary streams are quoted below with each threshold.

    Parameters
    ----------
    concept_warmup
        Labels before the concept drift detector arms: a fresh model's error falls fast at
        first, and its mean is the baseline's starting point.
    concept_half_life
        Half-life, in labels, of the baseline error (an exponentially weighted mean, followed
        while no alert is open): long against an episode, so a drift is not absorbed before it
        is detected, short enough to follow a model that keeps improving.
    classification_clip
        Probabilities are clipped to ``[clip, 1 - clip]`` before the log loss: one confident
        miss costs at most ``-log(1e-3) = 6.9`` nats, so a few misses cannot open an alert.
    regression_error_cap
        Cap of ``|sqrt(y) - sqrt(y_pred)|``. For Poisson counts the square root has a standard
        deviation of about 0.5 at every level, so 3 is ~6 sigma: one absurd forecast (a
        diverging model once forecast 10^21 units) adds at most 3.
    classification_allowance, regression_allowance
        CUSUM slack, as a fraction of the baseline error: the detector accumulates only the
        error beyond ``(1 + allowance) * baseline``, so only a rise counts (a model that gets
        better raises nothing). A classifier's log loss is mostly near zero with rare large
        misses, and swings with the share of positives (10x between blocks of 2,000 labels
        over a simulated day): only a doubling counts. A regression's error is spread evenly
        around its mean: 10 % above it counts.
    classification_threshold, regression_threshold
        CUSUM level that opens an alert, in the error's units (nats, square-root units):
        25 nats is about four fully missed fraud bursts beyond the usual rate. On ten
        stationary simulated streams of 100,000 labels the largest CUSUM was 0.43-0.72 of it
        for fraud and 0.40-0.62 for demand; a Gumbel fit to those maxima puts a false alarm
        at ~1e-3 (fraud) and ~1e-4 (demand) per 100,000 labels. The drifts injected by the
        simulator were caught 169-362 (fraud) and 248-481 (demand) labels after them. A known
        limit: labels fed in strict event order (not spread by their arrival delays)
        concentrate the demand model's transient errors at the start of each simulated day
        into ~30 labels, and there its CUSUM reached 1.0-1.45x the threshold (4 seeds of 4).
    concept_update_every
        Labels between two updates of an open concept drift alert.
    concept_resolve_window
        The alert resolves when the mean error over this many labels is back under the
        CUSUM's reference level (the pre-drift baseline plus its allowance).
    concept_adopt_after
        An alert still open after this many labels (the model works worse for good, e.g. a
        harder concept) resolves by adopting the current error level as the new baseline, so
        that a further rise is alerted again; the prequential metric shows the level.
    concept_cooldown
        Labels after a resolve during which the CUSUM is held at zero.
    window
        Events per tumbling window of the data and prediction drift detectors. Long enough
        to average over the bursts and the daily mix of a stream (fraud is 20 % of the
        events at night in the simulator), short enough to report a shift within minutes
        at production rates.
    bins
        Bins of the PSI, of equal mass in the reference window; categories are bins of their
        own. With 10 bins and 8,000 events per window, PSI between two windows of one
        stationary distribution is about ``2 * 9 / 8000 = 0.002``, sd 0.001.
    psi_open, psi_resolve
        The usual PSI rule of thumb: above 0.25 a shift is significant, below 0.1 it is
        negligible; hysteresis between the two. On the simulator's stationary streams the
        largest PSI of a monitored feature was 0.093 (a shifted feature: 0.9-1.5).
    prediction_psi_open, prediction_psi_resolve
        The same for the predictions, twice as high: they follow the mix of the events, which
        moves more than any one feature through a day (fraud is ~0.1 % of the events by day
        and ~20 % at night in the simulator). Measured with one model for both windows
        (``scoring calibrate``, seeds 1-3), the largest stationary PSI was 0.15 for fraud
        and 0.17 for demand; on the tests' streams written without the simulator, 0.06.
    prediction_samples
        Events per window, on average, whose features are kept for prediction drift: when the
        window closes, the model scores them and its reference window's (two predictions per
        sampled event, :mod:`models.drift.reference`); the others are skipped (picked at
        random by a seeded generator, the same in every replay). With 400 of 8,000 (about
        60 kB of features kept for two windows, ~3 ms of predictions at each close), two
        windows of one distribution differ by a PSI of about ``2 * 9 / 400 = 0.045`` (sd
        ~0.015), a tenth of ``prediction_psi_open``.
    window_warmup
        Windows before the first comparison. A fresh model's predictions move while it learns
        its first labels, and so do features built from entity state while the entities are
        new (on the simulator, PSI up to 0.8 between the second and the first window, 0.13
        between the third and the second, under 0.1 later).
    reference_lag
        The reference of a window is the window this many windows before it. With 1, a
        lasting shift is adopted as the new normal one window after it is seen, and the alert
        resolves: the detector reports *changes*. A longer lag also catches slower drifts but
        pages on features that trend by construction (entity counts growing as the stream
        ages, the daily mix): on the simulator, lag 2 doubled their PSI.
    data_cooldown
        Windows after a resolve during which the same feature does not open again.
    max_categories
        Distinct values of a categorical feature counted per window; the rest share one bin.
    min_window_values
        A feature seen in fewer events than this in a window is not compared.
    exempt
        Features not monitored for data drift because they move by construction on a
        stationary stream: the clock and the calendar (a window shorter than a day or a week
        sees only part of the cycle: ``hour_sin``, ``hour_cos``, ``dow``, ``weekend``), how
        much history an entity has (``history_log_n``, ``recent_units_log_n`` grow as
        entities age) and the time since an entity's last event (``log_gap_seconds``, which
        follows the daily cycle of activity). None by default: each of this service's use
        cases declares its own (``drift_exempt`` in ``stream/usecases.py``), which the learner
        and ``scoring calibrate`` pass here.
    coverage_window
        Seconds of stream time per label coverage window. A window closes only once it has
        ``coverage_min_scored`` scored events and ``coverage_min_expected`` expected labels,
        so at low rates it stretches.
    coverage_min_scored, coverage_min_expected
        With at least 100 expected labels, a window's count falls under half of it by chance
        with probability ~1e-7 (Poisson), once in ~10^7 windows.
    coverage_warmup
        Windows before the label coverage detector arms: the first labels come a label delay
        after the first events.
    coverage_half_life
        Half-life, in windows, of the usual coverage (followed while no alert is open).
    coverage_open, coverage_resolve
        Shortfall (``1 - recent / usual coverage``) that opens an alert (labels at half their
        usual rate) and under which it resolves (back to 80 %).
    coverage_update_every
        Windows between two updates of an open label coverage alert.
    estimate_window
        Scored events over which the quality of the served scores is estimated
        (:mod:`models.drift.estimate`, classification only), and labels over which their
        realized quality and calibration error are measured. Both windows slide by a fifth
        of it (``estimate_chunks``). Measured on the stationary fraud streams of the tests
        (40,000 transactions; additive and interacting concepts; built-in and
        country-and-currency declarations) and of the simulator (seeds 1-3), the estimated
        ROC AUC fell at most 0.017 below its reference with 5,000 (0.010 with 2,000, 0.001
        with 10,000); on the tests' stream whose input mix shifts (2 events/s, labels an
        hour late), it fell below 0.88 3,000 events after the shift with 5,000 (1,600 with
        2,000; with 10,000, 8,000 events after, when the labels had begun to show it).
    estimate_chunks
        Steps by which the estimate's windows slide: the estimate is refreshed every
        ``estimate_window / estimate_chunks`` scored events.
    estimate_threshold
        Score from which an event counts as flagged, for the estimated and realized
        precision and recall: 0.5 is the decision of calibrated probabilities at equal costs
        (a deployment sets its own). There, the estimated precision and recall were within
        0.04 of the realized ones on the tests' streams, 0.02 on the simulator's.
    estimate_drop
        Fall of the estimated ROC AUC below its reference that opens an
        ``estimated_quality_drop`` alert; it resolves under half of it. 0.05 is three times
        the largest stationary fall measured (0.017); the shifted stream's was 0.09.
    estimate_half_life
        Half-life, in steps of the window, of the estimate's reference (an exponentially
        weighted mean of the estimated ROC AUC, followed while no alert is open).
    estimate_warmup
        Steps after a start or a restart (a promotion, a rollback adopted) before the
        estimate is judged against its reference.
    estimate_adopt_after
        Steps an alert stays open before the estimate's level becomes its new reference.
    estimate_max_calibration_error
        The estimate is valid only while the expected calibration error of the served
        scores, on the last ``estimate_window`` labels, is at most this; an invalid estimate
        opens no alert. Measured against the realized ROC AUC of the same events (known a
        label delay later): with an error under 0.01 the estimate was within ~0.02 of it,
        under 0.02 within ~0.03-0.05, up to 0.03 within ~0.08. The stationary streams stayed
        under 0.018 (a model adapting to the shifted mix, 0.024); a model still learning
        its first labels was at 0.04-0.39.
    estimate_min_positives
        The estimate is valid only with at least this many expected positives (the sum of
        the scores) in its window: fewer, and the ROC AUC is a guess.
    critical_ratio
        An alert is critical when its statistic is at least this multiple of its threshold
        (a shortfall of 0.5 * 2 = 1: no label at all).

    """

    concept_warmup: int = 1000
    concept_half_life: int = 2000
    classification_clip: float = 1e-3
    regression_error_cap: float = 3.0
    classification_allowance: float = 1.0
    regression_allowance: float = 0.1
    classification_threshold: float = 25.0
    regression_threshold: float = 25.0
    concept_update_every: int = 1000
    concept_resolve_window: int = 2000
    concept_adopt_after: int = 20_000
    concept_cooldown: int = 2000
    window: int = 8000
    bins: int = 10
    psi_open: float = 0.25
    psi_resolve: float = 0.1
    prediction_psi_open: float = 0.5
    prediction_psi_resolve: float = 0.2
    window_warmup: int = 3
    reference_lag: int = 1
    data_cooldown: int = 2
    max_categories: int = 50
    min_window_values: int = 500
    exempt: frozenset[str] = frozenset()
    coverage_window: float = 60.0
    coverage_min_scored: int = 200
    coverage_min_expected: float = 100.0
    coverage_warmup: int = 3
    coverage_half_life: float = 20.0
    coverage_open: float = 0.5
    coverage_resolve: float = 0.2
    coverage_update_every: int = 10
    prediction_samples: int = 400
    estimate_window: int = 5000
    estimate_chunks: int = 5
    estimate_threshold: float = 0.5
    estimate_drop: float = 0.05
    estimate_half_life: float = 20.0
    estimate_warmup: int = 5
    estimate_adopt_after: int = 50
    estimate_max_calibration_error: float = 0.03
    estimate_min_positives: float = 20.0
    critical_ratio: float = 2.0

    def __post_init__(self) -> None:
        positive = {
            "concept_warmup": self.concept_warmup,
            "concept_half_life": self.concept_half_life,
            "concept_update_every": self.concept_update_every,
            "concept_resolve_window": self.concept_resolve_window,
            "window": self.window,
            "bins": self.bins,
            "reference_lag": self.reference_lag,
            "max_categories": self.max_categories,
            "coverage_window": self.coverage_window,
            "coverage_half_life": self.coverage_half_life,
            "coverage_update_every": self.coverage_update_every,
            "prediction_samples": self.prediction_samples,
            "estimate_window": self.estimate_window,
            "estimate_chunks": self.estimate_chunks,
            "estimate_half_life": self.estimate_half_life,
            "estimate_adopt_after": self.estimate_adopt_after,
            "estimate_drop": self.estimate_drop,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, not {value}")
        if not 0.0 < self.classification_clip < 0.5:
            raise ValueError("classification_clip must be within (0, 0.5)")
        if not 0.0 <= self.psi_resolve <= self.psi_open:
            raise ValueError("psi_resolve must be within [0, psi_open]")
        if not 0.0 <= self.prediction_psi_resolve <= self.prediction_psi_open:
            raise ValueError("prediction_psi_resolve must be within [0, prediction_psi_open]")
        if not 0.0 <= self.coverage_resolve <= self.coverage_open <= 1.0:
            raise ValueError("coverage_resolve <= coverage_open <= 1 is required")
        if self.estimate_window < self.estimate_chunks:
            raise ValueError("estimate_window must hold at least one event per step (estimate_chunks)")
        if not 0.0 < self.estimate_threshold < 1.0:
            raise ValueError("estimate_threshold must be within (0, 1)")
        if self.critical_ratio < 1.0:
            raise ValueError("critical_ratio must be >= 1")
