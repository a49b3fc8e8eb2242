"""The worker logs at its configured level: Faust's spinner does not lower the root logger."""

from __future__ import annotations

import logging

import faust
import pytest

from stream.runtime.app import faust_worker
from stream.settings import Settings


@pytest.mark.parametrize("level", ["WARNING", "ERROR"])
def test_root_logger_keeps_the_configured_level(level: str) -> None:
    worker = faust_worker(faust.App("logging-probe", broker="kafka://127.0.0.1:9"), Settings(log_level=level))
    root = logging.Logger("root-probe", logging.getLevelName(level))
    root.addHandler(logging.StreamHandler())

    worker.on_setup_root_logger(root, logging.getLevelName(level))

    assert root.level == logging.getLevelName(level)
    assert not root.isEnabledFor(logging.DEBUG)
    assert len(root.handlers) == 1
