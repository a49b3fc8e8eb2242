"""The use cases the service scores: each binds records, an entity, features and a model.

A use case is data, not code: adding one means declaring its records, its feature
function and a model, then one more :class:`UseCase` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from stream import features
from stream.records import Record, Sale, SaleLabel, Transaction, TransactionLabel

E = TypeVar("E", bound=Record)
L = TypeVar("L", bound=Record)


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
        The entity whose state an event reads and updates; also the prediction's key,
        so that one entity's predictions keep their order.
    target
        The value a label teaches the model.
    """

    name: str
    task: Literal["classification", "regression"]
    event_topic: str
    label_topic: str
    prediction_topic: str
    event_type: type[E]
    label_type: type[L]
    entity: Callable[[E], str]
    observe: Callable[[E], features.Observation]
    features: Callable[[E, features.Prior], features.Features]
    target: Callable[[L], Any]

    @property
    def output_field(self) -> Literal["score", "forecast"]:
        return "score" if self.task == "classification" else "forecast"


FRAUD: UseCase[Transaction, TransactionLabel] = UseCase(
    name="fraud",
    task="classification",
    event_topic="transactions",
    label_topic="transactions.labels",
    prediction_topic="predictions.fraud",
    event_type=Transaction,
    label_type=TransactionLabel,
    entity=lambda tx: tx.account_id,
    observe=features.transaction_observation,
    features=features.transaction_features,
    target=lambda label: label.is_fraud,
)

DEMAND: UseCase[Sale, SaleLabel] = UseCase(
    name="demand",
    task="regression",
    event_topic="sales",
    label_topic="sales.labels",
    prediction_topic="predictions.demand",
    event_type=Sale,
    label_type=SaleLabel,
    entity=lambda sale: f"{sale.store_id}:{sale.product_id}",
    observe=features.sale_observation,
    features=features.sale_features,
    target=lambda label: label.units_sold,
)

USE_CASES: tuple[UseCase[Any, Any], ...] = (FRAUD, DEMAND)

DEADLETTER_TOPIC = "deadletter"
ALERTS_TOPIC = "alerts.drift"


def all_topics() -> list[str]:
    """Every logical topic of the contract."""
    names = [t for uc in USE_CASES for t in (uc.event_topic, uc.label_topic, uc.prediction_topic)]
    return [*names, ALERTS_TOPIC, DEADLETTER_TOPIC]
