"""The API's batching: what arrives during a call goes with the next; a bug fails its item alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import redis.exceptions

from stream.api.batching import Batcher


class Step:
    """A step that records its calls, waits for ``release`` during each, and fails as told."""

    def __init__(self, fail_on: int | None = None, outage: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_on, self.outage = fail_on, outage

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.calls.append(list(items))
        await self.release.wait()
        if self.outage:
            raise redis.exceptions.ConnectionError("no Redis")
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [10 * item for item in items]


async def test_a_lone_item_goes_at_once_and_what_arrives_meanwhile_goes_next_together() -> None:
    step = Step()
    batcher = Batcher(step)
    first = batcher.submitted(1)
    await asyncio.sleep(0)  # the first call starts, and waits for its answer
    later = [batcher.submitted(n) for n in (2, 3, 4)]
    step.release.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40]
    assert step.calls == [[1], [2, 3, 4]]
    assert await batcher.drained(timeout=1.0)


async def test_a_bug_fails_its_own_item_only() -> None:
    step = Step(fail_on=3)
    step.release.set()
    batcher = Batcher(step)
    results = await asyncio.gather(*(batcher.submit(n) for n in (2, 3, 4)), return_exceptions=True)
    assert results[0] == 20 and results[2] == 40
    assert isinstance(results[1], ValueError)
    assert step.calls == [[2, 3, 4], [2], [3], [4]]


async def test_an_outage_fails_the_whole_call_without_retrying_item_by_item() -> None:
    step = Step(outage=True)
    step.release.set()
    batcher = Batcher(step)
    results = await asyncio.gather(*(batcher.submit(n) for n in (1, 2)), return_exceptions=True)
    assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results)
    assert step.calls == [[1, 2]]


async def test_drained_says_whether_the_submitted_items_are_done_in_time() -> None:
    step = Step()
    batcher = Batcher(step)
    pending = batcher.submitted(1)
    assert not await batcher.drained(timeout=0.01)
    step.release.set()
    assert await batcher.drained(timeout=1.0) and pending.result() == 10


@pytest.mark.parametrize("waiters", [1, 3])
async def test_a_waiter_that_gives_up_leaves_the_others_their_results(waiters: int) -> None:
    step = Step()
    batcher = Batcher(step)
    gone = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0)
    kept = [batcher.submitted(n) for n in range(1, waiters + 1)]
    gone.cancel()
    step.release.set()
    assert await asyncio.wait_for(asyncio.gather(*kept), 5) == [10 * n for n in range(1, waiters + 1)]
