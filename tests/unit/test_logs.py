"""The service's logging: waitress's queue-depth warnings are load, not news."""

from __future__ import annotations

import logging

from waitress.utilities import queue_logger

from orch.logs import configure_logging


def test_waitress_queue_depth_warnings_are_not_printed_at_the_default_level(capsys):
    root = logging.getLogger()
    touched = [root, queue_logger, logging.getLogger("pykka")]
    saved = [(logger, logger.handlers[:], logger.level) for logger in touched]
    try:
        configure_logging("INFO")
        queue_logger.warning("Task queue depth is %d", 5)  # what waitress says on a burst
        logging.getLogger("orch.http").warning("still shown")
    finally:
        for logger, handlers, level in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
    printed = capsys.readouterr().err
    assert "still shown" in printed
    assert "queue depth" not in printed
