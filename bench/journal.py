"""``python -m bench.journal``: a journal on one slot, or the buckets' journals merged.

A learner reads its use case's journal in one order. On a Redis Cluster the journal could
live on one slot (one master appends every entry of the use case) or be one stream per
bucket (each appended by the script that changes its bucket's state, on that bucket's
master) that the learner merges. This measures what each costs:

- **append**: the Redis CPU an entry costs its node (``XADD ... MAXLEN ~`` of a scored
  event's record and of a label's, as ``lua/state.lua`` appends them, sent in
  pipelines). A journal on one slot costs one node that much per scored event and again
  per label, however many shards the cluster has;
- **read**: the learner's reading of the entries, :meth:`StateStore.read_journal` 500 at a
  time as :mod:`stream.runtime.learner` reads them: one stream (``XREAD``, a single Redis)
  against the buckets' journals of a three-master cluster, merged; entries/s, and the
  reader's own CPU per entry (Redis runs on the same cores here, not in production).

Examples
--------
.venv/bin/python -m bench.journal                       # 100,000 entries, 16 buckets, ~1 min
.venv/bin/python -m bench.journal --entries 20000 --buckets 64
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.typing import EncodableT, FieldT

from stream.features import Prior
from stream.records import Transaction
from stream.redis_client import redis_client
from stream.runtime.keys import EntityKey, entity_key
from stream.runtime.learner import READ_COUNT
from stream.runtime.pending import Recorded, layout_of
from stream.runtime.state import START, Sources, StateStore
from stream.settings import Settings
from stream.tools.localstack import running_redis_cluster, running_stack
from stream.tools.simulator import SimulationConfig, labelled_events
from stream.usecases import FRAUD

# Entries appended per pipeline.
PIPELINE = 1000

Entry = dict[FieldT, EncodableT]
"""A journal entry's fields."""


def pending_records(count: int) -> list[tuple[EntityKey, bytes]]:
    """``count`` pending records of simulated transactions with their entities, as the scorer
    writes them."""
    records = []
    layout = layout_of(FRAUD)
    config = SimulationConfig(transactions=count, sales=0, seed=1)
    start = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
    for topic, payload, _ in labelled_events(config, start=start):
        if topic != FRAUD.event_topic:
            continue
        event = Transaction.model_validate(payload)
        x = FRAUD.features.compute(event, Prior())
        entity = entity_key((event.account_id,))
        made = Recorded("fraud.12", "live", 1.0, 12.5, 0.01, event.account_id)
        records.append((entity, layout.encode(x, made, entity)))
    return records[:count]


def entries(records: Sequence[tuple[EntityKey, bytes]]) -> list[Entry]:
    """A scored event's entry for each pending record (the event's record as scored: read at
    offset ``i`` of ``transactions``), and a label's for every other one."""
    sources = Sources("transactions/")
    scored = [
        sources.scored(entity, f"transactions/0/{i}", pending) for i, (entity, pending) in enumerate(records)
    ]
    labels: list[Entry] = [
        {"r": record, "y": "1", "s": f"transactions.labels/0/{i}"} for i, record in enumerate(scored[::2])
    ]
    events: list[Entry] = [{"r": record} for record in scored]
    return events + labels


def append_cost(url: str, fields: Sequence[Entry], journal_max: int) -> float:
    """Redis CPU (µs) per entry appended to one journal at ``url``."""
    with redis.Redis.from_url(url) as client:
        before = _cpu_seconds(client)
        for first in range(0, len(fields), PIPELINE):
            pipe = client.pipeline(transaction=False)
            for entry in fields[first : first + PIPELINE]:
                pipe.xadd("bench:journal", entry, maxlen=journal_max, approximate=True)
            pipe.execute()
        return (_cpu_seconds(client) - before) / len(fields) * 1e6


def _cpu_seconds(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def read_rate(settings: Settings, fields: Sequence[Entry]) -> tuple[float, float]:
    """Entries per second the learner reads, and its CPU (µs) per entry, once ``fields`` are
    appended to ``settings``'s journals (round robin over the buckets)."""
    client = redis_client(settings)
    try:
        store = StateStore(client, settings)
        journals = [prefix + "journal" for prefix in store.buckets(FRAUD.name).prefixes]
        pipe = client.pipeline(transaction=False)
        for i, entry in enumerate(fields):
            pipe.xadd(journals[i % len(journals)], entry)
            if i % PIPELINE == PIPELINE - 1:
                await pipe.execute()
        await pipe.execute()
        await asyncio.sleep(0.01)  # past the millisecond of the last entry
        began, cpu, position, read = time.perf_counter(), time.process_time(), START, 0
        while read < len(fields):
            batch = await store.read_journal(FRAUD, position, READ_COUNT)
            position, read = batch[-1].position, read + len(batch)
        return read / (time.perf_counter() - began), (time.process_time() - cpu) / read * 1e6
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.journal", description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000, help="scored events (labels: half as many)")
    parser.add_argument("--buckets", type=int, default=Settings.defaults().redis_cluster_buckets)
    args = parser.parse_args(argv)
    records = pending_records(args.entries)
    fields = entries(records)
    settings = Settings.defaults().replace(namespace="bench")
    with tempfile.TemporaryDirectory() as tmp:
        with running_stack(Path(tmp) / "stack") as stack:
            single = settings.replace(redis_url=stack.redis_url)
            cost = append_cost(stack.redis_url, fields, settings.journal_max_entries)
            one_stream = asyncio.run(read_rate(single, fields))
        with running_redis_cluster(Path(tmp) / "cluster", masters=3) as cluster:
            merged = settings.replace(
                redis_url=cluster.url, redis_cluster=True, redis_cluster_buckets=args.buckets
            )
            buckets_read = asyncio.run(read_rate(merged, fields))
    print(
        f"{len(fields):,} entries ({args.entries:,} scored events, {len(fields) - args.entries:,} labels), "
        f"pending records of {sum(len(record) for _, record in records) / len(records):,.0f} bytes on average"
    )
    print(
        f"append: {cost:.1f} µs of Redis CPU per entry: a journal on one slot caps its use case at "
        f"{1e6 / (2 * cost):,.0f} labelled events/s on its node (an entry per scored event, one per label)"
    )
    for what, (rate, cpu) in (
        ("one stream (single Redis)", one_stream),
        (f"{args.buckets} buckets' journals merged (3-master cluster)", buckets_read),
    ):
        print(f"read from {what}: {rate:,.0f} entries/s, {cpu:.1f} µs of the reader's CPU per entry")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
