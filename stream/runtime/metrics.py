"""Prometheus metrics of the worker (``/metrics`` on ``SCORING_METRICS_PORT``).

Every metric is documented in README.md ("Metrics"); the Grafana dashboard in
``deploy/grafana`` may only use the names defined here (a test checks it).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Events and labels, as the workers see them.
CONSUMED = Counter("scoring_messages_consumed_total", "Messages consumed, by topic.", ["topic"])
EVENTS = Counter(
    "scoring_events_total",
    "Events scored, redelivered (their prediction published again), or scored by the API first "
    "(not scored again, nothing published), by topic.",
    ["topic", "outcome"],
)
DEAD_LETTERS = Counter(
    "scoring_dead_letters_total",
    "Dead-letter records published, by source topic and reason.",
    ["topic", "reason"],
)
PREDICTIONS = Counter(
    "scoring_predictions_total", "Predictions published, by model and arm (live, canary).", ["model", "arm"]
)
OUT_OF_ORDER = Counter(
    "scoring_out_of_order_events_total",
    "Valid events older than their entity's latest event (scored with a zero time gap).",
    ["model"],
)
RESCORED = Counter(
    "scoring_rescored_events_total",
    "Events read and scored again: their entity's state changed in Redis between the batch's read "
    "and its record (another worker, an API request, a label folded in).",
    ["model"],
)
LABELS = Counter(
    "scoring_labels_total",
    "Labels consumed, by model and outcome: joined, redelivered, parked, matured (an event learned "
    "with the implicit target, no label consumed), or a dead-letter reason (duplicate_label, "
    "matured_event, unknown_event = orphaned, expired_event, or a validation reason).",
    ["model", "outcome"],
)
LABEL_DELAY = Histogram(
    "scoring_label_delay_seconds",
    "From an event's prediction to its label being joined.",
    ["model"],
    buckets=(1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400),
)
SCORING_LATENCY = Histogram(
    "scoring_score_latency_seconds",
    "From a batch being consumed to its predictions being computed.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
END_TO_END_LATENCY = Histogram(
    "scoring_end_to_end_latency_seconds",
    "From an event's broker timestamp to its prediction being delivered to Kafka.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SECONDS = Histogram(
    "scoring_batch_seconds", "Time to process one batch, publishing included.", ["topic"]
)
ASSIGNED_PARTITIONS = Gauge(
    "scoring_assigned_partitions",
    "Input topic partitions assigned to this worker's consumer (0 until it has joined its group).",
)
RETRIES = Counter(
    "scoring_retries_total",
    "Batches retried after a Redis or Kafka error, by topic; learner restarts after an error, by "
    "`learner:<model>`.",
    ["topic", "error"],
)

# Models: the version each worker serves, and what the learner publishes.
SERVED_VERSION = Gauge(
    "scoring_served_model_version",
    "Sequence number of the model version this worker scores with (version `<model>.<n>`), by arm: "
    "live, and canary while one serves.",
    ["model", "arm"],
)
PUBLISHED_VERSION = Gauge(
    "scoring_published_model_version",
    "Sequence number of the latest version this worker's learner published.",
    ["model"],
)
PUBLICATIONS = Counter(
    "scoring_model_publications_total",
    "Model versions published, by reason (bootstrap, learned, promotion).",
    ["model", "reason"],
)
LEARNER_LEADER = Gauge(
    "scoring_learner_leader", "1 while this worker holds the learner lease of the model.", ["model"]
)
LABELS_LEARNED = Gauge(
    "scoring_model_labels_learned",
    "Labels the learner's model has learned, by role (champion, challenger).",
    ["model", "role"],
)
LEARNER_LABELS = Gauge(
    "scoring_learner_labels_learned",
    "Labels the learner has learned since the model was first published (it resumes from its checkpoint).",
    ["model"],
)
PREQUENTIAL = Gauge(
    "scoring_prequential_metric",
    "Prequential quality by role: `served` scores the predictions as published (ROC AUC for fraud, MAE "
    "for demand); `champion` and `challenger` their predictions just before learning each label, since "
    "their contest last started over (NaN until it has judged a label: the challenger's warm-up).",
    ["model", "role", "pipeline", "metric"],
)
PROMOTION_STATISTIC = Gauge(
    "scoring_promotion_statistic",
    "Evidence that the challenger beats the champion (promoted when it reaches the threshold).",
    ["model", "challenger"],
)
LEARNER_LAG = Gauge(
    "scoring_learner_lag_seconds",
    "Stream time between the newest journal entry and the last one the learner processed.",
    ["model"],
)
CHECKPOINT_AGE = Gauge(
    "scoring_checkpoint_age_seconds",
    "Seconds the leading learner's state has gone without a checkpoint (at most about the publish "
    "period while healthy).",
    ["model"],
)

# Release: the gate before a version goes live, the watch after.
GATE_DECISIONS = Counter(
    "scoring_gate_decisions_total",
    "The gate's decisions on candidate versions, by model and decision (passed, held, waiting).",
    ["model", "decision"],
)
GATE_LOSS_RATIO = Gauge(
    "scoring_gate_loss_ratio",
    "The last candidate's mean loss over the live version's, on the gate's evidence (passes up to "
    "1 + SCORING_GATE_TOLERANCE).",
    ["model"],
)
WATCH_STATISTIC = Gauge(
    "scoring_watch_statistic",
    "Evidence that the versions served since the watch's reference are worse than it (rolled back "
    "at scoring_watch_threshold).",
    ["model"],
)
WATCH_THRESHOLD = Gauge(
    "scoring_watch_threshold", "Value of scoring_watch_statistic at which the watch rolls back.", ["model"]
)
ROLLBACKS = Counter(
    "scoring_rollbacks_total", "Live versions rolled back by the learner's watch, by model.", ["model"]
)
CANARY_LOSS = Gauge(
    "scoring_canary_loss",
    "Mean loss on the labels of the events the canary served: the canary's (arm=canary) and the live "
    "version's on the same features (arm=live); NaN while no canary serves.",
    ["model", "arm"],
)
CANARY_STATISTIC = Gauge(
    "scoring_canary_statistic",
    "Evidence that the canary is worse than the live version (rolled back at scoring_watch_threshold).",
    ["model"],
)
CANARY_OUTCOMES = Counter(
    "scoring_canary_outcomes_total",
    "Canaries concluded, by model and outcome (promoted, rolled_back).",
    ["model", "outcome"],
)

# Quality estimated before labels arrive (classification): models/drift/estimate.py.
ESTIMATED = Gauge(
    "scoring_estimated_metric",
    "Quality of the served scores estimated from the scores alone (CBPE) over the last "
    "SCORING_ESTIMATE_WINDOW scored events: roc_auc, and precision and recall at SCORING_ESTIMATE_THRESHOLD.",
    ["model", "metric"],
)
REALIZED = Gauge(
    "scoring_realized_metric",
    "The same metrics realized on the last SCORING_ESTIMATE_WINDOW labels (the scores they were served).",
    ["model", "metric"],
)
CALIBRATION_ERROR = Gauge(
    "scoring_calibration_error",
    "Expected calibration error of the served scores on the last SCORING_ESTIMATE_WINDOW labels.",
    ["model"],
)
ESTIMATE_VALID = Gauge(
    "scoring_estimate_valid",
    "1 while the quality estimate is valid (calibration error within its bound, enough expected positives).",
    ["model"],
)

# Monitoring.
DRIFT_STATISTIC = Gauge(
    "scoring_drift_statistic",
    "Current statistic of each drift detector ('' feature for model-wide detectors).",
    ["model", "kind", "detector", "feature"],
)
DRIFT_THRESHOLD = Gauge(
    "scoring_drift_threshold",
    "Value of scoring_drift_statistic at which the detector opens an alert.",
    ["model", "kind", "detector", "feature"],
)
OPEN_ALERTS = Gauge("scoring_open_alerts", "Alerts open now, by model and kind.", ["model", "kind"])
ALERT_CHANGES = Counter(
    "scoring_alert_changes_total",
    "Alert changes published to alerts.drift, by model, kind and state (open, update, resolve).",
    ["model", "kind", "state"],
)
