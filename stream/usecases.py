"""The use cases the service scores: each one declared once, here.

A declaration names everything about a use case that the runtime, the tools and
``consumers/`` need: its topics, records, learning task, entity, features, target, the
pipelines it serves and challenges with by default, and the features its drift monitor
leaves alone. Nothing else repeats those names: adding a use case means declaring its
records and features, then one more :class:`UseCase` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from models.pipelines import Task
from stream import features
from stream.records import Label, OutputField, Record, Sale, SaleLabel, Transaction, TransactionLabel

E = TypeVar("E", bound=Record)
L = TypeVar("L", bound=Label)


@dataclass(frozen=True)
class UseCase(Generic[E, L]):
    """How events of one kind become predictions, and labels become learning.

    Attributes
    ----------
    name
        Model name, as published in predictions, and Redis key space.
    task
        ``classification`` publishes a ``score`` in [0, 1]; ``regression`` a ``forecast`` >= 0.
    entity
        The ids naming the entity whose state an event reads and updates (an account; a
        product at a store). Ids are data: the runtime encodes them before they enter a
        key. Joined by ``:`` (:func:`entity_name`) they are the prediction's ``entity``
        and key, so that one entity's predictions keep their order.
    target
        The value a label teaches the model.
    champion, challenger
        Pipelines (names in :data:`models.pipelines.CANDIDATES` for the task) served at first
        and learning in shadow; ``SCORING_CHAMPIONS`` / ``SCORING_CHALLENGERS`` override them.
    drift_exempt
        Features the drift monitor does not watch for data drift, because they move by
        construction on a stationary stream: the clock and the calendar (a window shorter
        than a day or a week sees only part of the cycle), how much history an entity has
        (it grows as entities age), the time since an entity's last event (it follows the
        daily cycle of activity).
    """

    name: str
    task: Task
    event_topic: str
    label_topic: str
    prediction_topic: str
    event_type: type[E]
    label_type: type[L]
    entity: Callable[[E], tuple[str, ...]]
    observe: Callable[[E], features.Observation]
    features: Callable[[E, features.Prior], features.Features]
    target: Callable[[L], Any]
    champion: str
    challenger: str | None
    drift_exempt: frozenset[str] = frozenset()

    @property
    def output_field(self) -> OutputField:
        return "score" if self.task == "classification" else "forecast"


FRAUD: UseCase[Transaction, TransactionLabel] = UseCase(
    name="fraud",
    task="classification",
    event_topic="transactions",
    label_topic="transactions.labels",
    prediction_topic="predictions.fraud",
    event_type=Transaction,
    label_type=TransactionLabel,
    entity=lambda tx: (tx.account_id,),
    observe=features.transaction_observation,
    features=features.transaction_features,
    target=lambda label: label.is_fraud,
    champion="logistic_regression_adam",
    challenger="hoeffding_tree_mc",
    drift_exempt=frozenset({"hour_sin", "hour_cos", "history_log_n", "log_gap_seconds"}),
)

DEMAND: UseCase[Sale, SaleLabel] = UseCase(
    name="demand",
    task="regression",
    event_topic="sales",
    label_topic="sales.labels",
    prediction_topic="predictions.demand",
    event_type=Sale,
    label_type=SaleLabel,
    entity=lambda sale: (sale.store_id, sale.product_id),
    observe=features.sale_observation,
    features=features.sale_features,
    target=lambda label: label.units_sold,
    champion="log_linear_regression",
    challenger="target_scaled_linear_regression",
    drift_exempt=frozenset({"dow", "weekend", "recent_units_log_n"}),
)

USE_CASES: tuple[UseCase[Any, Any], ...] = (FRAUD, DEMAND)

DEADLETTER_TOPIC = "deadletter"
ALERTS_TOPIC = "alerts.drift"


def all_topics() -> list[str]:
    """Every logical topic of the contract."""
    names = [t for uc in USE_CASES for t in (uc.event_topic, uc.label_topic, uc.prediction_topic)]
    return [*names, ALERTS_TOPIC, DEADLETTER_TOPIC]


def use_case(name: str) -> UseCase[Any, Any]:
    """The use case called ``name``."""
    for declared in USE_CASES:
        if declared.name == name:
            return declared
    raise KeyError(f"no use case {name!r} (one of: {', '.join(uc.name for uc in USE_CASES)})")


def entity_name(ids: tuple[str, ...]) -> str:
    """How predictions name an entity: its ids joined by ``:``.

    >>> entity_name(("store-01", "p-0001"))
    'store-01:p-0001'
    """
    return ":".join(ids)
