"""Requests that arrive while a step runs go through its next call together.

The API scores one event per request, but each step it shares with the worker takes a
batch (a Redis script call for many events, a publication of many records) and costs about
the same for one item as for a few: most of a call is the round trip and the client's own
work. A :class:`Batcher` runs a step for whatever was submitted while its previous call ran,
so a lone request goes at once (no timer, no added wait), and under load the requests that
queue behind a call share the next one, as a worker's batches do.

Examples
--------
>>> import asyncio
>>> calls = []
>>> async def double(items):
...     calls.append(list(items))
...     await asyncio.sleep(0)
...     return [2 * item for item in items]
>>> async def main():
...     batcher = Batcher(double)
...     return await asyncio.gather(*(batcher.submit(n) for n in range(4)))
>>> asyncio.run(main()), calls
([0, 2, 4, 6], [[0, 1, 2, 3]])
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from stream.runtime.retry import TRANSIENT_ERRORS

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Calls ``step`` on the items submitted while its previous call ran, in their order.

    ``step`` returns one result per item. A transient error (an outage) fails every item of
    its call; any other error is a bug, and the call's items are tried again one by one, so
    that the item that meets it fails alone (the steps are idempotent: a claim or a record
    made before the error is found again).
    """

    def __init__(self, step: Callable[[Sequence[T]], Awaitable[Sequence[R]]]) -> None:
        self._step = step
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._draining: asyncio.Future[None] | None = None

    def submitted(self, item: T) -> asyncio.Future[R]:
        """Submit ``item``; its result's future (it goes on if its waiter gives up)."""
        result: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, result))
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())
        return result

    async def submit(self, item: T) -> R:
        """``item``'s result, once the call it goes with returns."""
        return await self.submitted(item)

    async def drained(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every item submitted to be done; whether they are."""
        if self._draining is None:
            return True
        done, _ = await asyncio.wait([self._draining], timeout=timeout)
        return bool(done)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._call(batch, isolate=len(batch) > 1)
        finally:
            self._draining = None

    async def _call(self, batch: list[tuple[T, asyncio.Future[R]]], *, isolate: bool) -> None:
        try:
            results = await self._step([item for item, _ in batch])
        except TRANSIENT_ERRORS as exc:
            _fail(batch, exc)
        except Exception as exc:
            if not isolate:
                _fail(batch, exc)
                return
            for one in batch:
                await self._call([one], isolate=False)
        else:
            for (_, result), value in zip(batch, results, strict=True):
                if not result.done():
                    result.set_result(value)


def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, result in batch:
        if not result.done():
            result.set_exception(exc)
