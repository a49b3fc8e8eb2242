"""A seeded, realistic stream of transaction and sale events, their delayed labels and junk.

Two use cases share one time-ordered stream:

* **Fraud** (``transactions``): ~2,000 accounts with a home country and currency, a handful
  of usual merchants, a typical (lognormal) amount and a channel mix; legitimate spending
  follows those habits during the day. About 2.5% of transactions are fraud, arriving in
  bursts on a compromised account. Bursts start spread evenly over the stream, not at
  random (0.5-1.5 starts are expected between two), so that every 400 consecutive
  transactions hold fraud, whatever the hour. Before the drift point fraud is
  *card-not-present abroad*: foreign country and currency, online or ATM, 4-15x the usual
  amount, often at a few risky merchants, mostly at night (UTC; half of it is a floor share
  of every hour's transactions, ~2% by day, the other half comes at night, 10-25% of the
  night's transactions), 2-6 transactions 30 s-5 min apart. After it the concept flips to
  *domestic card testing*: home country, mostly point of sale, 10-50% of the usual amount,
  at new domestic merchants, at ordinary daytime hours, 4-9 transactions 5-60 s apart; card
  testing comes in volume, so fraud doubles to ~5%.
* **Demand** (``sales``): 20 stores x 108 products in 9 categories. Each sale event is a
  product record at a store for a business day (``sale_date``; the stream covers at least
  60 of them, so weekly seasonality shows), with the chain's data problems (missing
  cost/purchase/expiry dates, cost typos). Its label is the units sold that day: Poisson
  around the product's base rate x store size x weekday (weekend peak) x promotion response
  (``(price / usual price) ** -elasticity``) x a boost for short-dated stock (which is also
  marked down 30%). After the drift point a competitor opens next to half of the stores:
  their base demand halves, and the price elasticity is 1.5x everywhere (promotions matter
  more). A store's own level is not a feature, so a model cannot absorb the change at once.

Labels follow their event after ``label_delay`` seconds. Malformed payloads
(:data:`MALFORMED_KINDS`) can be mixed in; each carries the reason code
:func:`stream.records.parse` must give it. Event timestamps (``ts``) lie in the three days
before ``start``; ~20% are epoch milliseconds, the rest ISO-8601 in UTC.

:func:`write_history` writes the days before that stream as labelled history files (CSV
or Parquet), one per use case, to bootstrap models from: the same world and the concept
the stream starts with, and the data problems of a real export (duplicate rows, bad and
missing values, impossible dates), counted by kind.

Examples
--------
>>> import datetime as dt
>>> config = SimulationConfig(transactions=200, sales=200, malformed_rate=0.05, seed=7)
>>> messages = list(generate(config, start=dt.datetime(2026, 1, 5, tzinfo=dt.UTC)))
>>> sorted(Counter(m.kind for m in messages).items())
[('event', 400), ('label', 400), ('malformed', 20)]
>>> from stream.records import Transaction, parse
>>> event = next(m for m in messages if m.topic == "transactions" and m.kind == "event")
>>> parse(Transaction, event.value).account_id == event.key.decode()
True
>>> all(a.at <= b.at for a, b in zip(messages, messages[1:]))
True
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import heapq
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson

from stream.usecases import DEMAND, FRAUD, UseCase

if TYPE_CHECKING:
    import confluent_kafka

SPAN_SECONDS: Final = 3 * 24 * 3600.0
"""Event time (``ts``) runs over this many seconds before the start."""
MIN_BUSINESS_DAYS: Final = 60
FRAUD_RATE: Final = 0.025
EPOCH_MILLIS_SHARE: Final = 0.2
EXTRA_FIELD_SHARE: Final = 0.05

MALFORMED_KINDS: Final[Mapping[str, str]] = {
    "not_json": "invalid_json",
    "truncated_json": "invalid_json",
    "json_array": "invalid_json",
    "non_utf8": "invalid_json",
    "missing_field": "missing_field",
    "mistyped_field": "bad_type",
    "nan_amount": "out_of_range",
    "absurd_amount": "out_of_range",
    "naive_timestamp": "bad_format",
}
"""Each kind of malformed payload and the reason code :func:`stream.records.parse` gives it."""


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate.

    Parameters
    ----------
    transactions, sales
        Number of valid events of each kind.
    rate
        Events per second of wall time (both kinds and malformed together); 0 sends all at once.
    malformed_rate
        Extra malformed payloads, as a fraction of the valid events (not counted in them).
    drift_at
        Fraction (0..1) of each stream after which the fraud concept and demand response change.
    label_delay
        Range of the uniform wall-clock delay, in seconds, between an event and its label.
    seed
        Everything generated is a function of the seed (and the start time).
    """

    transactions: int = 5000
    sales: int = 5000
    rate: float = 1000.0
    malformed_rate: float = 0.0
    drift_at: float | None = None
    label_delay: tuple[float, float] = (2.0, 6.0)
    seed: int = 0

    def __post_init__(self) -> None:
        low, high = self.label_delay
        if min(self.transactions, self.sales) < 0 or self.rate < 0 or self.malformed_rate < 0:
            raise ValueError("counts and rates must be >= 0")
        if self.drift_at is not None and not 0.0 <= self.drift_at <= 1.0:
            raise ValueError("drift_at must be within [0, 1]")
        if not 0.0 <= low <= high:
            raise ValueError("label_delay must be (low, high) with 0 <= low <= high")


@dataclass(frozen=True, slots=True)
class Message:
    """One payload to produce.

    Attributes
    ----------
    topic
        Logical topic: a use case's event or label topic (:mod:`stream.usecases`).
    key
        Entity key (account, ``store:product``) for events, event id for labels.
    value
        The payload bytes.
    at
        Seconds after the start of sending when the message is due.
    kind
        ``event``, ``label`` or ``malformed``.
    expected_reason
        For malformed payloads, the reason code the service must reject them with.
    """

    topic: str
    key: bytes | None
    value: bytes
    at: float
    kind: str
    expected_reason: str | None = None


@dataclass(frozen=True)
class SendStats:
    """What :func:`send` produced: messages by ``(topic, kind)``, failed deliveries, duration."""

    counts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    failed: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_topic(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (topic, _), n in self.counts.items():
            out[topic] += n
        return dict(out)

    def by_kind(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, kind), n in self.counts.items():
            out[kind] += n
        return dict(out)


# --------------------------------------------------------------------------- the world

# (country, currency, weight as a home country); weight 0: only ever seen abroad.
_COUNTRIES: Final = (
    ("US", "USD", 30), ("GB", "GBP", 12), ("DE", "EUR", 12), ("FR", "EUR", 10),
    ("ES", "EUR", 6), ("IT", "EUR", 6), ("NL", "EUR", 4), ("CA", "CAD", 6), ("AU", "AUD", 4),
    ("JP", "JPY", 3), ("CH", "CHF", 2), ("SE", "SEK", 2), ("BR", "BRL", 2), ("MX", "MXN", 1),
    ("NG", "NGN", 0), ("RO", "RON", 0), ("VN", "VND", 0), ("TR", "TRY", 0),
)  # fmt: skip
_N_ACCOUNTS: Final = 2000
_RISKY_PER_COUNTRY: Final = 3  # the first merchants of each country: where fraud cashes out
# Relative activity by UTC hour: legitimate spending by day, old-concept fraud by night.
_LEGIT_HOURS: Final = (
    0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.4, 0.7, 1.0, 1.1, 1.2, 1.3,
    1.4, 1.3, 1.2, 1.2, 1.3, 1.4, 1.4, 1.3, 1.1, 0.8, 0.5, 0.3,
)  # fmt: skip
_NIGHT_HOURS: Final = tuple(1.0 if h < 5 else 0.6 if h in (5, 6, 22, 23) else 0.3 for h in range(24))
# Of the old concept's fraud, this share is spread over every hour in proportion to legitimate
# activity (a floor of fraud in every hour); the rest follows _NIGHT_HOURS.
_FRAUD_FLOOR: Final = 0.5
_BURST_SPACING: Final = (0.5, 1.5)  # burst starts are this many expected starts apart
_OLD_BURST: Final = (2, 6)
_NEW_BURST: Final = (4, 9)

# (category, shelf life in days or None, price range, base units a day, price elasticity, items)
_Category = tuple[str, int | None, tuple[float, float], float, float, tuple[str, ...]]
_CATEGORIES: Final[tuple[_Category, ...]] = (
    ("dairy", 10, (0.9, 4.5), 9.0, 1.5,
     ("Whole Milk 1L", "Greek Yogurt 500g", "Cheddar 400g", "Butter 250g", "Eggs x6",
      "Cream 300ml")),
    ("bakery", 3, (0.8, 3.5), 8.0, 1.2,
     ("White Loaf", "Wholemeal Loaf", "Croissants x4", "Bagels x5", "Baguette", "Muffins x4")),
    ("produce", 7, (0.5, 4.0), 12.0, 1.6,
     ("Bananas 1kg", "Apples x6", "Tomatoes 500g", "Carrots 1kg", "Lettuce", "Strawberries 400g")),
    ("meat", 5, (3.0, 15.0), 4.0, 1.8,
     ("Chicken Breast 500g", "Beef Mince 500g", "Pork Chops x2", "Sausages x8", "Bacon 200g",
      "Lamb Leg 1kg")),
    ("frozen", 180, (1.5, 7.0), 4.0, 1.7,
     ("Peas 1kg", "Pizza Margherita", "Fish Fingers x10", "Ice Cream 1L", "Chips 1.5kg",
      "Mixed Berries 500g")),
    ("beverages", 270, (0.6, 6.0), 7.0, 2.0,
     ("Cola 2L", "Orange Juice 1L", "Sparkling Water 6x500ml", "Ground Coffee 250g",
      "Tea Bags x80", "Lager 4x440ml")),
    ("snacks", 120, (0.8, 4.0), 6.0, 2.2,
     ("Crisps 150g", "Chocolate Bar 100g", "Salted Nuts 200g", "Biscuits 300g", "Popcorn 100g",
      "Cereal Bars x6")),
    ("pantry", 365, (0.7, 5.0), 5.0, 1.3,
     ("Pasta 500g", "Rice 1kg", "Chopped Tomatoes 400g", "Olive Oil 500ml", "Baked Beans 415g",
      "Flour 1.5kg")),
    ("household", None, (1.5, 9.0), 3.0, 1.6,
     ("Washing-Up Liquid", "Toilet Roll x9", "Laundry Pods x30", "Kitchen Towel x2",
      "Bin Bags x20", "Surface Spray")),
)  # fmt: skip
_BRANDS: Final = ("FreshWay", "Select")
_N_STORES: Final = 20
_PROMO_SHARE: Final = 0.08  # of products on promotion (chain-wide) on a given day
_WEEKDAY: Final = (0.85, 0.8, 0.85, 0.95, 1.1, 1.5, 1.3)  # Monday first
_SHORT_DATED_BOOST: Final = 1.3
_DRIFT_LEVEL: Final = 0.5  # base demand of the stores next to the competitor, after the drift
_DRIFT_ELASTICITY: Final = 1.5
_DRIFT_FRAUD: Final = 2.0  # fraud share after the drift, relative to FRAUD_RATE


@dataclass(frozen=True, slots=True)
class _Account:
    id: str
    key: bytes
    country: str
    currency: str
    merchants: tuple[str, ...]
    typical: float
    pos: float  # cumulative channel thresholds: pos below this, online below the next, else atm
    online: float


@dataclass(frozen=True, slots=True)
class _Product:
    id: str
    name: str
    category: str
    price: float
    shelf_life: int | None
    rate: float
    elasticity: float


@dataclass(frozen=True)
class _World:
    accounts: tuple[_Account, ...]
    merchants: Mapping[str, tuple[str, ...]]  # by country; the first few are risky
    currency: Mapping[str, str]
    foreign: Mapping[str, tuple[str, ...]]  # countries other than each home country
    stores: tuple[tuple[str, float], ...]  # id, size
    products: tuple[_Product, ...]


def _world(seed: int) -> _World:
    rng = random.Random(f"{seed}:world")
    countries = [c for c, _, _ in _COUNTRIES]
    merchants: dict[str, tuple[str, ...]] = {}
    serial = 0
    for country, _, weight in _COUNTRIES:
        size = _RISKY_PER_COUNTRY + max(8, 10 * weight)
        merchants[country] = tuple(f"m-{serial + i:05d}" for i in range(size))
        serial += size
    homes = rng.choices(_COUNTRIES, weights=[w for _, _, w in _COUNTRIES], k=_N_ACCOUNTS)
    accounts: list[_Account] = []
    for i, (country, currency, _) in enumerate(homes):
        usual = rng.sample(merchants[country][_RISKY_PER_COUNTRY:], rng.randint(3, 8))
        pos = rng.uniform(0.45, 0.85)
        atm = rng.uniform(0.03, 0.12)
        account_id = f"acc-{i:05d}"
        accounts.append(
            _Account(
                account_id, account_id.encode(), country, currency, tuple(usual),
                rng.lognormvariate(3.4, 0.7), pos, 1.0 - atm,
            )
        )  # fmt: skip
    products: list[_Product] = []
    for category, shelf, (low, high), rate, elasticity, items in _CATEGORIES:
        middle = (low + high) / 2
        for item in items:
            for brand in _BRANDS:
                price = max(0.29, round(rng.uniform(low, high), 1) - 0.01)
                popularity = rng.lognormvariate(0.0, 0.5) * math.sqrt(middle / price)
                products.append(
                    _Product(
                        f"p-{len(products) + 1:04d}", f"{brand} {item}", category, price, shelf,
                        rate * popularity, elasticity * rng.uniform(0.8, 1.2),
                    )
                )  # fmt: skip
    stores = tuple(
        (f"store-{i + 1:02d}", min(2.0, max(0.5, rng.lognormvariate(0.0, 0.35)))) for i in range(_N_STORES)
    )
    return _World(
        accounts=tuple(accounts),
        merchants=merchants,
        currency={c: cur for c, cur, _ in _COUNTRIES},
        foreign={c: tuple(o for o in countries if o != c) for c in countries},
        stores=stores,
        products=tuple(products),
    )


# --------------------------------------------------------------------------- helpers


class _DiurnalClock:
    """Maps a fraction of the stream onto event time, denser in the busy hours of the day."""

    def __init__(self, begin: float, end: float, hourly: tuple[float, ...]) -> None:
        self._starts: list[float] = []
        self._weights: list[float] = []
        self._cumulative: list[float] = []
        total, t = 0.0, begin
        while t < end:
            boundary = min(end, (math.floor(t / 3600.0) + 1) * 3600.0)
            weight = hourly[int(t // 3600) % 24]
            self._starts.append(t)
            self._weights.append(weight)
            self._cumulative.append(total)
            total += weight * (boundary - t)
            t = boundary
        self._total = total

    def at(self, fraction: float) -> float:
        target = fraction * self._total
        i = bisect.bisect_right(self._cumulative, target) - 1
        return self._starts[i] + (target - self._cumulative[i]) / self._weights[i]


def _timestamp(rng: random.Random, t: float) -> dt.datetime | int:
    """``ts`` as epoch milliseconds for some events, an aware UTC datetime for the rest."""
    if rng.random() < EPOCH_MILLIS_SHARE:
        return int(t * 1000)
    return dt.datetime.fromtimestamp(round(t, 3), dt.UTC)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30.0:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _drift_index(drift_at: float | None, n: int) -> int:
    return n if drift_at is None else math.ceil(drift_at * n)


@dataclass(frozen=True)
class _Stretch:
    """Which events a generator makes: how many, over which event time, under which concept.

    Attributes
    ----------
    n
        Number of events.
    end, seconds
        Event time (``ts``) runs over the ``seconds`` before ``end``.
    drift_n
        Events from this index on follow the drifted concept (``n``: none does).
    history
        Events of a history file: random draws and event ids of their own, so that they
        are not a replay of the live stream's.
    """

    n: int
    end: float
    seconds: float
    drift_n: int
    history: bool = False

    def rng(self, seed: int, what: str) -> random.Random:
        return random.Random(f"{seed}:{what}:history" if self.history else f"{seed}:{what}")

    def event_id(self, prefix: str, seed: int, n: int) -> str:
        return f"{prefix}-{seed}-h{n}" if self.history else f"{prefix}-{seed}-{n}"


def _extra_fields(rng: random.Random, payload: dict[str, Any], n: int) -> None:
    """Unknown fields some producers add: valid, to be ignored."""
    if rng.random() < EXTRA_FIELD_SHARE:
        payload["source"] = rng.choice(("gateway-v2", "legacy-etl", "mobile"))
        payload["ingest_seq"] = n


# --------------------------------------------------------------------------- transactions

_Labelled = tuple[bytes, dict[str, Any], Any]  # key, event payload, label value


def _transactions(seed: int, world: _World, stretch: _Stretch) -> Iterator[_Labelled]:
    rng = stretch.rng(seed, "transactions")
    n_total, drift_n = stretch.n, stretch.drift_n
    clock = _DiurnalClock(stretch.end - stretch.seconds, stretch.end, _LEGIT_HOURS)
    # Burst starts expected per fresh slot, so that ~FRAUD_RATE of all are fraud: for the old
    # concept a floor share of every hour's transactions plus an excess at night, flat for
    # the new one.
    old_mean, new_mean = sum(_OLD_BURST) / 2, sum(_NEW_BURST) / 2
    night = sum(_LEGIT_HOURS) / sum(_NIGHT_HOURS)
    p_old = [
        FRAUD_RATE / old_mean * (_FRAUD_FLOOR + (1 - _FRAUD_FLOOR) * f / legit * night)
        for f, legit in zip(_NIGHT_HOURS, _LEGIT_HOURS, strict=True)
    ]
    p_new = _DRIFT_FRAUD * FRAUD_RATE / new_mean
    # A burst starts once the starts expected since the previous one reach a draw from
    # _BURST_SPACING, not on a coin flip per slot: as frequent on average, but never more
    # than 1.5 expected starts apart (355 transactions at the hour with the least fraud), so
    # that every stretch of 400 transactions holds fraud, whatever the start hour.
    expected, next_burst = 0.0, rng.uniform(*_BURST_SPACING)
    accounts, merchants = world.accounts, world.merchants
    last_ts = [0.0] * len(accounts)
    bursts: list[tuple[float, int, int, int, bool]] = []  # due, seq, account, left, new concept
    for n in range(n_total):
        t = clock.at((n + rng.random()) / n_total)
        if bursts and bursts[0][0] <= t:
            due, _, a, left, new = heapq.heappop(bursts)
            t, fraud = max(due, last_ts[a]), True
        else:
            new = n >= drift_n
            a = rng.randrange(len(accounts))
            expected += p_new if new else p_old[int(t // 3600) % 24]
            fraud = expected >= next_burst
            if fraud:
                expected -= next_burst
                next_burst = rng.uniform(*_BURST_SPACING)
                low, high = _NEW_BURST if new else _OLD_BURST
                left = rng.randint(low, high)
        account = accounts[a]
        t = max(t, last_ts[a])
        last_ts[a] = t
        country, currency = account.country, account.currency
        if fraud:
            left -= 1
            if left > 0:
                gap = rng.uniform(5.0, 60.0) if new else rng.uniform(30.0, 300.0)
                heapq.heappush(bursts, (t + gap, n, a, left, new))
            if new:  # domestic card testing: small, point of sale, new local merchants
                channel = "pos" if rng.random() < 0.85 else "online"
                merchant = rng.choice(merchants[country][_RISKY_PER_COUNTRY:])
                while merchant in account.merchants:
                    merchant = rng.choice(merchants[country][_RISKY_PER_COUNTRY:])
                amount = account.typical * rng.uniform(0.1, 0.5)
            else:  # card-not-present abroad: big, online or cash, risky merchants, at night
                if rng.random() < 0.9:
                    country = rng.choice(world.foreign[country])
                    currency = world.currency[country]
                channel = "online" if rng.random() < 0.7 else "atm"
                pool = merchants[country]
                merchant = rng.choice(pool[:_RISKY_PER_COUNTRY] if rng.random() < 0.6 else pool)
                amount = account.typical * rng.uniform(4.0, 15.0)
        else:
            u = rng.random()
            channel = "pos" if u < account.pos else "online" if u < account.online else "atm"
            if rng.random() < 0.02:  # travelling
                country = rng.choice(world.foreign[country])
                currency = world.currency[country]
                merchant = rng.choice(merchants[country][_RISKY_PER_COUNTRY:])
            elif rng.random() < 0.85:
                merchant = rng.choice(account.merchants)
            else:
                merchant = rng.choice(merchants[country][_RISKY_PER_COUNTRY:])
            amount = account.typical * rng.lognormvariate(0.0, 0.5)
        amount = max(20.0, round(amount / 20.0) * 20.0) if channel == "atm" else max(0.5, amount)
        payload: dict[str, Any] = {
            "event_id": stretch.event_id("tx", seed, n),
            "ts": _timestamp(rng, t),
            "account_id": account.id,
            "merchant_id": merchant,
            "amount": min(round(amount, 2), 250_000.0),
            "currency": currency,
            "channel": channel,
            "country": country,
        }
        _extra_fields(rng, payload, n)
        yield account.key, payload, fraud


# --------------------------------------------------------------------------- sales


def _live_sale_days(world: _World, n_sales: int, start: float) -> tuple[dt.date, int]:
    """The first business day (``sale_date``) of the live stream's sales, and how many there are.

    The days end the day before ``start``; there are enough for every sale to be a distinct
    store-product pair of its day, and at least :data:`MIN_BUSINESS_DAYS`.
    """
    n_days = max(MIN_BUSINESS_DAYS, -(-n_sales // (len(world.stores) * len(world.products))))
    return dt.datetime.fromtimestamp(start, dt.UTC).date() - dt.timedelta(days=n_days), n_days


def _sales(
    seed: int, world: _World, stretch: _Stretch, first_day: dt.date, n_days: int
) -> Iterator[_Labelled]:
    rng = stretch.rng(seed, "sales")
    n_total, drift_n = stretch.n, stretch.drift_n
    products, stores = world.products, world.stores
    n_products = len(products)
    n_combos = len(stores) * n_products
    # The stores a competitor opens next to at the drift point (an rng of its own, so the
    # events before the drift do not depend on it).
    competitor = frozenset(random.Random(f"{seed}:competitor").sample(range(len(stores)), len(stores) // 2))
    n = 0
    for d in range(n_days):
        # this day's records: distinct store-product pairs, in random order
        count = (d + 1) * n_total // n_days - d * n_total // n_days
        if count == 0:
            continue
        day = first_day + dt.timedelta(days=d)
        weekday = _WEEKDAY[day.weekday()]
        promos = set(rng.sample(range(n_products), round(_PROMO_SHARE * n_products)))
        for combo in rng.sample(range(n_combos), count):
            store_id, size = stores[combo // n_products]
            p = combo % n_products
            product = products[p]
            drifted = n >= drift_n
            competed = drifted and combo // n_products in competitor
            price_factor = rng.uniform(0.6, 0.8) if p in promos else 1.0
            boost = 1.0
            expiry: dt.date | None = None
            if product.shelf_life is None:
                on_shelf = rng.randint(1, 28)
            else:
                on_shelf = rng.randint(1, min(product.shelf_life, 28))
                to_expiry = product.shelf_life - on_shelf
                expiry = day + dt.timedelta(days=to_expiry)
                if to_expiry <= 1:  # short-dated: marked down (unless cheaper already), picked up
                    price_factor = min(price_factor, 0.7)
                    boost = _SHORT_DATED_BOOST
            purchase = day - dt.timedelta(days=on_shelf)
            price = round(product.price * price_factor, 2)
            elasticity = product.elasticity * (_DRIFT_ELASTICITY if drifted else 1.0)
            lam = product.rate * size * weekday * boost * (_DRIFT_LEVEL if competed else 1.0)
            lam *= (price / product.price) ** -elasticity
            true_cost = round(product.price * rng.uniform(0.5, 0.8), 2)
            u = rng.random()
            cost: float | None = true_cost
            if u < 0.08:
                cost = None
            elif u < 0.09:  # typos: a cost in cents, or the price with three extra digits
                cost = round(true_cost * 100 if rng.random() < 0.5 else price * 1000, 2)
            payload: dict[str, Any] = {
                "event_id": stretch.event_id("sale", seed, n),
                "ts": _timestamp(rng, stretch.end - stretch.seconds * (1 - (n + rng.random()) / n_total)),
                "store_id": store_id,
                "product_id": product.id,
                "product_name": product.name,
                "category": product.category,
                "price": price,
                "cost": cost,
                "purchase_date": None if rng.random() < 0.03 else purchase,
                "sale_date": day,
                "expiry_date": None if rng.random() < 0.05 else expiry,
            }
            _extra_fields(rng, payload, n)
            yield f"{store_id}:{product.id}".encode(), payload, _poisson(rng, lam)
            n += 1


# --------------------------------------------------------------------------- malformed


def _malformed(config: SimulationConfig, start: float) -> Iterator[Message]:
    """Endless malformed payloads, the kinds in turn, with ``at`` 0 (set by the caller)."""
    rng = random.Random(f"{config.seed}:malformed")
    kinds = list(MALFORMED_KINDS)
    rng.shuffle(kinds)
    for i in range(1 << 62):
        kind = kinds[i % len(kinds)]
        ts = dt.datetime.fromtimestamp(start - rng.uniform(0, SPAN_SECONDS), dt.UTC)
        base: dict[str, Any] = {"event_id": f"bad-{config.seed}-{i}", "ts": ts}
        if rng.random() < 0.5:
            topic, number, key = FRAUD.event_topic, "amount", f"acc-{rng.randrange(_N_ACCOUNTS):05d}"
            base |= {"account_id": key, "merchant_id": "m-00042", "amount": 12.5}
            base |= {"currency": "EUR", "channel": "online", "country": "FR"}
        else:
            topic, number, key = DEMAND.event_topic, "price", "store-01:p-0001"
            base |= {"store_id": "store-01", "product_id": "p-0001", "product_name": "Milk 1L"}
            base |= {"category": "dairy", "price": 1.19, "sale_date": ts.date()}
        if kind == "not_json":
            value = rng.choice((b"<html>502 Bad Gateway</html>", b"hello", b"", b"{event_id: 1}"))
        elif kind == "truncated_json":
            full = orjson.dumps(base)
            value = full[: rng.randrange(1, len(full) - 1)]
        elif kind == "json_array":
            value = orjson.dumps([base])
        elif kind == "non_utf8":
            value = orjson.dumps(base)[:-1] + b',"note":"caf\xe9 cr\xe8me"}'
        else:
            if kind == "missing_field":
                del base[rng.choice([k for k in base if k != "event_id"])]
            elif kind == "mistyped_field":
                base[number] = f"{base[number]:.2f}"
            elif kind == "absurd_amount":
                base[number] = rng.choice((-base[number], 1e12))
            elif kind == "naive_timestamp":
                base["ts"] = ts.replace(tzinfo=None).isoformat()
            elif kind == "nan_amount":  # JSON has no NaN, but some producers write it anyway
                base[number] = "__NaN__"
            value = orjson.dumps(base).replace(b'"__NaN__"', b"NaN")
        yield Message(topic, key.encode(), value, 0.0, "malformed", MALFORMED_KINDS[kind])


# --------------------------------------------------------------------------- the stream


def _start_seconds(start: dt.datetime | None) -> float:
    if start is None:
        return time.time()
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    return start.timestamp()


def _interleaved(
    config: SimulationConfig, start: float, n_malformed: int
) -> Iterator[tuple[UseCase[Any, Any], bytes, dict[str, Any], Any] | Message]:
    """Events of both kinds and malformed payloads, randomly mixed, in stream order."""
    world = _world(config.seed)
    n_tx, n_sales = config.transactions, config.sales
    tx_stretch = _Stretch(n_tx, start, SPAN_SECONDS, _drift_index(config.drift_at, n_tx))
    sale_stretch = _Stretch(n_sales, start, SPAN_SECONDS, _drift_index(config.drift_at, n_sales))
    sources = (
        (FRAUD, _transactions(config.seed, world, tx_stretch)),
        (DEMAND, _sales(config.seed, world, sale_stretch, *_live_sale_days(world, n_sales, start))),
    )
    bad = _malformed(config, start)
    rng = random.Random(f"{config.seed}:mix")
    left = [config.transactions, config.sales, n_malformed]
    for remaining in range(sum(left), 0, -1):
        u = rng.random() * remaining
        if u < left[0]:
            i = 0
        elif u < left[0] + left[1]:
            i = 1
        else:
            i = 2
        left[i] -= 1
        if i == 2:
            yield next(bad)
        else:
            use_case, source = sources[i]
            key, payload, label = next(source)
            yield use_case, key, payload, label


def generate(config: SimulationConfig, *, start: dt.datetime | None = None) -> Iterator[Message]:
    """The simulated stream: events, malformed payloads and labels, in non-decreasing ``at``.

    Parameters
    ----------
    config
        What to simulate.
    start
        Aware time the stream is generated at (default now): event ``ts`` lie in the
        :data:`SPAN_SECONDS` before it.

    Yields
    ------
    Message
        ``config.transactions + config.sales`` events, one label for each (after it), and
        ``round(malformed_rate * (transactions + sales))`` malformed payloads.
    """
    start_s = _start_seconds(start)
    n_malformed = round(config.malformed_rate * (config.transactions + config.sales))
    rng = random.Random(f"{config.seed}:labels")
    low, high = config.label_delay
    pending: list[tuple[float, int, Message]] = []
    for n, item in enumerate(_interleaved(config, start_s, n_malformed)):
        at = n / config.rate if config.rate > 0 else 0.0
        while pending and pending[0][0] <= at:
            yield heapq.heappop(pending)[2]
        if isinstance(item, Message):
            yield Message(item.topic, item.key, item.value, at, item.kind, item.expected_reason)
            continue
        use_case, key, payload, label = item
        yield Message(use_case.event_topic, key, orjson.dumps(payload), at, "event")
        event_id = payload["event_id"]
        body = {"event_id": event_id, use_case.label_field: label}
        label_at = at + rng.uniform(low, high)
        message = Message(use_case.label_topic, event_id.encode(), orjson.dumps(body), label_at, "label")
        heapq.heappush(pending, (label_at, n, message))
    while pending:
        yield heapq.heappop(pending)[2]


def labelled_events(
    config: SimulationConfig, *, start: dt.datetime | None = None
) -> Iterator[tuple[str, dict[str, Any], bool | int]]:
    """The valid events with their labels, in stream order, without timing or junk.

    Yields ``(topic, payload, label)``: ``payload`` is the event as serialised by
    :func:`generate` (``ts`` a datetime or epoch milliseconds, dates as ``date``), ``label``
    is ``is_fraud`` for transactions and ``units_sold`` for sales. Same world and events as
    :func:`generate` with ``malformed_rate=0``.

    Examples
    --------
    >>> start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    >>> topic, payload, label = next(labelled_events(SimulationConfig(transactions=1, sales=0), start=start))
    >>> topic, payload["event_id"], label
    ('transactions', 'tx-0-0', False)
    """
    for item in _interleaved(config, _start_seconds(start), 0):
        if not isinstance(item, Message):
            use_case, _, payload, label = item
            yield use_case.event_topic, payload, label


def send(
    messages: Iterable[Message],
    producer: confluent_kafka.Producer,
    topic_name: Callable[[str], str],
    *,
    realtime: bool = True,
) -> SendStats:
    """Produce ``messages`` to Kafka, on schedule when ``realtime``, else as fast as possible.

    Parameters
    ----------
    messages
        Typically :func:`generate`'s output.
    producer
        A ``confluent_kafka.Producer``; it is polled regularly and flushed at the end.
    topic_name
        Maps a logical topic onto the real one (pass ``settings.topic``).
    realtime
        Wait until each message's ``at`` (seconds since the call) before producing it.

    Returns
    -------
    SendStats
        Messages produced by ``(topic, kind)``, deliveries that failed, and the duration.
    """
    counts: Counter[tuple[str, str]] = Counter()
    failed = 0

    def delivered(error: Any, _message: Any) -> None:
        nonlocal failed
        if error is not None:
            failed += 1

    names: dict[str, str] = {}
    begin = time.monotonic()
    for i, message in enumerate(messages):
        if realtime:
            while (wait := begin + message.at - time.monotonic()) > 0:
                producer.poll(wait)
        topic = names.get(message.topic)
        if topic is None:
            topic = names[message.topic] = topic_name(message.topic)
        while True:
            try:
                producer.produce(topic, value=message.value, key=message.key, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        counts[message.topic, message.kind] += 1
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush()
    return SendStats(counts=dict(counts), failed=failed, seconds=time.monotonic() - begin)


# --------------------------------------------------------------------------- history files

HISTORY_ROWS_PER_DAY: Final = 1500
"""Rows a day in each history file by default: about the live stream's own density (its
default 5,000 transactions in 3 days), so 30 days give 45,000 rows of each use case."""

HISTORY_PROBLEMS: Final[Mapping[str, Mapping[str, float]]] = {
    FRAUD.name: {"duplicate": 0.005, "bad_value": 0.005, "missing_field": 0.003},
    DEMAND.name: {
        "duplicate": 0.004,
        "impossible_dates": 0.004,
        "unparseable": 0.004,
        "missing_required": 0.003,
    },
}
"""Share of a history file's events spoiled with each data problem, by use case (at most one each)."""

HistoryLabels = Literal["all", "frauds-only"]
"""``frauds-only`` leaves ``is_fraud`` empty but for frauds, as a chargeback feed labels only those."""

_DAY: Final = 86400.0


@dataclass(frozen=True)
class HistoryFile:
    """One history file :func:`write_history` wrote.

    Attributes
    ----------
    use_case
        The use case's name.
    path
        Where it is.
    rows
        Data rows (not counting the header), duplicates included.
    problems
        Events by data problem. :data:`HISTORY_PROBLEMS`'s kinds (a ``duplicate`` is an event
        written twice), and for sales the chain's own problems, as the live stream has them:
        ``missing_cost``, ``cost_outlier`` (cost above
        the ``valid`` range of the demand declaration's ``cost_share``), ``missing_purchase_date``
        and ``null_expiry_date`` (products without a shelf life, and some that lost theirs).
    """

    use_case: str
    path: Path
    rows: int
    problems: Mapping[str, int]


def history_path(path: Path, use_case: UseCase[Any, Any]) -> Path:
    """Where a use case's history goes: its name before the suffix of ``path``.

    >>> history_path(Path("data/history.csv"), FRAUD).as_posix()
    'data/history.fraud.csv'
    """
    return path.with_name(f"{path.stem}.{use_case.name}{path.suffix}")


def write_history(
    path: Path,
    config: SimulationConfig,
    *,
    start: dt.datetime,
    days: int,
    rows_per_day: int = HISTORY_ROWS_PER_DAY,
    labels: HistoryLabels = "all",
    sale_ids: bool = False,
) -> tuple[HistoryFile, ...]:
    """Write a labelled history file for each use case, which the live stream from ``start`` continues.

    The history covers the ``days`` before the live stream of the same ``start``, seed and
    number of sales begins: transaction times end :data:`SPAN_SECONDS` before ``start``, sale
    dates the day before the live stream's first one. It holds the same world (accounts,
    merchants, stores, products) under the concept the live stream starts with (no drift
    within it), and the data problems of :data:`HISTORY_PROBLEMS` and :class:`HistoryFile`.

    Parameters
    ----------
    path
        The files are ``path`` with the use case's name before its suffix
        (:func:`history_path`): Parquet if it ends in ``.parquet``, else CSV.
    config
        Its seed, its number of sales (where the live sales begin) and ``drift_at`` (0: the
        live stream starts drifted, so does the history) are used.
    start
        Aware start of the live stream: the files are a function of it and the arguments.
    days
        Days of history.
    rows_per_day
        Events a day of each use case (at most one per store and product for sales).
    labels
        ``all`` labels every row; ``frauds-only`` leaves ``is_fraud`` empty but for frauds.
    sale_ids
        Write sales with ``event_id`` and ``ts``; without them (the default) they are the
        chain's raw export.

    Returns
    -------
    tuple of HistoryFile
        The files written, fraud then demand.

    Notes
    -----
    Columns are the event record's fields then the label's (``is_fraud``, ``units_sold``).
    In CSV, an empty cell is a null, booleans are ``true``/``false``, ``ts`` is ISO-8601 with
    its offset and dates ``YYYY-MM-DD``; Parquet holds the same cells as text columns (so
    that ``"12,50"`` in a price survives), nulls for empty cells.
    """
    if days < 1 or rows_per_day < 1:
        raise ValueError("days and rows_per_day must be >= 1")
    if labels not in ("all", "frauds-only"):
        raise ValueError(f"labels must be 'all' or 'frauds-only', not {labels!r}")
    world = _world(config.seed)
    if rows_per_day > len(world.stores) * len(world.products):
        raise ValueError(f"rows_per_day must be <= {len(world.stores) * len(world.products)} (sales a day)")
    written = []
    for use_case, events in _history_events(config, world, _start_seconds(start), days, rows_per_day):
        columns = _history_columns(use_case, sale_ids)
        counts: Counter[str] = Counter()
        problems = random.Random(f"{config.seed}:history-problems:{use_case.name}")
        rows = _history_rows(use_case, events, problems, counts, labels)
        target = history_path(path, use_case)
        target.parent.mkdir(parents=True, exist_ok=True)
        n_rows = _write_table(target, columns, ([_cell(row.get(c)) for c in columns] for row in rows))
        written.append(HistoryFile(use_case.name, target, n_rows, dict(sorted(counts.items()))))
    return tuple(written)


def _history_events(
    config: SimulationConfig, world: _World, start: float, days: int, rows_per_day: int
) -> tuple[tuple[UseCase[Any, Any], Iterator[_Labelled]], ...]:
    """Each use case's events over the ``days`` before the live stream from ``start`` begins."""
    n = days * rows_per_day
    # The concept the live stream starts with: the drifted one only if it drifts at once.
    drift_n = 0 if config.drift_at == 0 else n
    transactions = _Stretch(n, start - SPAN_SECONDS, days * _DAY, drift_n, history=True)
    live_day, _ = _live_sale_days(world, config.sales, start)
    live_midnight = dt.datetime.combine(live_day, dt.time(), dt.UTC).timestamp()
    sales = _Stretch(n, live_midnight, days * _DAY, drift_n, history=True)
    return (
        (FRAUD, _transactions(config.seed, world, transactions)),
        (DEMAND, _sales(config.seed, world, sales, live_day - dt.timedelta(days=days), days)),
    )


def _history_columns(use_case: UseCase[Any, Any], sale_ids: bool) -> list[str]:
    """The event record's fields, but a raw sale export's ``event_id`` and ``ts``, then the label."""
    fields = list(use_case.event_type.model_fields)
    if use_case is DEMAND and not sale_ids:
        fields = [f for f in fields if f not in ("event_id", "ts")]
    return [*fields, use_case.label_field]


def _history_rows(
    use_case: UseCase[Any, Any],
    events: Iterator[_Labelled],
    rng: random.Random,
    counts: Counter[str],
    labels: HistoryLabels,
) -> Iterator[dict[str, Any]]:
    """Each event with its label as a row, some spoiled or doubled; ``counts`` the problems."""
    shares = HISTORY_PROBLEMS[use_case.name]
    spoil = _spoil_transaction if use_case is FRAUD else _spoil_sale
    for _, payload, label in events:
        row = payload | {use_case.label_field: None if labels == "frauds-only" and label is False else label}
        if isinstance(row["ts"], int):  # epoch milliseconds: the file has one format
            row["ts"] = dt.datetime.fromtimestamp(row["ts"] // 1000, dt.UTC) + dt.timedelta(
                milliseconds=row["ts"] % 1000
            )
        if use_case is DEMAND:
            counts.update(_sale_findings(row))
        kind = _problem(rng, shares)
        if kind is not None:
            counts[kind] += 1
            if kind == "duplicate":
                yield row
            else:
                spoil(rng, row, kind)
        yield row


def _problem(rng: random.Random, shares: Mapping[str, float]) -> str | None:
    """A data problem drawn with its share, or ``None`` (most of the time)."""
    u = rng.random()
    for kind, share in shares.items():
        if u < share:
            return kind
        u -= share
    return None


def _spoil_transaction(rng: random.Random, row: dict[str, Any], kind: str) -> None:
    if kind == "bad_value":
        field, value = rng.choice((("amount", "abc"), ("amount", -row["amount"]), ("currency", "euro")))
        row[field] = value
    else:  # missing_field: any of them is required
        row[rng.choice(list(FRAUD.event_type.model_fields))] = None


def _spoil_sale(rng: random.Random, row: dict[str, Any], kind: str) -> None:
    sale_date: dt.date = row["sale_date"]
    if kind == "impossible_dates":
        purchase: dt.date = row["purchase_date"] or sale_date - dt.timedelta(days=1)
        if row["expiry_date"] is not None and rng.random() < 0.5:  # expired before it was bought
            row["purchase_date"] = purchase
            row["expiry_date"] = purchase - dt.timedelta(days=rng.randint(1, 30))
        else:  # sold before it was bought
            row["purchase_date"] = sale_date + dt.timedelta(days=rng.randint(1, 30))
    elif kind == "unparseable":
        what = rng.randrange(3)
        if what == 0:  # a decimal comma
            row["price"] = f"{row['price']:.2f}".replace(".", ",")
        elif what == 1:
            row[rng.choice(("price", "cost"))] = "n/a"
        else:  # day first, and no such day
            row[rng.choice(("purchase_date", "sale_date", "expiry_date"))] = f"31/02/{sale_date.year}"
    else:  # missing_required
        row[rng.choice(("product_id", "sale_date"))] = None


def _sale_findings(row: Mapping[str, Any]) -> Iterator[str]:
    """The chain's own data problems in a sale, as the live stream has them."""
    if row["cost"] is None:
        yield "missing_cost"
    elif DEMAND.features.outliers(SimpleNamespace(**row)):  # as the declared features see it
        yield "cost_outlier"
    if row["purchase_date"] is None:
        yield "missing_purchase_date"
    if row["expiry_date"] is None:
        yield "null_expiry_date"


def _cell(value: Any) -> str | None:
    """A value as the text of a history file's cell (``None``: empty)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _write_table(path: Path, columns: list[str], rows: Iterable[list[str | None]]) -> int:
    """Write ``rows`` under a header, as Parquet text columns or CSV; return how many there are."""
    if path.suffix == ".parquet":
        import pandas as pd

        table = pd.DataFrame(list(rows), columns=columns, dtype="string")
        table.to_parquet(path, index=False)
        return len(table)
    n = 0
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")  # streams through the file's buffer
        writer.writerow(columns)
        for row in rows:
            writer.writerow(row)
            n += 1
    return n
