"""The tools' progress in a log: a line as rows start, at most one every few seconds, the end once."""

from __future__ import annotations

import io

from stream.tools.progress import rows_progress


def test_a_log_gets_the_first_rows_and_the_end_each_once() -> None:
    out = io.StringIO()  # not a terminal: plain lines
    with rows_progress(out, "learning", 300) as advance:
        advance(100)
        advance(200)  # within the same seconds: no line until the end
    assert [line.split(" rows,")[0] for line in out.getvalue().splitlines()] == [
        "learning: 100",
        "learning: 300",
    ]

    out = io.StringIO()
    with rows_progress(out, "cleaning", None) as advance:
        advance(50)  # one chunk: the first line is also the end
    (line,) = out.getvalue().splitlines()
    assert line.startswith("cleaning: 50 rows, ") and "left" not in line
