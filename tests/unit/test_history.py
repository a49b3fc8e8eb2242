"""Reading a history file: every row accepted or rejected as the stream would, replayed in time order."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from stream.records import Sale, Transaction, parse
from stream.tools import history
from stream.tools.history import REASONS, CleaningReport, History, HistoryError, content_id
from stream.usecases import DEMAND, FRAUD

TX_COLUMNS = ["event_id", "ts", "account_id", "merchant_id", "amount", "currency", "channel", "country"]
SALE_COLUMNS = [
    "store_id",
    "product_id",
    "product_name",
    "category",
    "price",
    "cost",
    "purchase_date",
    "sale_date",
    "expiry_date",
]


def tx(n: int, **changes: str) -> dict[str, str]:
    """Transaction ``n``'s cells: at 2026-01-05 00:00 UTC + n minutes, labelled not fraud."""
    cells = {
        "event_id": f"t-{n}",
        "ts": (dt.datetime(2026, 1, 5, tzinfo=dt.UTC) + dt.timedelta(minutes=n)).isoformat(),
        "account_id": f"acc-{n % 3}",
        "merchant_id": "m-1",
        "amount": "12.5",
        "currency": "EUR",
        "channel": "pos",
        "country": "FR",
        "is_fraud": "false",
    }
    return {**cells, **changes}


def sale(day: int, **changes: str) -> dict[str, str]:
    """A sale of product p-``day`` on 2026-01-``day``, bought two days before, 4 units sold."""
    cells = {
        "store_id": "s-1",
        "product_id": f"p-{day}",
        "product_name": "Milk 1L",
        "category": "dairy",
        "price": "1.2",
        "cost": "0.8",
        "purchase_date": f"2026-01-{day - 2:02d}",
        "sale_date": f"2026-01-{day:02d}",
        "expiry_date": f"2026-01-{day + 5:02d}",
        "units_sold": "4",
    }
    return {**cells, **changes}


def write(path: Path, rows: Iterable[Mapping[str, str]], columns: Sequence[str] | None = None) -> Path:
    rows = list(rows)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns or rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def replay(source: History[Any], size: int = 2000) -> list[tuple[Any, float | None]]:
    return [pair for batch in source.batches(size) for pair in batch]


def rejected_rows(source: History[Any]) -> list[dict[str, str]]:
    with source.rejected_path.open(newline="") as file:
        return list(csv.DictReader(file))


def assert_counts_add_up(report: CleaningReport) -> None:
    assert report.rows == report.accepted + sum(report.rejected.values())
    assert report.accepted == report.labelled + report.unlabelled
    assert list(report.rejected) == list(REASONS)


# --------------------------------------------------------------------------- acceptance


def test_a_clean_file_is_replayed_whole_with_its_labels(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [tx(0), tx(1, is_fraud="true"), tx(2)])
    with History(FRAUD, path) as source:
        pairs = replay(source)
        report = source.report
    assert [(event.event_id, target) for event, target in pairs] == [("t-0", 0.0), ("t-1", 1.0), ("t-2", 0.0)]
    assert all(isinstance(event, Transaction) for event, _ in pairs)
    assert report.rows == report.accepted == report.labelled == 3
    assert report.first_ts == dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    assert report.last_ts == dt.datetime(2026, 1, 5, 0, 2, tzinfo=dt.UTC)
    assert_counts_add_up(report)


def test_an_accepted_record_is_what_parse_makes_of_the_same_json(tmp_path: Path) -> None:
    cells = sale(7, cost="", expiry_date="", extra_column="ignored")
    path = write(tmp_path / "sales.csv", [cells])
    with History(DEMAND, path) as source:
        ((record, target),) = replay(source)
    payload = {
        "event_id": content_id(
            ["", "s-1", "p-7", "Milk 1L", "dairy", "1.2", "", "2026-01-05", "2026-01-07", ""]
        ),
        "ts": "2026-01-07T00:00:00+00:00",
        "store_id": "s-1",
        "product_id": "p-7",
        "product_name": "Milk 1L",
        "category": "dairy",
        "price": 1.2,
        "cost": None,
        "purchase_date": "2026-01-05",
        "sale_date": "2026-01-07",
        "expiry_date": None,
    }
    assert record == parse(Sale, orjson.dumps(payload))
    assert record.model_fields_set == parse(Sale, orjson.dumps(payload)).model_fields_set
    assert target == 4.0


def test_sales_without_event_id_and_ts_get_a_content_id_and_midnight_utc(tmp_path: Path) -> None:
    path = write(tmp_path / "sales.csv", [sale(7), sale(8)])
    with History(DEMAND, path) as source:
        (first, _), (second, _) = replay(source)
    assert first.ts == dt.datetime(2026, 1, 7, tzinfo=dt.UTC)
    assert second.ts == dt.datetime(2026, 1, 8, tzinfo=dt.UTC)
    assert first.event_id.startswith("h-") and len(first.event_id) == 18
    assert first.event_id != second.event_id


def test_a_sale_with_an_empty_event_id_or_ts_cell_gets_them_made(tmp_path: Path) -> None:
    rows = [
        {"event_id": "s-a", "ts": "2026-01-07T10:00:00+01:00", **sale(7)},
        {"event_id": "", "ts": "", **sale(8)},
    ]
    path = write(tmp_path / "sales.csv", rows)
    with History(DEMAND, path) as source:
        (kept, _), (made, _) = replay(source)
    assert (kept.event_id, kept.ts) == ("s-a", dt.datetime(2026, 1, 7, 9, tzinfo=dt.UTC))
    assert made.event_id.startswith("h-") and made.ts == dt.datetime(2026, 1, 8, tzinfo=dt.UTC)


def test_epoch_milliseconds_are_a_timestamp_as_in_the_stream(tmp_path: Path) -> None:
    millis = str(int(dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC).timestamp() * 1000))
    path = write(tmp_path / "tx.csv", [tx(0, ts=millis)])
    with History(FRAUD, path) as source:
        ((event, _),) = replay(source)
    assert event.ts == dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC)


@pytest.mark.parametrize("year", [1999, 2099])
def test_the_stream_age_limits_do_not_apply(tmp_path: Path, year: int) -> None:
    path = write(tmp_path / "tx.csv", [tx(0, ts=f"{year}-06-01T12:00:00+00:00")])
    with History(FRAUD, path) as source:
        ((event, _),) = replay(source)
    assert event.ts.year == year


@pytest.mark.parametrize(
    ("cell", "target"),
    [("true", 1.0), ("TRUE", 1.0), ("True", 1.0), ("1", 1.0), ("false", 0.0), ("False", 0.0), ("0", 0.0)],
)
def test_booleans_are_true_false_or_1_0_in_any_case(tmp_path: Path, cell: str, target: float) -> None:
    path = write(tmp_path / "tx.csv", [tx(0, is_fraud=cell)])
    with History(FRAUD, path) as source:
        assert replay(source)[0][1] == target


def test_an_empty_label_is_unlabelled_not_rejected(tmp_path: Path) -> None:
    # A fraud feed may label only the frauds.
    path = write(tmp_path / "tx.csv", [tx(0, is_fraud=""), tx(1, is_fraud="1"), tx(2, is_fraud="")])
    with History(FRAUD, path) as source:
        targets = [target for _, target in replay(source)]
        report = source.report
    assert targets == [None, 1.0, None]
    assert (report.labelled, report.unlabelled, report.nulls["is_fraud"]) == (1, 2, 2)
    assert_counts_add_up(report)


def test_nulls_and_cost_outliers_are_accepted_and_counted(tmp_path: Path) -> None:
    rows = [sale(7, cost=""), sale(8, cost="6.5"), sale(9, expiry_date=""), sale(10)]
    path = write(tmp_path / "sales.csv", rows)
    with History(DEMAND, path) as source:
        report = source.report
        assert [event.cost for event, _ in replay(source)] == [None, 6.5, 0.8, 0.8]
    assert report.accepted == 4
    assert report.nulls == {"cost": 1, "purchase_date": 0, "expiry_date": 1, "units_sold": 0}
    assert report.outliers == {"cost_share": 1}  # 6.5 > 5 x 1.2: out of the declared valid range


def test_an_absent_optional_column_is_null_everywhere(tmp_path: Path) -> None:
    rows = [{k: v for k, v in sale(day).items() if k != "cost"} for day in (7, 8)]
    path = write(tmp_path / "sales.csv", rows)
    with History(DEMAND, path) as source:
        assert [event.cost for event, _ in replay(source)] == [None, None]
        assert source.report.nulls["cost"] == 2


# --------------------------------------------------------------------------- rejection


def test_a_transactions_file_without_event_id_is_refused_clearly(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [{k: v for k, v in tx(0).items() if k != "event_id"}])
    with pytest.raises(HistoryError, match=r"fraud history needs the column\(s\) event_id"):
        History(FRAUD, path)


def test_a_file_without_the_label_column_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "sales.csv", [{k: v for k, v in sale(7).items() if k != "units_sold"}])
    with pytest.raises(HistoryError, match="units_sold"):
        History(DEMAND, path)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(HistoryError, match="empty"):
        History(FRAUD, path)


def test_a_parquet_file_that_is_not_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sales.parquet"
    path.write_text("store_id,units_sold\n")
    with pytest.raises(HistoryError, match="not a Parquet file"):
        History(DEMAND, path)


def test_a_line_with_too_many_cells_refuses_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [tx(0)])
    with path.open("a") as file:
        file.write("t-9,2026-01-05T00:00:00+00:00,a,m,1,EUR,pos,FR,false,surplus\n")
    source = History(FRAUD, path)
    with pytest.raises(HistoryError, match="not a well-formed CSV"):
        source.clean()


TX_REJECTIONS = [
    (tx(0, event_id=""), "missing_field", "event_id"),
    (tx(0, ts=""), "missing_field", "ts"),
    (tx(0, amount=""), "missing_field", "amount"),
    (tx(0, amount="12,50"), "bad_type", "amount"),
    (tx(0, ts="yesterday"), "bad_format", "ts"),
    (tx(0, ts="2026-01-05T10:00:00"), "bad_format", "ts"),  # no offset
    (tx(0, currency="EURO"), "bad_format", "currency"),
    (tx(0, amount="-3"), "out_of_range", "amount"),
    (tx(0, amount="nan"), "out_of_range", "amount"),
    (tx(0, amount="inf"), "out_of_range", "amount"),
    (tx(0, is_fraud="yes"), "bad_type", "is_fraud"),
]
SALE_REJECTIONS = [
    (sale(7, price="2e6"), "out_of_range", "price"),
    (sale(7, sale_date="2026-02-30"), "bad_format", "sale_date"),
    (sale(7, units_sold="-1"), "out_of_range", "units_sold"),
    (sale(7, units_sold="many"), "bad_type", "units_sold"),
    (
        sale(7, purchase_date="2026-01-08"),
        "inconsistent_dates",
        "sale_date 2026-01-07 is before purchase_date",
    ),
    (
        sale(7, expiry_date="2026-01-04"),
        "inconsistent_dates",
        "expiry_date 2026-01-04 is before purchase_date",
    ),
]


@pytest.mark.parametrize(("cells", "reason", "named"), TX_REJECTIONS + SALE_REJECTIONS)
def test_each_bad_row_is_rejected_with_the_stream_reason_and_a_detail(
    tmp_path: Path, cells: dict[str, str], reason: str, named: str
) -> None:
    use_case, good = (FRAUD, tx(5)) if "account_id" in cells else (DEMAND, sale(9))
    path = write(tmp_path / "file.csv", [good, cells])
    with History(use_case, path) as source:
        report = source.report
        assert len(replay(source)) == 1
    assert report.rejected[reason] == 1 and report.accepted == 1
    assert_counts_add_up(report)
    (row,) = rejected_rows(source)
    assert (row["line"], row["reason"]) == ("3", reason)
    assert named in row["detail"]
    assert {k: row[k] for k in cells} == cells  # the row's original cells follow


def test_the_reason_is_the_one_parse_gives_the_same_json(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [tx(0, amount="12.50", country="France")])
    with History(FRAUD, path) as source:
        source.clean()
    (row,) = rejected_rows(source)
    payload = {**{k: v for k, v in tx(0).items() if k != "is_fraud"}, "amount": 12.5, "country": "France"}
    expected = parse(Transaction, orjson.dumps(payload))
    assert not isinstance(expected, Transaction)
    assert (row["reason"], row["detail"]) == (expected.reason, expected.detail)


def test_bytes_that_are_not_utf8_reject_their_row_only(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [tx(0), tx(1)])
    path.write_bytes(path.read_bytes().replace(b"acc-1", b"acc-\xff"))
    with History(FRAUD, path) as source:
        assert [event.event_id for event, _ in replay(source)] == ["t-0"]
        assert source.report.rejected["invalid_json"] == 1
    assert b"acc-\xff" in source.rejected_path.read_bytes()  # written back as read


def test_a_repeated_event_id_is_a_duplicate_first_row_wins_across_chunks(tmp_path: Path) -> None:
    rows = [tx(0), tx(1), tx(2), tx(3, event_id="t-0", amount="99"), tx(4), tx(5, event_id="t-1")]
    path = write(tmp_path / "tx.csv", rows)
    with History(FRAUD, path, chunk_rows=2) as source:
        pairs = replay(source)
        report = source.report
    assert [e.event_id for e, _ in pairs] == ["t-0", "t-1", "t-2", "t-4"]
    assert pairs[0][0].amount == 12.5
    assert report.rejected["duplicate_event"] == 2
    details = [row["detail"] for row in rejected_rows(source)]
    assert details == ["event id t-0 was first read at line 2", "event id t-1 was first read at line 3"]


def test_a_rejected_row_does_not_claim_its_id(tmp_path: Path) -> None:
    # As in the stream, where an invalid event never claims its id.
    path = write(tmp_path / "tx.csv", [tx(0, amount="-1"), tx(1, event_id="t-0")])
    with History(FRAUD, path) as source:
        assert [e.event_id for e, _ in replay(source)] == ["t-0"]
        assert source.report.rejected == {**dict.fromkeys(REASONS, 0), "out_of_range": 1}


def test_identical_sale_rows_are_duplicates_by_their_content_id(tmp_path: Path) -> None:
    rows = [sale(7), sale(8), sale(7), sale(7, units_sold="9"), sale(7, price="1.3")]
    path = write(tmp_path / "sales.csv", rows)
    with History(DEMAND, path, chunk_rows=2) as source:
        pairs = replay(source)
        report = source.report
    assert [(e.sale_date.day, e.price, units) for e, units in pairs] == [
        (7, 1.2, 4.0),
        (7, 1.3, 4.0),
        (8, 1.2, 4.0),
    ]
    assert report.rejected["duplicate_event"] == 2  # the same sale, whatever its label


# --------------------------------------------------------------------------- order, formats, file facts


def test_rows_come_in_event_time_order_ties_in_file_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "MAX_RUNS", 3)  # also merge runs in groups first
    minutes = [9, 3, 7, 3, 0, 12, 5, 3, 1, 8, 2, 11, 6]
    rows = [tx(i, ts=tx(m)["ts"]) for i, m in enumerate(minutes)]
    path = write(tmp_path / "tx.csv", rows)
    with History(FRAUD, path, chunk_rows=2) as source:
        pairs = replay(source, size=4)
        again = replay(source, size=100)
    ids = [event.event_id for event, _ in pairs]
    expected = sorted(range(len(minutes)), key=lambda i: (minutes[i], i))
    assert ids == [f"t-{i}" for i in expected]
    assert [e.event_id for e, _ in again] == ids


def test_a_sorted_file_makes_one_run(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [tx(i) for i in range(10)])
    with History(FRAUD, path, chunk_rows=3) as source:
        source.clean()
        assert source._runs is not None and len(source._runs.paths) == 1


def test_batches_have_the_size_asked(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [tx(i) for i in range(7)])
    with History(FRAUD, path) as source:
        assert [len(batch) for batch in source.batches(3)] == [3, 3, 1]


def test_a_closed_history_cannot_replay(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [tx(0)])
    source = History(FRAUD, path)
    source.clean()
    source.close()
    with pytest.raises(RuntimeError, match="closed"):
        next(source.batches())


def test_blank_lines_are_no_rows_and_lines_keep_their_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [tx(0), tx(1, amount="-1")])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1], "", lines[2], ""]) + "\n")
    with History(FRAUD, path) as source:
        assert source.report.rows == 2
    assert [row["line"] for row in rejected_rows(source)] == ["4"]


def test_parquet_gives_the_same_result_as_csv(tmp_path: Path) -> None:
    rows = [sale(9), sale(7, cost=""), sale(8, price="cheap"), sale(7, cost=""), sale(10, cost="7")]
    csv_path = write(tmp_path / "sales.csv", rows)
    frame = pd.DataFrame(rows).replace("", None)
    frame["price"] = pd.to_numeric(frame["price"], errors="coerce")
    frame.loc[2, "price"] = None  # a typed column has no "cheap": a null instead
    frame["cost"] = frame["cost"].astype(float)
    frame["units_sold"] = frame["units_sold"].astype(int)
    frame["sale_date"] = pd.to_datetime(frame["sale_date"]).dt.date
    parquet_path = tmp_path / "sales.parquet"
    frame.to_parquet(parquet_path)
    with History(DEMAND, csv_path) as from_csv, History(DEMAND, parquet_path) as from_parquet:
        expected, got = replay(from_csv), replay(from_parquet)
        csv_report, parquet_report = from_csv.report, from_parquet.report
    assert got == expected  # the same records: content ids too, when the cells' text agrees
    bad = {**dict.fromkeys(REASONS, 0), "duplicate_event": 1}
    assert csv_report.rejected == {**bad, "bad_type": 1}
    assert parquet_report.rejected == {**bad, "missing_field": 1}
    same = {"accepted", "nulls", "outliers", "labelled", "unlabelled", "first_ts", "last_ts"}
    assert csv_report.model_dump(include=same) == parquet_report.model_dump(include=same)
    assert [row["line"] for row in rejected_rows(from_parquet)] == ["3", "4"]  # row numbers from 1


def test_size_sha256_and_progress_are_those_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [tx(i) for i in range(5)])
    progress: list[int] = []
    with History(FRAUD, path, chunk_rows=2, on_rows=progress.append) as source:
        assert source.size == path.stat().st_size
        assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert progress == [2, 2, 1]
    assert source.rejected_path == tmp_path / "tx.csv.rejected.csv"


def test_the_report_is_json_and_a_short_table(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [tx(0), tx(1, amount="x"), tx(2, is_fraud="")])
    with History(FRAUD, path) as source:
        report = source.report
    assert CleaningReport.model_validate_json(report.model_dump_json()) == report
    table = report.table()
    assert "rows read      3  100.0%" in table and "  bad_type     1   33.3%" in table
    assert table.splitlines()[-1] == "event time  2026-01-05T00:00:00+00:00 .. 2026-01-05T00:02:00+00:00"


def test_an_empty_history_has_no_time_range(tmp_path: Path) -> None:
    path = write(tmp_path / "tx.csv", [], columns=[*TX_COLUMNS, "is_fraud"])
    with History(FRAUD, path) as source:
        assert replay(source) == []
        report = source.report
    assert (report.rows, report.first_ts, report.last_ts) == (0, None, None)
    assert report.table().splitlines()[-1] == "event time  -"
