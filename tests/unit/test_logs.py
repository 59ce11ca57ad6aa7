"""The service's logging: waitress's queue-depth warnings are load, not news; lines go
out in batches, a warning at once."""

from __future__ import annotations

import logging

from waitress.utilities import queue_logger

from orch.logs import BatchingStreamHandler, configure_logging
from tests.conftest import wait_until


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


class Stream:
    """A text stream that records each ``write`` call."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def batching_logger(
    stream: Stream, interval_s: float
) -> tuple[logging.Logger, BatchingStreamHandler]:
    handler = BatchingStreamHandler(stream, interval_s=interval_s)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test.batching.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers[:] = [handler]
    return logger, handler


def test_info_lines_are_written_together_and_a_warning_at_once_with_all_before_it() -> None:
    stream = Stream()
    logger, handler = batching_logger(stream, interval_s=3600.0)  # the timer never fires here
    try:
        logger.info("agent.registered agent_id=a1")
        logger.info("agent.started agent_id=a1")
        assert stream.writes == []  # held for the batch
        logger.warning("store failing")
        assert stream.writes == [
            "INFO agent.registered agent_id=a1\nINFO agent.started agent_id=a1\n"
            "WARNING store failing\n"
        ]
        logger.info("after")
        handler.close()  # what logging does at exit: nothing is left behind
        assert stream.writes[-1] == "INFO after\n"
    finally:
        handler.close()


def test_the_writer_thread_writes_a_batch_without_being_asked() -> None:
    stream = Stream()
    logger, handler = batching_logger(stream, interval_s=0.01)
    try:
        for n in range(3):
            logger.info("line %d", n)
        # Nobody flushes: the handler's own thread writes them, in order.
        wait_until(lambda: "".join(stream.writes) == "INFO line 0\nINFO line 1\nINFO line 2\n")
    finally:
        handler.close()


def test_the_service_logs_through_the_batching_handler() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("INFO")
        assert [type(h) for h in root.handlers] == [BatchingStreamHandler]
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
