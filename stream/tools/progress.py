"""Progress of the tools' long steps: live bars on a terminal, plain lines in a log.

On a terminal, rich draws live bars; anywhere else (a log, CI) progress is a plain line
every :data:`PLAIN_LINE_SECONDS` and one at the end, never carriage-return frames.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TextIO

import rich.progress
from rich.console import Console

PLAIN_LINE_SECONDS = 10.0
"""Without a terminal, progress is one line this often, and one at the end."""


@contextlib.contextmanager
def rows_progress(out: TextIO | None, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Rows done, their rate and the rows left (of ``total``, if known): live bars on a
    terminal, else a line every :data:`PLAIN_LINE_SECONDS` and one at the end."""
    console = Console(file=out)
    if console.is_terminal:
        bar = rich.progress.Progress(
            rich.progress.TextColumn("{task.description:<32}"),
            rich.progress.BarColumn(),
            rich.progress.TextColumn("{task.completed:>10,.0f} rows"),
            rich.progress.TextColumn("{task.fields[rate]:>8,.0f} rows/s"),
            rich.progress.TimeRemainingColumn(),
            console=console,
        )
        task = bar.add_task(description, total=total, rate=0.0)
        began = time.perf_counter()

        def show(n: int) -> None:
            bar.update(task, advance=n)
            bar.update(task, rate=bar.tasks[0].completed / max(time.perf_counter() - began, 1e-9))

        with bar:
            yield show
        return
    began = due = time.perf_counter()
    done, shown = 0, -1  # rows done, and when last shown

    def line() -> str:
        rate = done / max(time.perf_counter() - began, 1e-9)
        left = "" if total is None else f", {total - done:,} left"
        return f"{description}: {done:,} rows, {rate:,.0f} rows/s{left}"

    def advance(n: int) -> None:
        nonlocal done, due, shown
        done += n
        if time.perf_counter() >= due:
            due = time.perf_counter() + PLAIN_LINE_SECONDS
            shown = done
            console.print(line(), highlight=False)

    yield advance
    if shown != done:  # the end, unless the last line said it already
        console.print(line(), highlight=False)
