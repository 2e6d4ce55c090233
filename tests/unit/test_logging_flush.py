"""The standalone service's stdout log lines: flushed once per turn of the
event loop in a serving worker, at once otherwise and at shutdown."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Iterator

import pytest

from notifier.logs import _StdoutHandler, configure_logging, flush_after_each_turn


class CountingStdout(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


@pytest.fixture
def stdout(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingStdout]:
    """Set in the test itself: pytest's own capture sets sys.stdout when each phase starts."""
    out = CountingStdout()
    configure_logging("INFO")
    yield out
    for handler in logging.getLogger("notifier").handlers:
        if isinstance(handler, _StdoutHandler):
            handler._defer = None


def test_lines_of_one_turn_are_flushed_once_after_it(stdout: CountingStdout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", stdout)
    due: list[Callable[[], None]] = []
    flush_after_each_turn(due.append)
    log = logging.getLogger("notifier.test")
    for i in range(3):
        log.info("line %d", i)
    assert stdout.flushes == 0 and len(due) == 1, "one flush asked for, after the turn"
    assert stdout.getvalue().count("\n") == 3, "the lines themselves are written at once"
    due.pop()()
    assert stdout.flushes == 1
    log.info("next turn")
    assert len(due) == 1, "a new turn asks again"


def test_without_an_event_loop_each_line_is_flushed(stdout: CountingStdout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", stdout)
    logging.getLogger("notifier.test").info("one")
    assert stdout.flushes == 1


def test_closing_the_handler_flushes_what_waits(stdout: CountingStdout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", stdout)
    due: list[Callable[[], None]] = []
    flush_after_each_turn(due.append)
    logging.getLogger("notifier.test").info("last words")
    handler = next(h for h in logging.getLogger("notifier").handlers if isinstance(h, _StdoutHandler))
    handler.close()
    assert stdout.flushes >= 1
