"""A labelled history file, read and cleaned as the stream would, replayed in event-time order.

``scoring bootstrap`` and ``scoring backtest`` learn from a history file: a CSV (or Parquet,
by the suffix ``.parquet``) with the event record's fields (:mod:`stream.records`) and the
label column (``is_fraud``, ``units_sold``). Extra columns are ignored. Each row becomes
the JSON the stream would receive, and :func:`stream.records.parse` decides whether it is
valid, so a row is accepted or rejected exactly as the stream would accept or reject its
payload, with the same reason codes. Two rules are the history's own: a repeated event id
is a ``duplicate_event`` (the first valid row wins, as the stream's first claim does), and
a sale sold or expiring before it was bought is ``inconsistent_dates``. The stream's age
limits (``late_event``, a ``ts`` in the future) do not apply: history is old by nature.

Cells become JSON values as :func:`json_value` says: an empty cell is null, a number is a
number, a boolean is ``true``/``false`` or ``1``/``0``, anything else is its text. A sale
needs no ``event_id`` or ``ts`` (columns or cells): its id is made from its content
(:func:`content_id`), so identical rows are duplicates, and its ``ts`` is midnight UTC of
its ``sale_date``. Transactions need both columns. An empty label cell means unlabelled (a
fraud feed may label only its frauds).

Rejected rows go to ``<file>.rejected.csv``: the row's ``line`` (its line in a CSV, the
header being line 1, unless a quoted cell before it spans lines; its row number from 1 in
Parquet), ``reason``, ``detail``, then the row's cells as read. A :class:`CleaningReport`
counts every outcome.

The file may be larger than memory. The first pass reads it in chunks, cleans each one and
writes its accepted rows (their JSON), sorted by event time, to a temporary run; the second
merges the runs lazily and makes the records as it yields them, in event-time order (ties
in file order). Memory holds a chunk, a block of each run and the ids already accepted
(about 100 bytes an id).

Examples
--------
>>> import tempfile
>>> from stream.usecases import DEMAND
>>> folder = tempfile.TemporaryDirectory()
>>> path = Path(folder.name) / "sales.csv"
>>> _ = path.write_text(
...     "store_id,product_id,product_name,category,price,cost,sale_date,units_sold\\n"
...     "s-1,p-1,Milk,dairy,1.2,0.8,2026-01-06,3\\n"
...     "s-1,p-1,Milk,dairy,1.2,,2026-01-05,\\n"
...     "s-1,p-1,Milk,dairy,free,0.8,2026-01-07,2\\n"
... )
>>> with History(DEMAND, path) as history:
...     for batch in history.batches():
...         for sale, units in batch:
...             print(sale.sale_date, sale.ts.isoformat(), sale.cost, units)
...     print(history.report.accepted, history.report.rejected["bad_type"])
2026-01-05 2026-01-05T00:00:00+00:00 None None
2026-01-06 2026-01-06T00:00:00+00:00 0.8 3.0
2 1
>>> print(history.rejected_path.read_text().splitlines()[1])
4,bad_type,price: Input should be a valid number,s-1,p-1,Milk,dairy,free,0.8,2026-01-07,2
>>> folder.cleanup()
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gc
import hashlib
import heapq
import io
import itertools
import json
import math
import pickle
import tempfile
import types
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Generic, Literal, NamedTuple, TypeVar, Union, get_args, get_origin

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from pydantic import AwareDatetime, BaseModel, ConfigDict

from stream.records import Record, Rejection, Sale, parse
from stream.usecases import UseCase

E = TypeVar("E", bound=Record)

REASONS: Final = (
    "invalid_json",
    "missing_field",
    "bad_type",
    "bad_format",
    "out_of_range",
    "duplicate_event",
    "inconsistent_dates",
)
"""Why a history row is rejected: the stream's reason codes, then the history's own.

``invalid_json`` is a row whose bytes are not UTF-8, as the stream says of such a payload.
"""

DERIVED_TS: Final[dict[type[Record], str]] = {Sale: "sale_date"}
"""Event records that may come without ``event_id`` and ``ts``, and the date giving ``ts``.

A sale is a product's record at a store for a business day: its content names it, and its
day dates it.
"""

BLOCK_ROWS: Final = 1000
"""Rows per pickled block of a run: the merge holds one block of each run in memory."""
MAX_RUNS: Final = 128
"""Runs merged at once; more are first merged in groups (a file descriptor and a block each)."""
LABEL_CACHE: Final = 10_000
"""Distinct label values whose outcome is remembered."""

Kind = Literal["bool", "number", "timestamp", "text"]
_TRUE: Final = frozenset({"true", "1"})
_FALSE: Final = frozenset({"false", "0"})


_RunRow = tuple[float, int, float | None, bytes]
"""An accepted row in a run: ts (epoch seconds), line, target, the event's JSON (valid).

A plain tuple, not a NamedTuple: pickle writes those in C. Rows sort by ts, then line.
"""


class HistoryError(ValueError):
    """A file that cannot be read as a history of its use case (a column missing, not a table)."""


class CleaningReport(BaseModel):
    """What cleaning a history file found; ``rows == accepted + sum(rejected.values())``.

    Attributes
    ----------
    rows
        Data rows read (blank lines are not rows).
    accepted
        Rows replayed; ``labelled + unlabelled == accepted``.
    rejected
        Rows rejected, by reason: every code of :data:`REASONS`, 0 when none.
    nulls
        Accepted rows without a value, for each field that may have none: the event's
        optional fields (an absent column counts as empty cells) and the label.
    outliers
        Accepted rows with a value the declared features treat as missing, by feature: a
        ``ratio`` outside its ``valid`` range (``cost_share``: a cost above 5 x the price).
    first_ts, last_ts
        Event time of the first and last accepted rows, in UTC; None when none is accepted.
    """

    model_config = ConfigDict(frozen=True)

    use_case: str
    rows: int
    accepted: int
    rejected: dict[str, int]
    nulls: dict[str, int]
    outliers: dict[str, int]
    labelled: int
    unlabelled: int
    first_ts: dt.datetime | None
    last_ts: dt.datetime | None

    def table(self) -> str:
        """The report as a short plain-text table: counts and their share of the rows read.

        >>> report = CleaningReport(
        ...     use_case="fraud", rows=4, accepted=3, rejected={"bad_type": 1, "bad_format": 0},
        ...     nulls={"is_fraud": 2}, outliers={}, labelled=1, unlabelled=2,
        ...     first_ts=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
        ...     last_ts=dt.datetime(2026, 1, 6, tzinfo=dt.UTC))
        >>> print(report.table())
        rows read      4  100.0%
        accepted       3   75.0%
          labelled     1   25.0%
          unlabelled   2   50.0%
        rejected       1   25.0%
          bad_type     1   25.0%
        null is_fraud  2   50.0%
        event time  2026-01-05T00:00:00+00:00 .. 2026-01-06T00:00:00+00:00
        """
        counts = [
            ("rows read", self.rows),
            ("accepted", self.accepted),
            ("  labelled", self.labelled),
            ("  unlabelled", self.unlabelled),
            ("rejected", sum(self.rejected.values())),
            *((f"  {reason}", n) for reason, n in self.rejected.items() if n),
            *((f"null {name}", n) for name, n in self.nulls.items()),
            *((f"outlier {name}", n) for name, n in self.outliers.items()),
        ]
        width = max(len(name) for name, _ in counts) + 2
        digits = len(f"{self.rows:,}")
        lines = [f"{name:<{width}}{n:>{digits},} {n / max(self.rows, 1):>7.1%}" for name, n in counts]
        span = "-"
        if self.first_ts is not None and self.last_ts is not None:
            span = f"{self.first_ts.isoformat()} .. {self.last_ts.isoformat()}"
        return "\n".join([*lines, f"event time  {span}"])


# --------------------------------------------------------------------------- the file's layout


def _kind(annotation: Any) -> Kind:
    """How a field's cells become JSON values, from its type (``X | None`` as ``X``)."""
    is_union = get_origin(annotation) in (Union, types.UnionType)
    args = [a for a in get_args(annotation) if a is not type(None)] if is_union else [annotation]
    if bool in args:
        return "bool"
    if float in args or int in args:
        return "number"
    if AwareDatetime in args or dt.datetime in args:
        return "timestamp"
    return "text"  # ids, names, codes, dates


@dataclass(frozen=True)
class _Layout:
    """What the use case and the file's header say about reading its rows."""

    columns: tuple[str, ...]  # the file's, in order
    fields: tuple[str, ...]  # the event record's, in declaration order
    read: tuple[str, ...]  # the event fields the file has a column for
    nullable: tuple[str, ...]  # the event fields a valid record may lack
    kinds: dict[str, Kind]  # of every field and the label
    label: str
    derived_ts: str | None  # the date field ``ts`` comes from, for records that may lack it


def _layout(use_case: UseCase[Any, Any], columns: Sequence[str]) -> _Layout:
    event_type: type[Record] = use_case.event_type
    fields = tuple(event_type.model_fields)
    label = use_case.label_field
    derived_ts = DERIVED_TS.get(event_type)
    nullable = tuple(name for name, info in event_type.model_fields.items() if not info.is_required())
    may_lack = {*nullable, *(("event_id", "ts") if derived_ts is not None else ())}
    missing = [name for name in [*fields, label] if name not in columns and name not in may_lack]
    if missing:
        raise HistoryError(
            f"a {use_case.name} history needs the column(s) {', '.join(missing)}; "
            f"it has {', '.join(columns) or 'none'}"
        )
    kinds = {name: _kind(info.annotation) for name, info in event_type.model_fields.items()}
    kinds[label] = _kind(use_case.label_type.model_fields[label].annotation)
    read = tuple(name for name in fields if name in columns)
    return _Layout(
        columns=tuple(columns),
        fields=fields,
        read=read,
        nullable=nullable,
        kinds=kinds,
        label=label,
        derived_ts=derived_ts,
    )


# --------------------------------------------------------------------------- reading


class _Digest(io.RawIOBase):
    """A binary file that hashes and counts the bytes read through it: no pass of its own."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        self.sha256.update(memoryview(buffer)[:n])
        self.size += n
        return int(n)

    def drain(self) -> None:
        """Hash what the reader left unread (nothing, when it read to the end)."""
        while block := self._raw.read(1 << 20):
            self.sha256.update(block)
            self.size += len(block)


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def _header(path: Path) -> list[str]:
    if _is_parquet(path):
        try:
            return list(pq.read_schema(path).names)
        except pa.ArrowInvalid as exc:
            raise HistoryError(f"{path} is not a Parquet file: {exc}") from None
    try:
        return list(pd.read_csv(path, nrows=0, encoding_errors="surrogateescape").columns)
    except pd.errors.EmptyDataError:
        raise HistoryError(f"{path} is empty: a history needs a header line") from None


def _csv_chunks(path: Path, chunk_rows: int, digest: _Digest) -> Iterator[pd.DataFrame]:
    # Every cell as its text ("" when empty): the cleaning decides what a cell means.
    # Python strings (object), not pandas' Arrow strings: the cleaning wants Python values
    # and this reads twice as fast. Blank lines are kept as empty rows so that row positions
    # stay line numbers. Bytes that are not UTF-8 are kept (as surrogates) so that their row
    # is rejected, not the file.
    reader = pd.read_csv(
        io.BufferedReader(digest, 1 << 20),
        dtype=object,
        na_filter=False,
        skip_blank_lines=False,
        chunksize=chunk_rows,
        encoding_errors="surrogateescape",
    )
    try:
        yield from reader
    except pd.errors.ParserError as exc:
        raise HistoryError(f"{path} is not a well-formed CSV: {exc}") from None
    digest.drain()


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    start = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
        # Typed columns become text, then go the way of a CSV's cells: one cleaning.
        text = {
            name: pc.fill_null(pc.cast(column, pa.string()), "").to_numpy(zero_copy_only=False)
            for name, column in zip(batch.schema.names, batch.columns, strict=True)
        }
        yield pd.DataFrame(text, index=pd.RangeIndex(start, start + batch.num_rows))
        start += batch.num_rows


def _without_blank_lines(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with a cell: a blank line (all cells empty) is no row."""
    maybe = (frame.iloc[:, 0] == "").to_numpy()  # the first cell is rarely empty: cheap to look at
    if not maybe.any():
        return frame
    blank = np.zeros(len(frame), dtype=bool)
    blank[maybe] = (frame[maybe] == "").all(axis=1).to_numpy()
    return frame[~blank]


def _file_digest(path: Path) -> tuple[int, str]:
    sha256 = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            sha256.update(block)
            size += len(block)
    return size, sha256.hexdigest()


# --------------------------------------------------------------------------- cells to JSON


def json_value(text: str, kind: Kind) -> Any:
    """The JSON value a cell stands for, as the stream would receive it.

    An empty cell is null. A number field's cell that parses as a number is a number (NaN
    and infinities too: the record says ``out_of_range``), else it stays a string (the record
    says ``bad_type``). A ``ts`` that is a finite number is one too (epoch milliseconds, as
    the stream takes them), else its text. A boolean is ``true``/``false`` or ``1``/``0``, in
    any case. Anything else (ids, codes, dates, ISO timestamps) is its text.

    >>> [json_value(text, "number") for text in ["1.5", "", "12,50", "nan", "1e400"]]
    [1.5, None, '12,50', nan, inf]
    >>> [json_value(text, "bool") for text in ["TRUE", "0", "yes"]]
    [True, False, 'yes']
    >>> [json_value(text, "timestamp") for text in ["1767571200000", "2026-01-05T00:00:00Z"]]
    [1767571200000.0, '2026-01-05T00:00:00Z']
    """
    if text == "":
        return None
    if kind == "bool":
        lower = text.lower()
        return True if lower in _TRUE else False if lower in _FALSE else text
    # ISO times have a colon, and a failed float() is slow; Python's float() also reads
    # "1_000" and non-ASCII digits, which are no numbers in a file
    if kind == "text" or (kind == "timestamp" and ":" in text) or "_" in text or not text.isascii():
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    return number if kind == "number" or math.isfinite(number) else text


def _json(value: Any) -> bytes:
    """``value`` as JSON: NaN and infinities as numbers, text that was not UTF-8 as its bytes."""
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value).encode()  # orjson would write null
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # surrogates: the file's bytes were not UTF-8, nor is the JSON
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogateescape")


def _members(name: str, cells: npt.NDArray[np.object_], kind: Kind) -> list[bytes]:
    """``"name":value`` for each cell: the JSON is made once for each distinct cell."""
    codes, distinct = pd.factorize(cells)
    key = orjson.dumps(name) + b":"
    encoded = np.array([key + _json(json_value(text, kind)) for text in distinct], dtype=object)
    members: list[bytes] = encoded[codes].tolist()
    return members


def content_id(cells: Sequence[str]) -> str:
    """A sale's id from its content: ``h-`` and 16 hex digits of the SHA-256 of its cells.

    The cells are those of every event field but ``event_id``, in the record's order, ``""``
    for a field without a column, so identical rows have the same id.

    >>> content_id(["", "s-1", "p-1", "Milk", "dairy", "1.2", "", "", "2026-01-05", ""])
    'h-6d29afaff7c59860'
    """
    return "h-" + hashlib.sha256(_json(list(cells))).hexdigest()[:16]


def _cells(frame: pd.DataFrame, name: str) -> npt.NDArray[np.object_]:
    """A column's cells; empty ones if the file has no such column."""
    cells: npt.NDArray[np.object_] = (
        frame[name].to_numpy(dtype=object) if name in frame.columns else np.full(len(frame), "", dtype=object)
    )
    return cells


def _derived(frame: pd.DataFrame, layout: _Layout) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.object_]]:
    """The ``event_id`` and ``ts`` cells of records that may lack them, made where empty."""
    assert layout.derived_ts is not None
    ids = _cells(frame, "event_id").copy()
    no_id = ids == ""
    if no_id.any():
        others = [_cells(frame, name)[no_id] for name in layout.fields if name != "event_id"]
        ids[no_id] = [content_id(row) for row in zip(*others, strict=True)]
    ts = _cells(frame, "ts")
    days = _cells(frame, layout.derived_ts)
    ts = np.where((ts == "") & (days != ""), days + "T00:00:00+00:00", ts)
    return ids, ts


def _label_members(frame: pd.DataFrame, layout: _Layout) -> list[bytes | None]:
    """Each row's ``"label":value`` JSON; None where the label is empty (unlabelled)."""
    cells = frame[layout.label].to_numpy(dtype=object)
    members = _members(layout.label, cells, layout.kinds[layout.label])
    return [None if cell == "" else member for cell, member in zip(cells, members, strict=True)]


def _event_payloads(frame: pd.DataFrame, layout: _Layout) -> list[bytes]:
    """Each row's event as the JSON the stream would receive: the fields of the file, or made."""
    cells = {name: _cells(frame, name) for name in layout.read}
    if layout.derived_ts is not None:
        cells["event_id"], cells["ts"] = _derived(frame, layout)
    members = [_members(name, cells[name], layout.kinds[name]) for name in layout.fields if name in cells]
    return [b"{%s}" % b",".join(row) for row in zip(*members, strict=True)]


# --------------------------------------------------------------------------- runs


def _write_blocks(file: IO[bytes], rows: Iterable[_RunRow]) -> None:
    iterator = iter(rows)
    while block := list(itertools.islice(iterator, BLOCK_ROWS)):
        pickle.dump(block, file, protocol=pickle.HIGHEST_PROTOCOL)


def _read_run(path: Path) -> Iterator[_RunRow]:
    with path.open("rb") as file:
        while True:
            try:
                block: list[_RunRow] = pickle.load(file)
            except EOFError:
                return
            yield from block


def _merge(paths: Sequence[Path]) -> Iterator[_RunRow]:
    if len(paths) == 1:  # a sorted file
        return _read_run(paths[0])
    # Rows compare as tuples: by (key, line), unique, so never further; in C.
    return heapq.merge(*(_read_run(path) for path in paths))


class _Runs:
    """Sorted runs of accepted rows in a folder: added chunk by chunk, merged lazily."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: list[Path] = []
        self.first: _RunRow | None = None
        self.last: _RunRow | None = None
        self._tail: _RunRow | None = None  # the last row of the last run

    def add(self, rows: list[_RunRow]) -> None:
        """Add one chunk's rows, sorted here; a chunk that follows the last run extends it."""
        if not rows:
            return
        rows.sort()
        # A sorted file makes one run and a nearly sorted one few: less for the merge to do.
        if self._tail is None or rows[0] < self._tail:
            self.paths.append(self.folder / f"run-{len(self.paths):06d}.pickle")
        with self.paths[-1].open("ab") as file:
            _write_blocks(file, rows)
        self._tail = rows[-1]
        self.first = rows[0] if self.first is None else min(self.first, rows[0])
        self.last = rows[-1] if self.last is None else max(self.last, rows[-1])

    def merged(self) -> Iterator[_RunRow]:
        """Every row of every run, by event time then line."""
        while len(self.paths) > MAX_RUNS:  # a huge file: merge groups first, to bound open files
            groups = [self.paths[i : i + MAX_RUNS] for i in range(0, len(self.paths), MAX_RUNS)]
            merged = []
            for group in groups:
                merged.append(self.folder / f"merged-{uuid.uuid4().hex}.pickle")
                with merged[-1].open("wb") as file:
                    _write_blocks(file, _merge(group))
                for path in group:
                    path.unlink()
            self.paths = merged
        return _merge(self.paths)


# --------------------------------------------------------------------------- cleaning


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: for making many objects that make no cycles.

    A chunk's rows, a batch's records: each is tens of thousands of new objects, alive
    until the chunk is written or the batch is handed over. The collector would walk them
    again and again (and everything older, in full collections) for nothing: building a
    batch of 2000 sales took twice as long with it. Collection resumes after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _date_problem(event: Any) -> str | None:
    """Why a sale's dates cannot all be true, or None: sold or expiring before bought."""
    bought = event.purchase_date
    if bought is None:
        return None
    if event.sale_date < bought:
        return f"sale_date {event.sale_date} is before purchase_date {bought}"
    if event.expiry_date is not None and event.expiry_date < bought:
        return f"expiry_date {event.expiry_date} is before purchase_date {bought}"
    return None


class _Refused(NamedTuple):
    position: int  # in the chunk
    reason: str
    detail: str


@dataclass
class _Tally:
    """The report's counts as the chunks go by."""

    rows: int = 0
    labelled: int = 0
    unlabelled: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    nulls: Counter[str] = field(default_factory=Counter)
    outliers: Counter[str] = field(default_factory=Counter)


class History(Generic[E]):
    """A labelled history file of a use case, cleaned, replayed in event-time order.

    Parameters
    ----------
    use_case
        Whose records the rows are (:data:`stream.usecases.FRAUD`, :data:`~stream.usecases.DEMAND`).
    path
        A CSV file, or a Parquet file by the suffix ``.parquet``.
    chunk_rows
        Rows cleaned at a time: memory against speed.
    on_rows
        Called with the number of rows just read, as the file is read (a progress bar).

    Raises
    ------
    HistoryError
        At once when the file lacks a column the use case needs (or a header); while reading
        when a CSV line has more cells than the header.

    Notes
    -----
    The file is read on first need (:meth:`clean`, :meth:`batches`, :attr:`report`,
    :attr:`size`, :attr:`sha256`), once. The temporary runs live until :meth:`close` (or
    the end of a ``with`` block), so :meth:`batches` can replay the rows several times.
    """

    def __init__(
        self,
        use_case: UseCase[E, Any],
        path: Path,
        *,
        chunk_rows: int = 50_000,
        on_rows: Callable[[int], None] | None = None,
    ) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, not {chunk_rows}")
        self.use_case = use_case
        self.path = Path(path)
        self.rejected_path = self.path.with_name(self.path.name + ".rejected.csv")
        self.chunk_rows = chunk_rows
        self.on_rows = on_rows
        self._layout = _layout(use_case, _header(self.path))
        self._targets: dict[bytes, float | Rejection] = {}  # a label's target, or why not
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._runs: _Runs | None = None
        self._report: CleaningReport | None = None
        self._size = 0
        self._sha256 = ""

    def __enter__(self) -> History[E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the temporary runs (the report and the rejected file stay)."""
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    @property
    def report(self) -> CleaningReport:
        """What cleaning found (reads the file if not yet read)."""
        return self.clean()

    @property
    def size(self) -> int:
        """The file's size in bytes, as read."""
        self.clean()
        return self._size

    @property
    def sha256(self) -> str:
        """The SHA-256 of the file's bytes as read, in hex."""
        self.clean()
        return self._sha256

    def clean(self) -> CleaningReport:
        """Read and clean the whole file (the first pass), once; write the rejected rows."""
        if self._report is not None:
            return self._report
        self._folder = tempfile.TemporaryDirectory(prefix="history-")
        runs = _Runs(Path(self._folder.name))
        tally = _Tally()
        seen: dict[str, int] = {}  # accepted event id -> its line
        first_line = 1 if _is_parquet(self.path) else 2  # a CSV's line 1 is its header
        # surrogateescape: a row that was not UTF-8 is written back as its original bytes
        with self.rejected_path.open("w", newline="", errors="surrogateescape") as rejected_file:
            rejected = csv.writer(rejected_file)
            rejected.writerow(["line", "reason", "detail", *self._layout.columns])
            for frame in self._chunks():
                frame = _without_blank_lines(frame)
                lines = (frame.index.to_numpy() + first_line).tolist()
                with _gc_paused():
                    accepted, positions, refused = self._clean_chunk(frame, lines, seen, tally)
                runs.add(accepted)
                self._count(frame, positions, tally)
                cells = frame.iloc[[r.position for r in refused]].to_numpy(dtype=object)
                for r, row in zip(refused, cells, strict=True):
                    rejected.writerow([lines[r.position], r.reason, r.detail, *row])
                    tally.rejected[r.reason] += 1
                tally.rows += len(frame)
                if self.on_rows is not None:
                    self.on_rows(len(frame))
        self._runs = runs
        self._report = self._make_report(tally, runs)
        return self._report

    def batches(self, size: int = 2000) -> Iterator[list[tuple[E, float | None]]]:
        """The accepted rows as ``(event, target)``, in event-time order (ties in file order).

        ``target`` is the label's value as a float (``is_fraud`` as 1.0 or 0.0), None when
        the row is unlabelled. Lists of ``size`` rows (the last may be shorter).
        """
        if size < 1:
            raise ValueError(f"size must be >= 1, not {size}")
        self.clean()
        if self._runs is None or self._folder is None:
            raise RuntimeError("the history is closed: its runs are removed")
        # The runs keep each event's JSON, validated in the first pass. Validating it again
        # (2-2.5 us a sale here) is the cheapest way back to a record: keeping the record's
        # values instead costs more, in pickling its dates (4-5 us a sale) or as ISO text
        # in converting them in Python both ways, and model_construct alone takes 3 us.
        validate = self.use_case.event_type.model_validate_json
        rows = self._runs.merged()
        while True:
            with _gc_paused():
                batch = [
                    (validate(payload), target) for _, _, target, payload in itertools.islice(rows, size)
                ]
            if not batch:
                return
            yield batch

    # ----------------------------------------------------------------------- the first pass

    def _chunks(self) -> Iterator[pd.DataFrame]:
        if _is_parquet(self.path):
            # Parquet is read by row group, not front to back: it is hashed on its own.
            self._size, self._sha256 = _file_digest(self.path)
            yield from _parquet_chunks(self.path, self.chunk_rows)
            return
        with self.path.open("rb", buffering=0) as raw:
            digest = _Digest(raw)
            yield from _csv_chunks(self.path, self.chunk_rows, digest)
            self._size, self._sha256 = digest.size, digest.sha256.hexdigest()

    def _clean_chunk(
        self, frame: pd.DataFrame, lines: list[int], seen: dict[str, int], tally: _Tally
    ) -> tuple[list[_RunRow], list[int], list[_Refused]]:
        """Decide every row of a chunk: the run rows and positions of the accepted, the refused."""
        event_type: type[Any] = self.use_case.event_type  # a Record with event_id and ts
        check_dates = "purchase_date" in event_type.model_fields
        outliers = self.use_case.features.outliers
        targets = self._targets
        accepted: list[_RunRow] = []
        positions: list[int] = []
        refused: list[_Refused] = []
        rows = zip(
            _event_payloads(frame, self._layout), _label_members(frame, self._layout), lines, strict=True
        )
        for i, (payload, label, line) in enumerate(rows):
            event = parse(event_type, payload)
            if isinstance(event, Rejection):
                refused.append(_Refused(i, event.reason, event.detail))
                continue
            target = None if label is None else targets.get(label)
            if target is None and label is not None:
                target = self._target(event.event_id, label)
            if isinstance(target, Rejection):
                refused.append(_Refused(i, target.reason, target.detail))
                continue
            if check_dates and (problem := _date_problem(event)) is not None:
                refused.append(_Refused(i, "inconsistent_dates", problem))
                continue
            first = seen.setdefault(event.event_id, line)
            if first != line:
                detail = f"event id {event.event_id} was first read at line {first}"
                refused.append(_Refused(i, "duplicate_event", detail))
                continue
            accepted.append((event.ts.timestamp(), line, target, payload))
            positions.append(i)
            for name in outliers(event):  # as the declared features see them
                tally.outliers[name] += 1
        return accepted, positions, refused

    def _target(self, event_id: str, member: bytes) -> float | Rejection:
        """The target of a label (its ``"field":value`` JSON), or why the label is invalid."""
        label = parse(self.use_case.label_type, b'{"event_id":%s,%s}' % (orjson.dumps(event_id), member))
        outcome = label if isinstance(label, Rejection) else float(self.use_case.target(label))
        # A label's validity is its value's (its event_id passed the same check in the
        # event): the few distinct values of a label (booleans, counts) are parsed once each.
        if len(self._targets) < LABEL_CACHE:
            self._targets[member] = outcome
        return outcome

    def _count(self, frame: pd.DataFrame, positions: list[int], tally: _Tally) -> None:
        """Count the accepted rows' labels and nulls, column by column."""
        ok = np.zeros(len(frame), dtype=bool)
        ok[positions] = True
        layout = self._layout
        labelled = int(np.count_nonzero(ok & (frame[layout.label] != "").to_numpy()))
        tally.labelled += labelled
        tally.unlabelled += len(positions) - labelled
        for name in layout.nullable:
            empty = (frame[name] == "").to_numpy() if name in layout.columns else ok
            tally.nulls[name] += int(np.count_nonzero(ok & empty))
        tally.nulls[layout.label] += len(positions) - labelled

    def _make_report(self, tally: _Tally, runs: _Runs) -> CleaningReport:
        layout = self._layout
        event_type: type[Any] = self.use_case.event_type
        first, last = (
            None if row is None else event_type.model_validate_json(row[3]).ts.astimezone(dt.UTC)
            for row in (runs.first, runs.last)
        )
        return CleaningReport(
            use_case=self.use_case.name,
            rows=tally.rows,
            accepted=tally.labelled + tally.unlabelled,
            rejected={reason: tally.rejected[reason] for reason in REASONS},
            nulls={name: tally.nulls[name] for name in [*layout.nullable, layout.label]},
            outliers=dict(tally.outliers),
            labelled=tally.labelled,
            unlabelled=tally.unlabelled,
            first_ts=first,
            last_ts=last,
        )
