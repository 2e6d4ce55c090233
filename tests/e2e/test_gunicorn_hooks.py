"""notifier/server.py's hooks in the real thing: ``gunicorn -c gunicorn.conf.py``
with 2 gevent workers and a redis-server. Each worker installs the write patch
(runtime/gunicorn.py) and starts its broker; SIGTERM drains the streams through
the worker's ``alive`` flag; the metrics directory the master made goes with it."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from ..support import tokens
from ..support.processes import Gunicorn, RedisServer, wait_until
from ..support.sse import SSEConnection

pytestmark = pytest.mark.e2e


def test_each_worker_patches_the_writer_and_drains_on_sigterm(redis_server: RedisServer) -> None:
    server = Gunicorn({"NOTIFIER_REDIS_URL": redis_server.url, "NOTIFIER_JWT_SECRET": tokens.SECRET,
                       "NOTIFIER_DRAIN_SECONDS": "1", "NOTIFIER_HEARTBEAT_SECONDS": "5"}, workers=2)
    streams: list[SSEConnection] = []
    try:
        server.start()

        def every_worker_said_so() -> bool:
            # Ready means some worker answered, not every one: wait for each one's start lines.
            log = server.log()
            return all(re.search(rf"\[{pid}\] \[INFO\] notifier: one send per response on", log)
                       and re.search(rf"\[{pid}\] \[INFO\] notifier: a stream's WSGI environ is emptied", log)
                       for pid in server.worker_pids())

        wait_until(every_worker_said_so, 20, message="each worker's start lines")
        log = server.log()
        metrics_dir = re.search(r"worker metrics in (\S+)", log)
        assert metrics_dir and Path(metrics_dir.group(1)).is_dir(), log
        streams.extend(SSEConnection(server.url + "/v1/events", tokens.bearer(tokens.token("alice"))) for _ in range(4))
        assert all(stream.status == 200 for stream in streams)
        for stream in streams:
            stream.events(0.05)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        for stream in streams:
            wait_until(lambda s=stream: s.events(0.05) is not None and s.closed, 5, message="stream drained")
        assert time.monotonic() - started < 5, "drained inside the window, not at graceful_timeout (11 s)"
        assert all(stream.parser.last_retry is not None for stream in streams)
        assert server.wait(15) == 0
        assert "drain finished" in server.log()
        assert not Path(metrics_dir.group(1)).exists(), "the master removes the directory it made"
    finally:
        for stream in streams:
            stream.close()
        server.stop()


def test_with_gunicorns_access_log_on_the_environ_is_kept_for_it(redis_server: RedisServer) -> None:
    """notifier empties a stream's environ once it opens (runtime/gunicorn.py)
    only where gunicorn reads none of it again: with its access log on, the
    line for a stream that ended still names the request."""
    server = Gunicorn({"NOTIFIER_REDIS_URL": redis_server.url, "NOTIFIER_JWT_SECRET": tokens.SECRET,
                       "GUNICORN_CMD_ARGS": "--access-logfile -"}, workers=1)
    try:
        server.start()
        wait_until(lambda: "notifier: a stream's WSGI environ is kept" in server.log(), 20,
                   message="the worker's start line")
        stream = SSEConnection(server.url + "/v1/events?topic=news", tokens.bearer(tokens.token("alice", topics=["news"])))
        try:
            assert stream.status == 200
            stream.events(0.2)
        finally:
            stream.close()
        wait_until(lambda: "GET /v1/events?topic=news HTTP/1.1\" 200" in server.log(), 10,
                   message="gunicorn's access line for the stream")
        assert "Traceback" not in server.log()
    finally:
        server.stop()
