"""How long to wait before trying again, and how often to say so.

One :class:`Backoff` paces every retry of the project (0.5 s, doubled after each failure up
to 10 s, back to 0.5 s after a success), and :class:`Repeats` lets a repeated warning
through at the same pace, so that an outage is a handful of log lines, not a flood.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 10.0


class Backoff:
    """Exponential delays with a cap; :meth:`reset` after a success starts over.

    >>> backoff = Backoff()
    >>> [backoff.next() for _ in range(7)]
    [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    >>> backoff.reset(); backoff.next()
    0.5
    """

    def __init__(self, first: float = FIRST_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS) -> None:
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        """The delay before the next try: twice the previous one, at most the cap."""
        delay = self._next
        self._next = min(2 * delay, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


@dataclass
class _Repeated:
    last: float  # when it was last seen
    next_at: float  # when a repeat is let through again
    backoff: Backoff = field(default_factory=Backoff)
    held: int = 0  # repeats held back since the last one let through


class Repeats(logging.Filter):
    """Lets a warning or error through, then its repeats at most once per backoff step.

    The repeat let through says how many were held back before it. A line not seen for
    longer than the backoff's cap starts over.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()  # librdkafka's callbacks come from several threads
        self._lines: dict[str, _Repeated] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        line, now = record.getMessage(), time.monotonic()
        with self._lock:
            seen = self._lines.get(line)
            if seen is None or now - seen.last > MAX_DELAY_SECONDS:
                self._lines = {k: v for k, v in self._lines.items() if now - v.last <= MAX_DELAY_SECONDS}
                seen = self._lines[line] = _Repeated(now, now)
            seen.last = now
            if now < seen.next_at:
                seen.held += 1
                return False
            seen.next_at = now + seen.backoff.next()
            held, seen.held = seen.held, 0
        if held:
            record.msg, record.args = f"{line} ({held} more like it held back)", ()
        return True
