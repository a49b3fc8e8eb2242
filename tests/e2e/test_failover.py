"""A Redis Cluster master killed mid-stream: its replica takes over, and the worker goes on.

Three masters with a replica each (six processes); the master killed with SIGKILL is the one
that serves the fraud model's registry, and a third of the state buckets. Redis replicates
asynchronously: what the master acknowledged but had not sent to its replica when it died
is lost. Here that can cost labels, never predictions: a batch is published only once its
every Redis call succeeded, and the worker does not die, so no message is read again.
A label joined (or an event scored) in the lost writes is not learned: its journal entry
and its event's status went with them. They are bounded by the batches in flight on the
master when it died (the worker keeps up to ``MAX_IN_FLIGHT`` batches in flight), and counted here.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from consumers.audit import audit
from stream.runtime.batches import MAX_IN_FLIGHT
from stream.runtime.keys import hash_tagged
from stream.settings import Settings
from stream.tools import simulator
from stream.tools.localstack import free_port, running_redis_cluster
from stream.usecases import DEMAND, FRAUD
from tests.e2e.support import START, event_id, produce, total, wait_until, watched_worker, with_registry

pytestmark = pytest.mark.e2e


def newest_version(settings: Settings) -> dict[str, Any]:
    """The registry record of the fraud model's newest version."""
    return with_registry(settings, lambda registry, _: registry.versions(FRAUD.name, 1))[0]


def test_a_worker_goes_on_after_a_master_fails_over(worker_settings: Settings, tmp_path: Path) -> None:
    config = simulator.SimulationConfig(
        transactions=2000, sales=2000, rate=400, label_delay=(0.5, 1.0), seed=21
    )
    messages = list(simulator.generate(config, start=START))
    events = {event_id(m) for m in messages if m.kind == "event"}
    labels = [m for m in messages if m.kind == "label"]
    with running_redis_cluster(tmp_path / "cluster", masters=3, replicas=1) as cluster:
        # Small batches: the loss bound below means something against this stream.
        # The metrics port is picked now: picked before, a node or its bus could have taken it.
        settings = worker_settings.replace(
            redis_url=cluster.url, redis_cluster=True, batch_size=100, metrics_port=free_port()
        )
        registry = settings.key("model", hash_tagged(settings, FRAUD.name), "live")
        sender = threading.Thread(target=produce, args=(settings, messages), kwargs={"realtime": True})
        with watched_worker(settings, tmp_path / "worker.log") as worker:
            wait_until(lambda: total(settings, "scoring_learner_leader") == 2, what="the learners")
            sender.start()
            wait_until(lambda: total(settings, "scoring_predictions_total") >= len(events) / 4)
            master = cluster.master_of(registry)
            pid = cluster.pid(master)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed_at = time.time()
            assert sender.is_alive(), "the stream must still be running when the master dies"
            wait_until(lambda: cluster.master_of(registry) != master, what="the replica to take over")
            # A client that starts now needs a node that answers: the killed one does not.
            survivor = settings.replace(redis_url=f"redis://127.0.0.1:{cluster.master_of(registry)}/0")
            sender.join()
            wait_until(lambda: len(audit(settings, idle_timeout=1.0).predictions) >= len(events))
            wait_until(
                lambda: newest_version(survivor)["created_at"] > killed_at,
                what="the fraud learner to publish after the failover",
            )
            result = audit(settings)
            assert worker.poll() is None, "the worker must keep running"
        assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]

        assert set(result.predictions) == events
        assert set(result.predictions.values()) == {1}
        statuses: Counter[str | None] = Counter()
        for use_case in (FRAUD, DEMAND):
            ids = [event_id(m) for m in labels if m.topic == use_case.label_topic]
            statuses += Counter(
                with_registry(survivor, lambda _, state, n=use_case.name, i=ids: state.statuses(n, i))
            )
    lost = len(labels) - statuses["learned"]
    print(f"labels not learned after the failover: {lost} of {len(labels)} ({dict(statuses)})")
    assert lost <= 2 * MAX_IN_FLIGHT * settings.batch_size
