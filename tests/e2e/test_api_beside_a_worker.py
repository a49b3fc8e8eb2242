"""End to end: a real ``scoring api`` process beside a real ``scoring worker`` on one broker and Redis.

A transaction POSTed twice gets one prediction; the same event then read from its topic by
the worker is not scored again; its label, sent twice, is joined and learned once; and its
event id is on ``predictions.fraud`` exactly once, as the API answered it. Two API processes
(as behind a load balancer) asked for one new event at once give one prediction too.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import Popen

import httpx
import orjson
import pytest

from stream.settings import Settings
from stream.tools import localstack, simulator
from tests.apiclient import api_process, published, transaction, wait_for
from tests.e2e.support import counter, produce, wait_until

pytestmark = pytest.mark.e2e


def test_one_prediction_and_one_learned_label_per_event_across_the_api_and_the_stream(
    worker_settings: Settings, worker: Popen[bytes], tmp_path: Path
) -> None:
    settings = worker_settings.replace(api_port=localstack.free_port())
    with api_process(settings, tmp_path / "api.log") as url:
        wait_for(f"{url}/readyz")  # the worker's learner published its first version
        first = httpx.post(f"{url}/v1/score/fraud", content=transaction("e-1"))
        again = httpx.post(f"{url}/v1/score/fraud", content=transaction("e-1"))
        assert first.status_code == again.status_code == 200
        assert again.content == first.content

        event = simulator.Message("transactions", b"acc-1", transaction("e-1"), 0.0, "event")
        produce(settings, [event])
        wait_until(lambda: counter(settings, "scoring_events_total", outcome="scored_by_api") == 1)

        label = orjson.dumps({"event_id": "e-1", "is_fraud": True})
        produce(settings, [simulator.Message("transactions.labels", b"e-1", label, 0.0, "label")] * 2)
        wait_until(
            lambda: counter(settings, "scoring_labels_total", model="fraud", outcome="duplicate_label") == 1
        )
        wait_until(lambda: counter(settings, "scoring_learner_labels_learned", model="fraud") == 1)
        assert counter(settings, "scoring_labels_total", model="fraud", outcome="joined") == 1

    (prediction,) = published(settings)
    assert prediction.to_json() == first.content
    assert counter(settings, "scoring_predictions_total", model="fraud") == 0  # the worker published none


def test_two_api_processes_asked_for_one_event_at_once_give_one_prediction(
    worker_settings: Settings, worker: Popen[bytes], tmp_path: Path
) -> None:
    processes = [worker_settings.replace(api_port=localstack.free_port()) for _ in range(2)]
    with contextlib.ExitStack() as running:
        urls = [
            running.enter_context(api_process(s, tmp_path / f"api-{i}.log")) for i, s in enumerate(processes)
        ]
        for url in urls:
            wait_for(f"{url}/readyz")
        with ThreadPoolExecutor(len(urls) * 2) as pool:
            answers = list(
                pool.map(
                    lambda url: httpx.post(f"{url}/v1/score/fraud", content=transaction("e-2")), urls * 2
                )
            )
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert [p.event_id for p in published(worker_settings)] == ["e-2"]
