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


def test_the_access_line_on_stdout_is_one_json_object_with_the_request_s_fields(
        stdout: CountingStdout, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import time as clock

    from notifier.logs import log_request

    monkeypatch.setattr(sys, "stdout", stdout)
    ours = [h for h in logging.getLogger("notifier").handlers if isinstance(h, _StdoutHandler)]
    monkeypatch.setattr(logging.getLogger("notifier"), "handlers", ours)  # pytest's capture handlers aside
    log_request("req-1", "POST", "/v1/publish", 202, clock.monotonic(), "127.0.0.1")
    line = json.loads(stdout.getvalue())
    assert list(line) == ["ts", "level", "logger", "msg", "request_id", "method", "path", "status", "duration_ms",
                          "remote"]
    assert {k: v for k, v in line.items() if k not in ("ts", "duration_ms")} == {
        "level": "info", "logger": "notifier.access", "msg": "request", "request_id": "req-1", "method": "POST",
        "path": "/v1/publish", "status": 202, "remote": "127.0.0.1"}
    assert line["ts"].endswith("Z") and len(line["ts"]) == len("2026-12-02T12:00:00.000Z")


def test_an_access_handler_of_the_host_still_gets_a_record(stdout: CountingStdout,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import time as clock

    from notifier.logs import log_request

    monkeypatch.setattr(sys, "stdout", stdout)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logging.getLogger("notifier.access").addHandler(keep)
    try:
        log_request("req-2", "POST", "/v1/publish", 202, clock.monotonic(), None)
    finally:
        logging.getLogger("notifier.access").removeHandler(keep)
    assert [getattr(r, "request_id", None) for r in seen] == ["req-2"]
    assert '"request_id": "req-2"' in stdout.getvalue(), "and the stdout line too (it propagates)"


def test_a_broken_stdout_never_fails_the_request_its_line_describes(
        stdout: CountingStdout, monkeypatch: pytest.MonkeyPatch) -> None:
    import time as clock

    from notifier.logs import log_request

    class Broken(CountingStdout):
        def write(self, text: str) -> int:
            raise BrokenPipeError("stdout closed")

    monkeypatch.setattr(sys, "stdout", Broken())
    ours = [h for h in logging.getLogger("notifier").handlers if isinstance(h, _StdoutHandler)]
    monkeypatch.setattr(logging.getLogger("notifier"), "handlers", ours)
    monkeypatch.setattr(logging, "raiseExceptions", False)  # as in production: reported, not raised
    log_request("req-3", "POST", "/v1/publish", 202, clock.monotonic(), None)  # does not raise
