"""The Faust patch still patches what it means to: fails when upstream changes."""

from __future__ import annotations

import hashlib
import inspect

import aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from stream import faust_patches

# sha256 of the patched function's source in faust-streaming 0.15.3. When this test
# fails, read the new upstream code: if it still hard-codes the fetch wait, update the
# hash; if it has a setting for it now, use the setting and delete the patch.
FAUST_SOURCE_SHA256 = "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7"


def test_faust_still_hard_codes_the_fetch_wait() -> None:
    source = inspect.getsource(faust_patches._original)
    assert "fetch_max_wait_ms=1500" in source
    assert hashlib.sha256(source.encode()).hexdigest() == FAUST_SOURCE_SHA256


def test_aiokafka_builds_its_fetcher_from_the_attribute_the_patch_sets() -> None:
    source = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in source


def test_apply_wraps_the_consumer_factory() -> None:
    faust_patches.apply()
    assert AIOKafkaConsumerThread._create_worker_consumer is faust_patches._create_worker_consumer
