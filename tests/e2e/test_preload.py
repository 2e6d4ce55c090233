"""notifier mounted in a host app under a real gunicorn (2 gevent workers)
and a real redis-server, with ``preload_app`` on and off: nothing is started
in the master, each worker owns exactly one pub/sub connection of its own, and
streams receive what is published."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from ..support import tokens
from ..support.processes import ROOT, Gunicorn, RedisServer, wait_until
from ..support.sockets import connection_owners
from ..support.sse import SSEConnection

pytestmark = pytest.mark.e2e


class HostGunicorn(Gunicorn):
    """The host app (tests/apps/host.py) with its own gunicorn config."""

    def start(self, wait_ready: bool = True) -> HostGunicorn:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "tests" / "apps" / "host_gunicorn.py"),
             "--chdir", str(ROOT), "tests.apps.host:app"],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT),
        )
        wait_until(lambda: len(self.worker_pids()) == self.workers, 20, message="gunicorn workers")
        if wait_ready:
            self.wait_ready()
        return self


@pytest.fixture(scope="module")
def redis_for_hosts() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["preload", "no-preload"])
def host(request: pytest.FixtureRequest, redis_for_hosts: RedisServer) -> Iterator[HostGunicorn]:
    redis_for_hosts.client().flushall()
    server = HostGunicorn({
        "NOTIFIER_REDIS_URL": redis_for_hosts.url,
        "NOTIFIER_JWT_SECRET": tokens.SECRET,
        "NOTIFIER_HEARTBEAT_SECONDS": "0.5",
        "HOST_PRELOAD": "1" if request.param == "preload" else "0",
    }, workers=2)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def pubsub_owners(server: HostGunicorn, redis_server: RedisServer) -> list[int]:
    clients = [c for c in redis_server.client().client_list() if int(c.get("sub", 0)) + int(c.get("psub", 0)) > 0]
    assert server.process is not None
    owners = connection_owners([server.process.pid, *server.worker_pids()])
    return sorted(owners.get((int(c["addr"].rsplit(":", 1)[1]), redis_server.port), 0) for c in clients)  # 0: unknown


def test_each_worker_subscribes_for_itself_and_streams_receive(host: HostGunicorn, redis_for_hosts: RedisServer) -> None:
    workers = sorted(host.worker_pids())
    # One pub/sub connection per worker, each its own; none in the master.
    seen: list[list[int]] = []
    try:
        wait_until(lambda: seen.append(pubsub_owners(host, redis_for_hosts)) or seen[-1] == workers, 30,
                   message="one subscriber per worker")
    except AssertionError:
        raise AssertionError(f"pub/sub connections owned by {seen[-1:]} (0: unknown), workers {workers}, "
                             f"master {host.process.pid if host.process else None}") from None
    streams = [SSEConnection(host.url + "/v1/events", tokens.bearer(tokens.token("alice"))) for _ in range(8)]
    try:
        assert all(stream.status == 200 for stream in streams), [(stream.status, getattr(stream, 'body', None)) for stream in streams]
        served_by = {requests.get(host.url + "/host/pid", timeout=5).json()["pid"] for _ in range(20)}
        assert served_by <= set(workers)
        response = requests.post(host.url + "/v1/publish", json={"user_id": "alice", "message": "hello"},
                                 headers=tokens.bearer(tokens.publisher()), timeout=10)
        assert response.status_code == 202, response.text
        received: set[int] = set()

        def everyone_received() -> bool:
            for index, stream in enumerate(streams):
                if any(event.json()["message"] == "hello" for event in stream.events(0.05)):
                    received.add(index)
            return len(received) == len(streams)

        wait_until(everyone_received, 10, message="every stream got the event")
    finally:
        for stream in streams:
            stream.close()
    assert pubsub_owners(host, redis_for_hosts) == workers
    log = host.log()
    assert "which is forking" not in log, log
    assert "MonkeyPatchWarning" not in log and "Traceback" not in log, log
    assert log.count("one send per response on") == 2, log

