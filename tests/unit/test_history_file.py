"""History files: the documented columns, the chain's data problems, before the live stream."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from stream.records import Rejection, parse
from stream.tools.cli import main
from stream.tools.simulator import (
    HISTORY_PROBLEMS,
    SPAN_SECONDS,
    HistoryFile,
    SimulationConfig,
    history_path,
    labelled_events,
    write_history,
)
from stream.usecases import DEMAND, FRAUD

START = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
CONFIG = SimulationConfig(seed=7)  # the live stream's defaults: 5,000 transactions and sales
DAYS = 30

FRAUD_COLUMNS = ["event_id", "ts", "account_id", "merchant_id", "amount", "currency", "channel", "country"]
SALE_COLUMNS = ["store_id", "product_id", "product_name", "category", "price", "cost"]
DATE_COLUMNS = ["purchase_date", "sale_date", "expiry_date"]
SALE_COLUMNS += DATE_COLUMNS

Rows = list[dict[str, str]]


@dataclasses.dataclass(frozen=True)
class Written:
    files: dict[str, HistoryFile]
    rows: dict[str, Rows]


def read(path: Path) -> Rows:
    """A history file's rows, cells as text ("" for an empty cell or a null)."""
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
        assert all(pd.api.types.is_string_dtype(t) for t in table.dtypes)
        records: Rows = table.fillna("").to_dict("records")
        return records
    with path.open(newline="", encoding="utf-8") as lines:
        return list(csv.DictReader(lines))


def write(
    path: Path,
    config: SimulationConfig = CONFIG,
    days: int = DAYS,
    start: dt.datetime = START,
    **options: Any,
) -> Written:
    files = write_history(path, config, start=start, days=days, **options)
    by_name = {f.use_case: f for f in files}
    return Written(by_name, {name: read(f.path) for name, f in by_name.items()})


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Written:
    return write(tmp_path_factory.mktemp("history") / "history.csv")


@pytest.fixture(scope="module")
def live() -> list[tuple[str, dict[str, Any], Any]]:
    return list(labelled_events(CONFIG, start=START))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def event_json(row: dict[str, str], label_field: str) -> bytes:
    """A row as the event's JSON payload, the way a reader would make it: no coercion of bad cells.

    An empty cell is a null (left out); a number column's cell that is no number stays text.
    A raw sale gets an id from its content and ``ts`` from its ``sale_date``.
    """
    payload: dict[str, Any] = {}
    for column, cell in row.items():
        if cell == "" or column == label_field:
            continue
        try:
            payload[column] = float(cell) if column in ("amount", "price", "cost") else cell
        except ValueError:
            payload[column] = cell
    if "event_id" not in row:
        payload["event_id"] = hashlib.sha256(orjson.dumps(row)).hexdigest()[:16]
        if row["sale_date"]:
            payload["ts"] = f"{row['sale_date']}T00:00:00+00:00"
    return orjson.dumps(payload)


def date(cell: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(cell)
    except ValueError:
        return None


def share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values)


def numbers(*cells: str) -> bool:
    try:
        return all(float(c) > 0 for c in cells)
    except ValueError:
        return False


# ------------------------------------------------------------------ the files


def test_one_file_per_use_case_named_after_it(history: Written, tmp_path: Path) -> None:
    assert {name: f.path.name for name, f in history.files.items()} == {
        "fraud": "history.fraud.csv",
        "demand": "history.demand.csv",
    }
    assert history_path(tmp_path / "h.parquet", DEMAND) == tmp_path / "h.demand.parquet"
    assert history_path(tmp_path / "h", FRAUD) == tmp_path / "h.fraud"


def test_columns_are_the_records_fields_and_the_label(history: Written, tmp_path: Path) -> None:
    assert list(history.rows["fraud"][0]) == [*FRAUD_COLUMNS, "is_fraud"]
    assert list(history.rows["demand"][0]) == [*SALE_COLUMNS, "units_sold"]  # the chain's raw export
    with_ids = write(tmp_path / "h.csv", days=1, sale_ids=True)
    assert list(with_ids.rows["demand"][0]) == ["event_id", "ts", *SALE_COLUMNS, "units_sold"]


def test_thirty_days_are_tens_of_thousands_of_rows(history: Written) -> None:
    for name, rows in history.rows.items():
        assert 30_000 <= len(rows) == history.files[name].rows <= 60_000


def test_cells_are_written_as_documented(history: Written) -> None:
    fraud, demand = history.rows["fraud"], history.rows["demand"]
    assert {r["is_fraud"] for r in fraud} == {"true", "false"}
    for row in fraud:
        if row["ts"]:
            assert dt.datetime.fromisoformat(row["ts"]).utcoffset() == dt.timedelta(0)
            assert row["ts"].endswith("+00:00")
    dates = [r[c] for r in demand for c in DATE_COLUMNS]
    assert share(date(d) is not None for d in dates if d) > 0.99
    assert all(r["units_sold"].isdigit() for r in demand)


def test_round_trips_with_pandas_as_csv_and_parquet(history: Written, tmp_path: Path) -> None:
    for name, f in history.files.items():
        from_csv = pd.read_csv(f.path, dtype=str, keep_default_na=False)
        assert from_csv.to_dict("records") == history.rows[name]
    # Parquet holds the same cells, as text
    as_csv, parquet = write(tmp_path / "h.csv", days=5), write(tmp_path / "h.parquet", days=5)
    for name, f in parquet.files.items():
        assert f.path.name == f"h.{name}.parquet"
        assert list(parquet.rows[name][0]) == list(as_csv.rows[name][0])
        assert parquet.rows[name] == as_csv.rows[name]
        assert f.problems == as_csv.files[name].problems


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    csvs = [write(tmp_path / f"{i}" / "h.csv", days=3).files for i in range(2)]
    assert all(digest(csvs[0][n].path) == digest(csvs[1][n].path) for n in csvs[0])
    parquets = [write(tmp_path / f"{i}" / "h.parquet", days=2).files for i in range(2)]
    assert all(digest(parquets[0][n].path) == digest(parquets[1][n].path) for n in parquets[0])
    other = write(tmp_path / "other.csv", dataclasses.replace(CONFIG, seed=8), days=2)
    assert all(digest(other.files[n].path) != digest(parquets[0][n].path) for n in parquets[0])


# ------------------------------------------------------------------ where the history lies


def test_transactions_end_where_the_live_stream_begins(
    history: Written, live: list[tuple[str, dict[str, Any], Any]]
) -> None:
    times = [dt.datetime.fromisoformat(r["ts"]) for r in history.rows["fraud"] if r["ts"]]
    live_begins = START - dt.timedelta(seconds=SPAN_SECONDS)
    assert live_begins - dt.timedelta(days=DAYS) <= min(times)
    assert max(times) < live_begins
    assert max(times) > live_begins - dt.timedelta(hours=1)  # right up to it
    first_live = min(
        dt.datetime.fromtimestamp(p["ts"] / 1000, dt.UTC) if isinstance(p["ts"], int) else p["ts"]
        for topic, p, _ in live
        if topic == FRAUD.event_topic
    )
    assert max(times) < first_live
    assert len({t.date() for t in times}) >= DAYS  # every day, spread over them


def test_sales_end_the_day_before_the_live_sales_begin(
    history: Written, live: list[tuple[str, dict[str, Any], Any]]
) -> None:
    days = {d for r in history.rows["demand"] if (d := date(r["sale_date"]))}
    first_live = min(p["sale_date"] for topic, p, _ in live if topic == DEMAND.event_topic)
    assert max(days) == first_live - dt.timedelta(days=1)
    assert days == {first_live - dt.timedelta(days=d) for d in range(1, DAYS + 1)}


def test_same_world_as_the_live_stream_and_event_ids_of_its_own(
    history: Written, live: list[tuple[str, dict[str, Any], Any]]
) -> None:
    live_tx = [p for topic, p, _ in live if topic == FRAUD.event_topic]
    live_sales = [p for topic, p, _ in live if topic == DEMAND.event_topic]
    fraud, demand = history.rows["fraud"], history.rows["demand"]
    accounts = {r["account_id"]: r["currency"] for r in fraud if r["account_id"]}
    assert len(accounts) > 1900  # nearly all of the world's 2,000 accounts
    assert {p["account_id"] for p in live_tx} <= set(accounts)
    products = {(p["product_id"], p["product_name"], p["category"]) for p in live_sales}
    assert {
        (r["product_id"], r["product_name"], r["category"]) for r in demand if r["product_id"]
    } == products
    assert {r["store_id"] for r in demand} == {p["store_id"] for p in live_sales}
    assert not {r["event_id"] for r in fraud} & {p["event_id"] for p in live_tx}


def test_the_concept_is_the_live_streams_at_its_start(history: Written, tmp_path: Path) -> None:
    def fraud_channels(rows: Rows) -> float:
        fraud = [r for r in rows if r["is_fraud"] == "true"]
        assert 0.015 < len(fraud) / len(rows) < 0.06
        return share(r["channel"] == "pos" for r in fraud)

    assert fraud_channels(history.rows["fraud"]) < 0.05  # card-not-present abroad throughout
    drifted = write(tmp_path / "h.csv", dataclasses.replace(CONFIG, drift_at=0.0), days=3)
    assert fraud_channels(drifted.rows["fraud"]) > 0.7  # the live stream starts with card testing


# ------------------------------------------------------------------ the data problems


@pytest.mark.parametrize("name", ["fraud", "demand"])
def test_each_data_problem_has_its_share(history: Written, name: str) -> None:
    f = history.files[name]
    events = f.rows - f.problems["duplicate"]
    for kind, expected in HISTORY_PROBLEMS[name].items():
        assert 0.5 * expected < f.problems[kind] / events < 1.5 * expected, kind
    spoiled = sum(f.problems[kind] for kind in HISTORY_PROBLEMS[name]) + f.problems.get("cost_outlier", 0)
    assert 0.01 < spoiled / f.rows < 0.03


@pytest.mark.parametrize(
    ("name", "rejected_kinds"),
    [("fraud", ("bad_value", "missing_field")), ("demand", ("unparseable", "missing_required"))],
)
def test_clean_rows_are_valid_records_and_bad_rows_are_rejected(
    history: Written, name: str, rejected_kinds: tuple[str, ...]
) -> None:
    use_case = FRAUD if name == "fraud" else DEMAND
    label_field = use_case.label_field
    reasons: Counter[str] = Counter()
    for row in history.rows[name]:
        record = parse(use_case.event_type, event_json(row, label_field))
        if isinstance(record, Rejection):
            reasons[record.reason] += 1
            continue
        label = {"event_id": record.event_id, label_field: orjson.loads(row[label_field])}
        assert not isinstance(parse(use_case.label_type, orjson.dumps(label)), Rejection), row
    assert sum(reasons.values()) == sum(history.files[name].problems[k] for k in rejected_kinds)
    assert set(reasons) <= {"bad_type", "bad_format", "missing_field", "out_of_range"}


@pytest.mark.parametrize("name", ["fraud", "demand"])
def test_duplicates_are_exact_copies(history: Written, name: str) -> None:
    rows = [tuple(r.values()) for r in history.rows[name]]
    assert len(rows) - len(set(rows)) == history.files[name].problems["duplicate"]
    if name == "fraud":  # a transaction's copy has its event id
        ids = Counter(r["event_id"] for r in history.rows[name] if r["event_id"])
        assert sum(n - 1 for n in ids.values()) == history.files[name].problems["duplicate"]


def test_bad_transaction_values(history: Written) -> None:
    fraud = history.rows["fraud"]
    bad = Counter(
        "abc" if r["amount"] == "abc" else "negative" if r["amount"].startswith("-") else "euro"
        for r in fraud
        if r["amount"] == "abc" or r["amount"].startswith("-") or r["currency"] == "euro"
    )
    assert set(bad) == {"abc", "negative", "euro"}
    assert sum(bad.values()) == history.files["fraud"].problems["bad_value"]
    empty = sum(1 for r in fraud for c in FRAUD_COLUMNS if r[c] == "")
    assert empty == history.files["fraud"].problems["missing_field"]


def test_the_chains_problems_in_sales(history: Written) -> None:
    demand, problems = history.rows["demand"], history.files["demand"].problems
    n = len(demand)
    assert 0.05 < problems["missing_cost"] / n < 0.11
    assert 0.05 < share(r["cost"] == "" for r in demand) < 0.11
    assert 0.004 < problems["cost_outlier"] / n < 0.02
    ratios = [float(r["cost"]) / float(r["price"]) for r in demand if numbers(r["cost"], r["price"])]
    outliers = [x for x in ratios if x > 5.0]  # the demand declaration's valid cost_share
    assert abs(len(outliers) - problems["cost_outlier"]) < 0.1 * problems["cost_outlier"]
    assert statistics.median(outliers) > 50.0
    assert all(date(r["expiry_date"]) is None for r in demand if r["category"] == "household")
    assert 0.02 < share(r["expiry_date"] == "" for r in demand if r["category"] != "household") < 0.09
    empty_expiry = sum(r["expiry_date"] == "" for r in demand)
    assert abs(problems["null_expiry_date"] - empty_expiry) < 0.01 * n  # duplicates and spoils aside


def test_impossible_unparseable_and_missing_sale_values(history: Written) -> None:
    demand, problems = history.rows["demand"], history.files["demand"].problems
    impossible: Counter[str] = Counter()
    for r in demand:
        purchase, sale, expiry = date(r["purchase_date"]), date(r["sale_date"]), date(r["expiry_date"])
        if purchase and sale and purchase >= sale:
            impossible["sold before bought"] += 1
        elif purchase and expiry and expiry < purchase:
            impossible["expired before bought"] += 1
    assert set(impossible) == {"sold before bought", "expired before bought"}
    assert sum(impossible.values()) == problems["impossible_dates"]
    cells = Counter(
        "comma" if "," in r["price"] else "n/a" if "n/a" in (r["price"], r["cost"]) else "31/02"
        for r in demand
        if "," in r["price"] or "n/a" in (r["price"], r["cost"]) or any("/" in r[c] for c in DATE_COLUMNS)
    )
    assert set(cells) == {"comma", "n/a", "31/02"}
    assert sum(cells.values()) == problems["unparseable"]
    missing = sum(r["product_id"] == "" or r["sale_date"] == "" for r in demand)
    assert missing == problems["missing_required"]


# ------------------------------------------------------------------ labels and options


def test_frauds_only_leaves_other_labels_empty(tmp_path: Path) -> None:
    frauds_only = write(tmp_path / "only" / "h.csv", days=5, labels="frauds-only")
    history = write(tmp_path / "all" / "h.csv", days=5)
    labelled = frauds_only.rows["fraud"]
    assert {r["is_fraud"] for r in labelled} == {"true", ""}
    full = history.rows["fraud"]
    assert [r["is_fraud"] == "true" for r in labelled] == [r["is_fraud"] == "true" for r in full]
    assert [{**r, "is_fraud": ""} for r in labelled] == [{**r, "is_fraud": ""} for r in full]
    assert frauds_only.rows["demand"] == history.rows["demand"]  # units sold are always known
    assert all(r["units_sold"] != "" for r in frauds_only.rows["demand"])


def test_sales_with_ids_have_their_time_on_their_day(tmp_path: Path) -> None:
    demand = write(tmp_path / "h.csv", days=3, sale_ids=True).rows["demand"]
    clean = [r for r in demand if date(r["sale_date"])]
    assert share(dt.datetime.fromisoformat(r["ts"]).date() == date(r["sale_date"]) for r in clean) > 0.99
    assert all(r["event_id"].startswith("sale-7-h") for r in demand)


def test_arguments_are_checked(tmp_path: Path) -> None:
    cases: list[tuple[int, int, Any]] = [(0, 100, "all"), (1, 0, "all"), (1, 2161, "all"), (1, 100, "some")]
    for days, per_day, labels in cases:  # 2,161: more sales a day than store-product pairs
        with pytest.raises(ValueError):
            write_history(
                tmp_path / "h.csv", CONFIG, start=START, days=days, rows_per_day=per_day, labels=labels
            )
    with pytest.raises(ValueError, match="timezone-aware"):
        write_history(tmp_path / "h.csv", CONFIG, start=START.replace(tzinfo=None), days=1)


def test_the_command_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "data" / "history.csv"
    # The command refuses a start in the future: one long past, whatever the clock says.
    start = dt.datetime(2020, 3, 4, 12, tzinfo=dt.UTC)
    argv = ["simulate", "--history", str(target), "--days", "2", "--start", start.isoformat(), "--seed", "7"]
    assert main([*argv, "--labels", "frauds-only", "--rows-per-day", "500"]) == 0
    out = capsys.readouterr().out
    expected = write(tmp_path / "expected.csv", days=2, start=start, labels="frauds-only", rows_per_day=500)
    for name, f in expected.files.items():
        written = history_path(target, FRAUD if name == "fraud" else DEMAND)
        assert f"{written}: {f.rows} rows" in out
        assert digest(written) == digest(f.path)
    assert main(["simulate", "--days", "2"]) == 2
    assert "--days needs --history" in capsys.readouterr().err
    assert main([*argv, "--rows-per-day", "5000"]) == 2
