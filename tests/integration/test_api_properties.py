"""Requests generated from the committed OpenAPI document (schemathesis), valid and invalid, sent
to a real ``scoring api`` process on a real Redis and broker: none gets a 500."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode

from stream.settings import Settings
from stream.tools import localstack
from tests.apiclient import api_process, bootstrap_both, wait_for

pytestmark = pytest.mark.integration

SCHEMA = schemathesis.openapi.from_path(Path(__file__).parents[2] / "docs/openapi.json")
EXAMPLES = 15
"""Requests per operation and generation mode: enough to meet every kind of input, few enough
to keep the suite fast (9 operations; the 2 scoring ones with invalid bodies too)."""


@pytest.mark.timeout(600)
def test_no_generated_request_gets_a_500(settings: Settings, tmp_path: Path) -> None:
    settings = settings.replace(api_port=localstack.free_port(), max_event_age_seconds=0)
    bootstrap_both(settings, tmp_path)
    statuses: Counter[int] = Counter()
    with api_process(settings, tmp_path / "api.log") as url:
        wait_for(f"{url}/readyz")
        for operation in (result.ok() for result in SCHEMA.get_all_operations()):
            # Invalid inputs where there is a body to break (a path of strings has no invalid value).
            for mode in GenerationMode if operation.body else [GenerationMode.POSITIVE]:

                @hypothesis.settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,  # no .hypothesis folder in the checkout
                    suppress_health_check=list(hypothesis.HealthCheck),
                    derandomize=True,  # the same requests every run
                )
                @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
                def call(case: schemathesis.Case) -> None:
                    response = case.call(base_url=url, timeout=10)
                    statuses[response.status_code] += 1
                    assert response.status_code < 500, (case.method, case.path, case.body, response.text)

                call()
    assert statuses[200] and statuses[422], statuses  # both scored events and refused ones were met
