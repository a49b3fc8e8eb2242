"""Baseline: a stock Faust agent per event topic, one event at a time, one ``await send`` each.

This is how a Faust tutorial writes it: ``async for value in stream``, score, ``await
topic.send(...)``, with Faust's default producer, consumer and commit settings. Only what
the local broker needs is set (2 s session timeout, 0.5 s heartbeat), and the log level. It
keeps Faust's terminal spinner, which at WARNING and above puts the root logger at DEBUG (the
scoring worker drops it: :func:`stream.runtime.app.faust_worker`). The scoring work is
:class:`bench.baseline.BaselineScorer`'s, the same as the plain loop's.

Run by the benchmark as ``python -m bench.stock_faust`` with the ``SCORING_*`` environment
of :class:`stream.settings.Settings` (namespace, broker, log level); it consumes the
namespace's event topics as consumer group ``<namespace>.stock-faust``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust

from bench.baseline import BaselineScorer
from stream.runtime.app import faust_app
from stream.settings import Settings
from stream.usecases import DEADLETTER_TOPIC, USE_CASES


def create_app(settings: Settings) -> faust.App:
    """A Faust app with one per-event scoring agent per use case."""
    app = faust_app(settings, settings.topic("stock-faust"))
    scorer = BaselineScorer()
    outputs = {
        name: app.topic(settings.topic(name), key_type=bytes, value_type=bytes)
        for name in [DEADLETTER_TOPIC, *(uc.prediction_topic for uc in USE_CASES)]
    }
    for use_case in USE_CASES:
        source = app.topic(settings.topic(use_case.event_topic), key_type=bytes, value_type=bytes)
        name = f"stock_{use_case.name}"
        app.agent(source, name=name)(_agent(name, scorer, use_case.event_topic, outputs))
    return app


def _agent(
    name: str, scorer: BaselineScorer, topic: str, outputs: dict[str, Any]
) -> Callable[[Any], Awaitable[None]]:
    async def agent(stream: Any) -> None:
        async for value in stream:
            for out_topic, key, out in scorer.handle(topic, [value]):
                await outputs[out_topic].send(key=key, value=out)

    agent.__qualname__ = name
    return agent


def main() -> None:
    settings = Settings.from_env()
    worker = faust.Worker(create_app(settings), loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
