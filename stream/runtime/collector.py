"""The garbage collector of a long-running service process: a worker, or ``scoring api``.

What a process has loaded once it is set up (modules, the app, the models) lives as long as
the process: :func:`settle` keeps the collector from scanning it again and again (a full
collection of a set-up ``scoring api`` process took ~120 ms on a 2-core machine: a pause that
every request or event in flight waits for), and collects the young generation less often
(each event allocates dozens of short-lived objects). Measured in the bench: README,
Performance.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 10)
"""The collector's generation thresholds in a service process (Python's default: 700, 10, 10)."""


def settle() -> None:
    """Freeze what is loaded by now out of the collector's reach, and raise its thresholds."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
