"""An audit of a deployment from its output topics, as a downstream team would see it.

It reads the prediction, dead-letter and label topics from the beginning and answers:
which event ids got predictions (and how many messages each), which inputs were
dead-lettered and why, and how good the predictions were once their labels arrived.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from consumers.quality import WINDOW, QualityReport, QualityTracker
from consumers.reader import read
from stream.records import DeadLetter, Label, Prediction
from stream.settings import Settings
from stream.usecases import DEADLETTER_TOPIC, USE_CASES

TOPICS = (
    *(uc.prediction_topic for uc in USE_CASES),
    DEADLETTER_TOPIC,
    *(uc.label_topic for uc in USE_CASES),
)
_LABELLED = {uc.label_type: uc for uc in USE_CASES}


@dataclass(frozen=True)
class Audit:
    """What the output topics say.

    Attributes
    ----------
    predictions
        Prediction messages per event id (more than one: a redelivery).
    dead_letters
        Dead-letter records per reason.
    quality
        Predictions joined with their labels.
    invalid
        Messages on these topics that do not match the record contract, per topic.
    """

    predictions: Counter[str]
    dead_letters: Counter[str]
    quality: QualityReport
    invalid: Counter[str] = field(default_factory=Counter)

    def format(self) -> str:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.dead_letters.items()))
        return "\n".join(
            [
                f"predictions: {sum(self.predictions.values())} messages"
                f" for {len(self.predictions)} distinct event ids",
                f"dead letters: {sum(self.dead_letters.values())} ({reasons or 'none'})",
                "",
                self.quality.format(),
            ]
        )


def audit(settings: Settings, *, idle_timeout: float = 3.0, early: int = WINDOW) -> Audit:
    """Read the output and label topics of ``settings`` until idle, and tally them."""
    tracker = QualityTracker()
    predictions: Counter[str] = Counter()
    dead_letters: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    for delivered in read(settings, TOPICS, idle_timeout=idle_timeout):
        record = delivered.parse()
        if isinstance(record, Prediction):
            predictions[record.event_id] += 1
            tracker.add_prediction(record)
        elif isinstance(record, DeadLetter):
            dead_letters[record.reason] += 1
        elif isinstance(record, Label):
            tracker.add_label(record.event_id, _LABELLED[type(record)].target(record))
        else:
            invalid[delivered.topic] += 1
    return Audit(predictions, dead_letters, tracker.report(early), invalid)
