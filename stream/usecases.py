"""The use cases the service scores: each one declared once.

A use case has two halves. Its *contract* is code, here: its topics, the records on them,
its learning task, the ids naming its entity and the target a label teaches. Its
*declaration* is data (:class:`Declaration`, in ``usecases.toml``): the pipelines it
serves and challenges with, its label policy and its features. A deployment may replace
the declarations by a file of the same shape (``SCORING_USE_CASES_FILE``, see
:func:`declared`) without touching the code; every model version records the
fingerprint of the declaration it was trained with.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.pipelines import CANDIDATES, Task
from stream.features import Categorical, Feature, FeatureSet
from stream.records import Label, OutputField, Record, Sale, SaleLabel, Transaction, TransactionLabel

E = TypeVar("E", bound=Record)
L = TypeVar("L", bound=Label)

IMPLICIT_SOURCE = "implicit"
"""The label source of a target learned because no label came within the maturity window."""


class LabelPolicy(BaseModel):
    """When an event is learned: when its label comes (``explicit``), or also without one.

    Under ``implicit``, an event whose label has not come ``maturity_seconds`` after it was
    scored is learned once with ``implicit_target`` (a card issuer sends chargebacks for
    fraud, nobody sends "this one was fine"); a label that comes later is dead-lettered as
    ``matured_event``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: Literal["explicit", "implicit"] = "explicit"
    maturity_seconds: float | None = Field(default=None, gt=0)
    implicit_target: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> LabelPolicy:
        given = self.maturity_seconds is not None, self.implicit_target is not None
        if self.policy == "implicit" and not all(given):
            raise ValueError("an implicit label policy needs maturity_seconds and implicit_target")
        if self.policy == "explicit" and any(given):
            raise ValueError("maturity_seconds and implicit_target apply to the implicit policy only")
        return self


class Declaration(BaseModel):
    """The data half of a use case: pipelines, label policy, features (see ``usecases.toml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    intended_use: str = ""
    """What the model is for and not for, in a sentence or two: the first line of its model cards."""
    champion: str
    challenger: str | None = None
    decay: float = Field(default=0.1, gt=0, le=1)
    labels: LabelPolicy = LabelPolicy()
    features: dict[str, Feature] = Field(min_length=1)

    @property
    def fingerprint(self) -> str:
        """Hash of what decides a model's inputs and targets: features, decay, label policy.

        The pipelines are left out: a version trained under another champion serves the
        same features.
        """
        meaning = self.model_dump(include={"decay", "labels", "features"})
        return hashlib.sha256(orjson.dumps(meaning, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(frozen=True)
class UseCase(Generic[E, L]):
    """How events of one kind become predictions, and labels become learning.

    Attributes
    ----------
    name
        Model name, as published in predictions, and Redis key space.
    task
        ``classification`` publishes a ``score`` in [0, 1]; ``regression`` a ``forecast`` >= 0.
    entity_fields, entity
        The fields of the event whose ids name the entity whose state an event reads and
        updates (an account; a product at a store), and the function giving an event's ids.
        Ids are data: the runtime encodes them before they enter a key. Joined by ``:``
        (:func:`entity_name`) they are the prediction's ``entity`` and key, so that one
        entity's predictions keep their order.
    target
        The value a label teaches the model.
    declaration, features
        The declaration, and its features compiled against ``event_type``.
    """

    name: str
    task: Task
    event_topic: str
    label_topic: str
    prediction_topic: str
    event_type: type[E]
    label_type: type[L]
    entity_fields: tuple[str, ...]
    entity: Callable[[E], tuple[str, ...]]
    target: Callable[[L], Any]
    declaration: Declaration
    features: FeatureSet

    @property
    def output_field(self) -> OutputField:
        return "score" if self.task == "classification" else "forecast"

    @property
    def label_field(self) -> str:
        """The label record's one field besides ``event_id`` (a history's label column).

        >>> FRAUD.label_field, DEMAND.label_field
        ('is_fraud', 'units_sold')
        """
        (name,) = (name for name in self.label_type.model_fields if name != "event_id")
        return name

    @property
    def champion(self) -> str:
        return self.declaration.champion

    @property
    def challenger(self) -> str | None:
        return self.declaration.challenger

    @property
    def labels(self) -> LabelPolicy:
        return self.declaration.labels

    @property
    def fingerprint(self) -> str:
        return self.declaration.fingerprint

    @property
    def personal_in_clear(self) -> list[tuple[str, str]]:
        """(feature, field) of each feature that would carry a personal field's value in clear:
        a ``categorical`` on a field naming the entity, or on one a ``new_value`` feature
        remembers. With ``SCORING_PII_KEY`` set those fields reach Redis only as keyed hashes,
        which a category is not: such a declaration is refused (:class:`stream.settings.Settings`).

        >>> FRAUD.personal_in_clear
        []
        >>> FRAUD.declare({**FRAUD.declaration.model_dump(),
        ...     "features": {"account": {"kind": "categorical", "field": "account_id"}}}).personal_in_clear
        [('account', 'account_id')]
        """
        personal = {*self.entity_fields, *self.features.members}
        return [
            (name, f.field)
            for name, f in self.declaration.features.items()
            if isinstance(f, Categorical) and f.field in personal
        ]

    def declare(self, table: Mapping[str, Any]) -> UseCase[E, L]:
        """This use case with the declaration ``table``, validated (:class:`ValueError` if not)."""
        declaration, features = _compiled(self.task, self.event_type, table)
        return replace(self, declaration=declaration, features=features)


def _compiled(
    task: Task, event_type: type[Record], table: Mapping[str, Any]
) -> tuple[Declaration, FeatureSet]:
    """A declaration table, validated for a use case's task and events, and its features compiled."""
    declaration = Declaration.model_validate(table)
    known = CANDIDATES[task]
    for pipeline in (declaration.champion, declaration.challenger):
        if pipeline is not None and pipeline not in known:
            raise ValueError(f'unknown pipeline "{pipeline}" (one of: {", ".join(known)})')
    return declaration, FeatureSet.of_record(event_type, declaration.features, declaration.decay)


def _contract(
    name: str,
    task: Task,
    event_type: type[E],
    label_type: type[L],
    entity: tuple[str, ...],
    target: Callable[[L], Any],
    topic: str,
) -> UseCase[E, L]:
    """A use case's contract, declared by ``usecases.toml``'s table of its name; ``entity``: the
    fields naming its entity."""
    declaration, features = _compiled(task, event_type, _BUILT_IN[name])
    return UseCase(
        name,
        task,
        event_topic=topic,
        label_topic=f"{topic}.labels",
        prediction_topic=f"predictions.{name}",
        event_type=event_type,
        label_type=label_type,
        entity_fields=entity,
        entity=_ids_of(entity),
        target=target,
        declaration=declaration,
        features=features,
    )


def _ids_of(fields: tuple[str, ...]) -> Callable[[Any], tuple[str, ...]]:
    """The function giving an event's values of ``fields``, as a tuple."""
    get: Callable[[Any], Any] = operator.attrgetter(*fields)  # several fields: a tuple already
    return get if len(fields) > 1 else lambda event: (get(event),)


_BUILT_IN: dict[str, Any] = tomllib.loads(resources.files("stream").joinpath("usecases.toml").read_text())

FRAUD: UseCase[Transaction, TransactionLabel] = _contract(
    "fraud",
    "classification",
    Transaction,
    TransactionLabel,
    entity=("account_id",),
    target=lambda label: label.is_fraud,
    topic="transactions",
)

DEMAND: UseCase[Sale, SaleLabel] = _contract(
    "demand",
    "regression",
    Sale,
    SaleLabel,
    entity=("store_id", "product_id"),
    target=lambda label: label.units_sold,
    topic="sales",
)

USE_CASES: tuple[UseCase[Any, Any], ...] = (FRAUD, DEMAND)
"""The use cases with their built-in declarations."""


class DeclarationError(ValueError):
    """A declaration file that cannot be used: every problem, one per line."""


@functools.cache
def declared(path: str) -> tuple[UseCase[Any, Any], ...]:
    """The use cases as the declaration file at ``path`` declares them (``""``: the built-in).

    A use case the file declares takes the file's declaration as a whole; the others keep
    the built-in one. Read once per process: a deployment's declarations do not change
    while it runs.
    """
    if not path:
        return USE_CASES
    try:
        tables = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DeclarationError(f"{path}: {exc}") from None
    unknown = set(tables) - {uc.name for uc in USE_CASES}
    if unknown:
        known = ", ".join(uc.name for uc in USE_CASES)
        raise DeclarationError(f"{path}: unknown use case {', '.join(sorted(unknown))} (one of: {known})")
    problems, use_cases = [], []
    for use_case in USE_CASES:
        if use_case.name not in tables:
            use_cases.append(use_case)
            continue
        try:
            use_cases.append(use_case.declare(tables[use_case.name]))
        except ValidationError as refused:
            problems += [
                f"{path}: {use_case.name}.{_where(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in refused.errors()
            ]
        except ValueError as exc:
            problems.append(f"{path}: {use_case.name}: {exc}")
    if problems:
        raise DeclarationError("\n".join(problems))
    return tuple(use_cases)


def _where(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc) or "declaration"


DEADLETTER_TOPIC = "deadletter"
ALERTS_TOPIC = "alerts.drift"
AUDIT_TOPIC = "audit"


def all_topics() -> list[str]:
    """Every logical topic of the contract."""
    names = [t for uc in USE_CASES for t in (uc.event_topic, uc.label_topic, uc.prediction_topic)]
    return [*names, ALERTS_TOPIC, DEADLETTER_TOPIC, AUDIT_TOPIC]


def use_case(name: str, use_cases: Sequence[UseCase[Any, Any]] = USE_CASES) -> UseCase[Any, Any]:
    """The use case called ``name`` (among ``use_cases``)."""
    for candidate in use_cases:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no use case {name!r} (one of: {', '.join(uc.name for uc in use_cases)})")


def entity_name(ids: tuple[str, ...]) -> str:
    """How predictions name an entity: its ids joined by ``:``.

    >>> entity_name(("store-01", "p-0001"))
    'store-01:p-0001'
    """
    return ":".join(ids)
