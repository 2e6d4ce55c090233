"""Fault injection: delivery guarantees hold through client drops, Redis
crashes and stalls, a killed pub/sub connection, a killed worker, a graceful
shutdown with fail-over, a client that stops reading, and a resume point older
than the history.

Every test starts its own redis-server and real gunicorn (2 gevent workers),
connects EventSource-like clients (they reconnect with Last-Event-ID), publishes
a numbered sequence over HTTP while injecting the fault, and checks that each
client got every event addressed to it exactly once (no duplicate ids, no
duplicate sequence numbers) and in order. See docs/delivery.md.

Loopback only; every loop is bounded in count and time; processes are stopped
by PID. Timing bounds are generous: the suite shares a 2-core machine.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from notifier.events import parse_event_id

from ..support import tokens
from ..support.http import all_notifications
from ..support.processes import Gunicorn, RedisServer, rss_kib, wait_until
from ..support.redis_proxy import RedisProxy
from ..support.sse import EventSourceClient, SSEConnection

pytestmark = pytest.mark.chaos

FAST = {
    "NOTIFIER_JWT_SECRET": tokens.SECRET,
    "NOTIFIER_HEARTBEAT_SECONDS": "0.5",
    "NOTIFIER_PROBE_INTERVAL_SECONDS": "0.5",
    "NOTIFIER_PROBE_TIMEOUT_SECONDS": "1",
    "NOTIFIER_REDIS_SOCKET_TIMEOUT": "1",
    "NOTIFIER_DRAIN_SECONDS": "3",
    "NOTIFIER_RETRY_MS": "200",
}
SOCKET_TIMEOUT = float(FAST["NOTIFIER_REDIS_SOCKET_TIMEOUT"])
PUBLISHER = tokens.bearer(tokens.publisher())


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


class PersistentRedis(RedisServer):
    """A redis-server with an append-only file, configured like the production
    manifest (k8s: ``appendfsync everysec``): Redis writes the AOF before it
    replies, so a crashed *process* loses nothing it acknowledged."""

    PERSISTENCE = ("--save", "", "--appendonly", "yes", "--appendfsync", "everysec")


@contextmanager
def stack(redis_server: RedisServer | None = None, instances: int = 1,
          **env: str) -> Iterator[tuple[list[Gunicorn], RedisServer]]:
    """A redis-server and ``instances`` gunicorn instances (2 gevent workers each) sharing it."""
    redis_server = (redis_server or RedisServer()).start()
    servers = [Gunicorn({**FAST, "NOTIFIER_REDIS_URL": redis_server.url, **env}, workers=2) for _ in range(instances)]
    try:
        for server in servers:
            server.start()
        yield servers, redis_server
    finally:
        for server in servers:
            server.stop()
        redis_server.stop()


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------


class Client(EventSourceClient):
    """One user's EventSource against one or more instances (base URLs)."""

    def __init__(self, urls: list[str], user: str, head_timeout: float = 2.0):
        super().__init__([url + "/v1/events" for url in urls], tokens.bearer(tokens.token(user)),
                         head_timeout=head_timeout, name=f"client-{user}")
        self.user = user

    def keys(self) -> list[str]:
        return [n["data"]["key"] for n in self.notifications()]


@contextmanager
def clients(urls: list[str], users: list[str]) -> Iterator[list[Client]]:
    started = [Client(urls, user).start() for user in users]
    try:
        for client in started:
            assert client.opened.wait(10), f"{client.user} never connected: {client.statuses}"
        yield started
    finally:
        for client in started:
            client._stop.set()
            client.drop()
        for client in started:
            client._thread.join(10)


# --------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------


class Publisher:
    """Publishes over HTTP; a 503 means "not stored, retry", so it retries.
    Records every answer so the tests can check that nothing was accepted
    while Redis could not store it."""

    def __init__(self, url: str):
        self.url = url
        self.statuses: list[int] = []
        self.unavailable_seconds: list[float] = []  # how long each 503 took

    def post(self, body: Any, timeout: float = 10) -> requests.Response:
        started = time.monotonic()
        response = requests.post(self.url + "/v1/publish", json=body, headers=PUBLISHER, timeout=timeout)
        self.statuses.append(response.status_code)
        if response.status_code == 503:
            self.unavailable_seconds.append(time.monotonic() - started)
        return response

    def publish(self, body: Any, within: float = 30, on_retry: Any = None) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            response = self.post(body)
            if response.status_code == 202:
                return response.json()
            assert response.status_code == 503, response.text
            assert time.monotonic() < deadline, "publish kept failing with 503"
            if on_retry is not None:
                on_retry()
            time.sleep(0.05)


def user_event(user: str, key: str) -> dict[str, Any]:
    return {"user_id": user, "type": "chaos", "message": key, "data": {"key": key}}


def broadcast_event(key: str) -> dict[str, Any]:
    return {"broadcast": True, "type": "chaos", "message": key, "data": {"key": key}}


class Sequence:
    """A numbered sequence: step ``i`` is one batch with an event for each
    user, plus a broadcast every ``broadcast_every`` steps. Remembers what each user must get."""

    def __init__(self, users: list[str], prefix: str = "s", broadcast_every: int = 5):
        self.users = users
        self.prefix = prefix
        self.broadcast_every = broadcast_every
        self.expected: dict[str, list[str]] = {user: [] for user in users}

    def body(self, step: int) -> list[dict[str, Any]]:
        batch = [user_event(user, f"{self.prefix}{step}:{user}") for user in self.users]
        if self.broadcast_every and step % self.broadcast_every == 0:
            batch.append(broadcast_event(f"{self.prefix}{step}:all"))
        return batch

    def accepted(self, step: int) -> None:
        for user in self.users:
            self.expected[user].append(f"{self.prefix}{step}:{user}")
            if self.broadcast_every and step % self.broadcast_every == 0:
                self.expected[user].append(f"{self.prefix}{step}:all")


def assert_exactly_once_in_order(client: Client, expected: list[str]) -> None:
    notes = client.notifications()
    ids = [n["id"] for n in notes]
    assert len(ids) == len(set(ids)), f"{client.user}: duplicate event ids"
    parsed = [parse_event_id(i) for i in ids]
    assert parsed == sorted(parsed), f"{client.user}: ids out of order"
    keys = [n["data"]["key"] for n in notes]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert not duplicates, f"{client.user}: delivered twice: {duplicates[:10]}"
    missing = [k for k in expected if k not in set(keys)]
    assert not missing, f"{client.user}: lost {len(missing)} events, first {missing[:5]} (got {len(keys)})"
    assert keys == expected, f"{client.user}: out of order"


def wait_delivered(all_clients: list[Client], expected: dict[str, list[str]], timeout: float = 20) -> float:
    started = time.monotonic()
    try:
        wait_until(lambda: all(len(c.notes) >= len(expected[c.user]) for c in all_clients), timeout,
                   interval=0.05, message="every client to receive every event")
    except AssertionError as exc:
        state = [(c.user, len(c.notes), len(expected[c.user]), c.connects, c.resets()) for c in all_clients]
        raise AssertionError(f"{exc}: (user, got, expected, connects, resets): {state}") from None
    elapsed = time.monotonic() - started
    time.sleep(0.3)  # anything extra (a duplicate) would arrive now
    return elapsed


def metric(servers: list[Gunicorn], name: str) -> float:
    total = 0.0
    for server in servers:
        text = requests.get(server.url + "/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith(name + "_created"):
                rest = line[len(name):]
                if rest[:1] in (" ", "{"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def socket_count(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def readyz_statuses(server: Gunicorn, tries: int = 8) -> list[int]:
    return [requests.get(server.url + "/readyz", timeout=3).status_code for _ in range(tries)]


# --------------------------------------------------------------------------
# 1. The client drops and reconnects mid-sequence
# --------------------------------------------------------------------------


def test_client_drop_and_reconnect_resumes_without_loss() -> None:
    users = [f"drop{i}" for i in range(6)]
    seq = Sequence(users)
    with stack() as (servers, _redis), clients([servers[0].url], users) as group:
        publisher = Publisher(servers[0].url)
        for step in range(60):
            publisher.publish(seq.body(step))
            seq.accepted(step)
            if step % 12 == 6:
                for client in group[(step // 12) % 3::3]:
                    client.drop()
            time.sleep(0.01)
        wait_delivered(group, seq.expected)
        for client in group:
            assert_exactly_once_in_order(client, seq.expected[client.user])
            assert client.connects >= 2, f"{client.user} never reconnected"
            assert not client.resets(), client.resets()
        assert metric(servers, "notifier_replays_total") >= sum(c.connects - 1 for c in group)


# --------------------------------------------------------------------------
# 2. Redis SIGKILLed and restarted mid-sequence
# --------------------------------------------------------------------------


def _redis_crash(redis_server: RedisServer) -> dict[str, Any]:
    """Publish a sequence while Redis is SIGKILLed and restarted; return what happened."""
    users = [f"crash{i}" for i in range(4)]
    seq = Sequence(users)
    with stack(redis_server) as (servers, redis_server), clients([servers[0].url], users) as group:
        publisher = Publisher(servers[0].url)
        outage_statuses: list[int] = []
        restart_at: float | None = None
        restarted_at = delivered_after = 0.0
        # A client that is away during the crash and comes back afterwards
        # with the Last-Event-ID it had.
        away = group[-1]
        for step in range(40):
            if step == 12:
                away._stop.set()
                away.drop()
                away._thread.join(10)
            if step == 15:
                redis_server.kill(signal.SIGKILL)
                restart_at = time.monotonic() + 1.5
                statuses_before = len(publisher.statuses)

            def restart_when_due() -> None:
                nonlocal restart_at, restarted_at
                if restart_at is not None and time.monotonic() >= restart_at:
                    redis_server.start()
                    restart_at = None
                    restarted_at = time.monotonic()

            publisher.publish(seq.body(step), on_retry=restart_when_due)
            seq.accepted(step)
            if step == 15:
                outage_statuses = publisher.statuses[statuses_before:-1]
                # Step 15 includes a broadcast: every live client must get it.
                wait_until(lambda: all("s15:all" in c.keys() for c in group[:-1]), 15,
                           message="the first event accepted after the restart to arrive")
                delivered_after = time.monotonic() - restarted_at
            time.sleep(0.01)
        live = group[:-1]
        wait_delivered(live, seq.expected)
        for client in live:
            assert_exactly_once_in_order(client, seq.expected[client.user])
            assert client.connects == 1, "streams stay open through a Redis outage"
            assert not client.resets()
        # The client that was away comes back after the restart.
        returning = Client([servers[0].url], away.user)
        returning.last_event_id = away.last_event_id
        returning.events = list(away.events)
        returning.notes = list(away.notes)
        returning.start()
        try:
            wait_until(lambda: returning.resets() or len(returning.notifications()) >= len(seq.expected[away.user]),
                       15, message="the returning client to resume")
            time.sleep(0.3)
        finally:
            returning.stop()
        # What a page that got a reset refetches.
        return {
            "page_keys": [n["data"]["key"] for n in all_notifications(servers[0].url, returning.headers)],
            "outage_statuses": outage_statuses,
            "unavailable_seconds": publisher.unavailable_seconds,
            "returning": returning,
            "expected": seq.expected[away.user],
            "reconnects": metric(servers, "notifier_subscriber_reconnects_total"),
            "delivered_after": delivered_after,
        }


def test_redis_crash_without_persistence_loses_only_what_it_lost() -> None:
    """Without persistence the restart loses history and the id sequence.
    Streams stay open and get every event accepted after the restart (the
    worker catches up from the new history); nothing is ever accepted while
    Redis is down. A client that was away during the crash cannot be replayed
    from the lost history: it gets ``event: reset`` (refetch), never a silent gap."""
    outcome = _redis_crash(RedisServer())
    assert outcome["outage_statuses"] and set(outcome["outage_statuses"]) == {503}, outcome["outage_statuses"]
    print(f"redis crash (no persistence): {len(outcome['outage_statuses'])} publishes answered 503 during the outage; "
          f"first event accepted after the restart delivered {outcome['delivered_after']:.2f}s after it")
    returning: Client = outcome["returning"]
    resets = returning.resets()
    assert [r["reason"] for r in resets] == ["history_lost"], resets
    # After the reset it is live: nothing it received is duplicated.
    ids = [n["id"] for n in returning.notifications()]
    assert len(ids) == len(set(ids))
    # Nothing accepted after the restart (step 15 on) is lost: what the reset
    # skipped is in the refetched page, the rest came live.
    after_restart = [k for k in outcome["expected"] if int(k[1:].split(":")[0]) >= 15]
    missing = set(after_restart) - set(outcome["page_keys"]) - set(returning.keys())
    assert not missing, sorted(missing)
    assert not {k for k in outcome["page_keys"] if int(k[1:].split(":")[0]) < 15}, "the old history is gone"
    assert outcome["reconnects"] >= 2


def test_redis_crash_with_aof_loses_nothing() -> None:
    """With an append-only file (as in production) the restarted Redis has the
    history and the sequence: the client that was away replays every event,
    including those accepted after the restart, with no reset."""
    outcome = _redis_crash(PersistentRedis())
    assert outcome["outage_statuses"] and set(outcome["outage_statuses"]) == {503}, outcome["outage_statuses"]
    print(f"redis crash (AOF): first event accepted after the restart delivered {outcome['delivered_after']:.2f}s after it")
    returning: Client = outcome["returning"]
    assert not returning.resets(), returning.resets()
    assert_exactly_once_in_order(returning, outcome["expected"])


# --------------------------------------------------------------------------
# 3. The pub/sub connection killed; Redis paused
# --------------------------------------------------------------------------


def test_pubsub_connection_killed_reconnects_and_catches_up() -> None:
    users = [f"kill{i}" for i in range(6)]
    seq = Sequence(users)
    with stack() as (servers, redis_server), clients([servers[0].url], users) as group:
        publisher = Publisher(servers[0].url)
        reconnects_before = metric(servers, "notifier_subscriber_reconnects_total")
        killed = 0
        admin = redis_server.client()
        try:
            for step in range(50):
                if step in (10, 30):
                    killed += int(admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
                publisher.publish(seq.body(step))
                seq.accepted(step)
                time.sleep(0.01)
        finally:
            admin.close()
        assert killed >= 4, "both workers' pub/sub connections were killed, twice"
        wait_delivered(group, seq.expected)
        for client in group:
            assert_exactly_once_in_order(client, seq.expected[client.user])
            assert client.connects == 1, "streams stay open while the worker resubscribes"
        assert metric(servers, "notifier_subscriber_reconnects_total") - reconnects_before >= 4


def test_redis_paused_streams_stay_open_and_publishes_fail_fast() -> None:
    """SIGSTOP: the sockets stay open but silent. The probe notices, /readyz
    goes 503, publishes answer 503 within the socket timeout (and are not
    stored later when Redis resumes), streams keep their heartbeats; after
    SIGCONT the subscribers reconnect and nothing accepted is lost."""
    users = [f"pause{i}" for i in range(6)]
    seq = Sequence(users)
    with stack() as (servers, redis_server), clients([servers[0].url], users) as group:
        server = servers[0]
        publisher = Publisher(server.url)
        for step in range(10):
            publisher.publish(seq.body(step))
            seq.accepted(step)
        comments_before = {c.user: c.comments for c in group}
        redis_server.pause()
        paused_at = time.monotonic()
        try:
            # Publishes during the pause: 503 within the socket timeout, never a hang.
            refused = []
            for step in range(10, 13):
                started = time.monotonic()
                response = publisher.post(seq.body(step))
                refused.append((response.status_code, time.monotonic() - started))
            # Both workers' probes time out: /readyz says so.
            wait_until(lambda: all(s == 503 for s in readyz_statuses(server)), 8, interval=0.1,
                       message="/readyz 503 on both workers while Redis is paused")
            time.sleep(max(0.0, 3.0 - (time.monotonic() - paused_at)))
            heartbeats = {c.user: c.comments - comments_before[c.user] for c in group}
        finally:
            redis_server.resume()
        resumed_at = time.monotonic()
        assert all(status == 503 for status, _ in refused), refused
        assert all(seconds < SOCKET_TIMEOUT + 2.0 for _, seconds in refused), refused
        assert all(count >= 3 for count in heartbeats.values()), f"heartbeats during the pause: {heartbeats}"
        server.wait_ready(timeout=15)
        ready_after = time.monotonic() - resumed_at
        # The refused steps are published again (the publisher's retry) and the sequence goes on.
        for step in range(10, 40):
            publisher.publish(seq.body(step))
            seq.accepted(step)
            time.sleep(0.01)
        wait_delivered(group, seq.expected)
        for client in group:
            assert_exactly_once_in_order(client, seq.expected[client.user])
            assert client.connects == 1, "streams stay open through the pause"
        print(f"pause: /readyz back {ready_after:.2f}s after SIGCONT; 503s took {[round(s, 2) for _, s in refused]}")


def test_silent_pubsub_death_is_caught_by_the_probe() -> None:
    """The subscriber socket stays open but delivers nothing. Only the probe
    can tell: PUBLISH to the worker's probe channel returns 0 (Redis dropped
    the subscription), or returns 1 but the message never comes back. Either
    way the worker reconnects and catches up from history: no loss."""
    users = [f"silent{i}" for i in range(6)]
    seq = Sequence(users)
    redis_server = RedisServer().start()
    proxy = RedisProxy(redis_server.port)
    server = Gunicorn({**FAST, "NOTIFIER_REDIS_URL": proxy.url}, workers=2)
    recoveries = {}
    try:
        server.start()
        with clients([server.url], users) as group:
            publisher = Publisher(server.url)
            step = 0
            for fault in ("sever", "silence"):
                wait_until(lambda: len(proxy.pubsub_pairs()) == 2, 10, message="both workers subscribed")
                for _ in range(5):
                    publisher.publish(seq.body(step))
                    seq.accepted(step)
                    step += 1
                hit = proxy.sever_pubsub() if fault == "sever" else proxy.silence_pubsub()
                assert hit == 2
                faulted_at = time.monotonic()
                # Published while the subscribers are deaf: must come via the catch-up.
                publisher.publish(seq.body(step))
                seq.accepted(step)
                marker = seq.expected[users[0]][-1]
                step += 1
                wait_until(lambda: all(c.keys()[-1:] == [seq.expected[c.user][-1]] for c in group), 15,
                           message=f"delivery after a silent pub/sub death ({fault})")
                recoveries[fault] = time.monotonic() - faulted_at
                assert marker in group[0].keys()
            for _ in range(10):
                publisher.publish(seq.body(step))
                seq.accepted(step)
                step += 1
            wait_delivered(group, seq.expected)
            for client in group:
                assert_exactly_once_in_order(client, seq.expected[client.user])
                assert client.connects == 1
        log = server.log()
        assert "probe channel has no subscriber" in log, "PUBLISH returning 0 triggered the reconnect"
        assert "no probe back" in log, "a probe that never came back triggered the reconnect"
        # Detected within probe interval (+ timeout), generously.
        assert recoveries["sever"] < 6 and recoveries["silence"] < 8, recoveries
        print(f"silent pub/sub death: delivered again after {recoveries['sever']:.2f}s (probe returned 0), "
              f"{recoveries['silence']:.2f}s (probe lost)")
    finally:
        server.stop()
        proxy.close()
        redis_server.stop()


def test_catch_up_beyond_history_resets_instead_of_skipping() -> None:
    """A subscriber deaf for longer than the history covers: the catch-up
    cannot deliver what was trimmed meanwhile. The streams concerned must
    end and resume into ``event: reset``, never continue with a silent gap;
    streams whose history still covers the outage lose nothing and see no reset."""
    redis_server = RedisServer().start()
    proxy = RedisProxy(redis_server.port)
    server = Gunicorn({**FAST, "NOTIFIER_REDIS_URL": proxy.url, "NOTIFIER_HISTORY_MAX_EVENTS": "5"}, workers=2)
    try:
        server.start()
        with clients([server.url], ["busy", "quiet"]) as (busy, quiet):
            publisher = Publisher(server.url)
            published: dict[str, list[str]] = {"busy": [], "quiet": []}

            def send(user: str, key: str) -> None:
                published[user].append(publisher.publish(user_event(user, key))["published"][0]["id"])

            for i in range(3):
                send("busy", f"before{i}")
                send("quiet", f"before{i}")
            wait_until(lambda: len(busy.notes) == 3 and len(quiet.notes) == 3, 10, message="first events")
            wait_until(lambda: len(proxy.pubsub_pairs()) == 2, 10, message="both workers subscribed")
            assert proxy.silence_pubsub() == 2
            for i in range(12):  # more than the 5 kept: the first ones are trimmed
                send("busy", f"deaf{i}")
            send("quiet", "deaf0")
            wait_until(lambda: busy.resets(), 15, message="a reset for the client whose history was trimmed")
            for i in range(3):
                send("busy", f"after{i}")
                send("quiet", f"after{i}")
            wait_until(lambda: busy.keys()[-1:] == ["after2"] and quiet.keys()[-1:] == ["after2"], 15,
                       message="live delivery after the catch-up")
            time.sleep(0.3)
        assert quiet.keys() == ["before0", "before1", "before2", "deaf0", "after0", "after1", "after2"]
        assert not quiet.resets() and quiet.connects == 1
        # busy: what it got is in order, without duplicates, and every gap is announced by a reset.
        position = {event_id: index for index, event_id in enumerate(published["busy"])}
        seen = -1
        for event in busy.events:
            if event.event == "reset":
                resume = event.json()["resume_from"]
                assert parse_event_id(resume) >= parse_event_id(published["busy"][max(seen, 0)])
                seen = max(seen, max((i for eid, i in position.items() if parse_event_id(eid) <= parse_event_id(resume)),
                                     default=seen))
                continue
            index = position[event.json()["id"]]
            assert index == seen + 1, f"silent gap or duplicate before {event.json()['data']['key']}: {busy.keys()}"
            seen = index
        assert busy.keys()[:3] == ["before0", "before1", "before2"] and busy.keys()[-3:] == ["after0", "after1", "after2"]
        assert busy.connects >= 2
    finally:
        server.stop()
        proxy.close()
        redis_server.stop()


# --------------------------------------------------------------------------
# 4. A worker SIGKILLed
# --------------------------------------------------------------------------


def test_worker_killed_clients_resume_on_the_other_worker() -> None:
    users = [f"wk{i}" for i in range(16)]
    seq = Sequence(users)
    with stack() as (servers, _redis), clients([servers[0].url], users) as group:
        server = servers[0]
        publisher = Publisher(server.url)
        # The kernel decides which worker accepts each connection: kill the
        # one holding the most sockets (the streams).
        victim = max(server.worker_pids(), key=socket_count)
        killed_at = 0.0
        for step in range(40):
            if step == 15:
                os.kill(victim, signal.SIGKILL)
                killed_at = time.monotonic()
            publisher.publish(seq.body(step))
            seq.accepted(step)
            time.sleep(0.01)
        wait_delivered(group, seq.expected)
        for client in group:
            assert_exactly_once_in_order(client, seq.expected[client.user])
        moved = [c for c in group if c.connects >= 2]
        assert moved, "some clients were on the killed worker"
        resumed = max(c.connected_at[1] - killed_at for c in moved)
        assert resumed < 10, resumed
        print(f"worker kill: {len(moved)} clients resumed on the other worker within {resumed:.2f}s")
        wait_until(lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(), 15,
                   message="gunicorn to replace the killed worker")
        server.wait_ready()


# --------------------------------------------------------------------------
# 5. Graceful shutdown: 100 clients fail over to a second instance
# --------------------------------------------------------------------------


def test_sigterm_drains_spread_out_and_clients_fail_over() -> None:
    users = [f"drain{i}" for i in range(100)]
    seq = Sequence(users[:20], prefix="d", broadcast_every=0)  # per-user events for 20; broadcasts below for all
    with stack(instances=2) as (servers, _redis):
        first, second = servers
        with clients([first.url, second.url], users) as group:
            assert all(c.connected_to == [first.url + "/v1/events"] for c in group)
            publisher = Publisher(second.url)
            broadcasts: list[str] = []
            for step in range(5):
                publisher.publish(seq.body(step))
                seq.accepted(step)
                publisher.publish(broadcast_event(f"pre{step}"))
                broadcasts.append(f"pre{step}")
            drain_seconds = float(FAST["NOTIFIER_DRAIN_SECONDS"])
            sigterm_at = time.monotonic()
            first.signal(signal.SIGTERM)
            step = 5
            while time.monotonic() - sigterm_at < drain_seconds + 1.5:
                publisher.publish(seq.body(step))
                seq.accepted(step)
                publisher.publish(broadcast_event(f"mid{step}"))
                broadcasts.append(f"mid{step}")
                step += 1
                time.sleep(0.1)
            exit_code = first.wait(drain_seconds + 12)
            exited_after = time.monotonic() - sigterm_at
            for extra in range(3):
                publisher.publish(broadcast_event(f"post{extra}"))
                broadcasts.append(f"post{extra}")
            # Per-user events (20 users) and broadcasts (everyone), each in publish order.
            expected = {user: seq.expected.get(user, []) for user in users}
            wait_until(lambda: all(c.connected_to[-1] == second.url + "/v1/events" for c in group), 15,
                       message="every client to fail over to the second instance")

            def complete(client: Client) -> bool:
                keys = set(client.keys())
                return set(expected[client.user]) <= keys and set(broadcasts) <= keys

            wait_until(lambda: all(complete(c) for c in group), 20, message="every client to resume everything")
            time.sleep(0.3)
        ends = sorted(c.stream_ends[0] - sigterm_at for c in group if c.stream_ends)
        assert len(ends) == len(users), "every stream on the draining instance was closed by the server"
        for client in group:
            notes = client.notifications()
            ids = [n["id"] for n in notes]
            assert len(ids) == len(set(ids)), client.user
            assert [parse_event_id(i) for i in ids] == sorted(parse_event_id(i) for i in ids), client.user
            keys = [n["data"]["key"] for n in notes]
            assert len(keys) == len(set(keys)), f"{client.user}: duplicates"
            assert [k for k in keys if ":" in k] == expected[client.user], client.user
            assert [k for k in keys if ":" not in k] == broadcasts, client.user
            assert not client.resets()
        # All within the drain window (plus gunicorn's 1 s accept loop and the watcher's poll)...
        assert ends[-1] < drain_seconds + 2.5, ends[-1]
        # ...and spread over it, not all at once.
        spread = ends[-1] - ends[0]
        assert spread > drain_seconds * 0.6, f"closes not spread: {ends[0]:.2f}..{ends[-1]:.2f}"
        buckets = [sum(1 for e in ends if ends[0] + i * 0.5 <= e < ends[0] + (i + 1) * 0.5) for i in range(8)]
        assert max(buckets) <= len(ends) * 0.4, buckets
        assert exit_code == 0
        assert exited_after < drain_seconds + 10, "inside graceful_timeout"
        print(f"drain: closes from {ends[0]:.2f}s to {ends[-1]:.2f}s after SIGTERM, buckets {buckets}, "
              f"master exited after {exited_after:.2f}s")


# --------------------------------------------------------------------------
# 6. A client that stops reading while 10,000 events are published
# --------------------------------------------------------------------------


def test_stalled_reader_is_evicted_and_memory_stays_bounded() -> None:
    readers = ["reader0", "reader1"]
    payload = "x" * 1500
    total, batch = 10_000, 100
    with stack() as (servers, _redis):
        server = servers[0]
        # The stalled client: a tiny receive buffer, and it never reads.
        stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", server.port))
        request = (f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                   f"Authorization: Bearer {tokens.token('stalled')}\r\nAccept: text/event-stream\r\n\r\n")
        stalled.sendall(request.encode())
        try:
            with clients([server.url], readers) as group:
                wait_until(lambda: metric(servers, "notifier_streams_open") == 3, 10, message="3 open streams")
                pids = server.worker_pids()
                rss_before = {pid: rss_kib(pid) for pid in pids}
                publisher = Publisher(server.url)
                keys = []
                started = time.monotonic()
                for first in range(0, total, batch):
                    body = [{"broadcast": True, "type": "bulk", "message": payload, "data": {"key": f"b{i}"}}
                            for i in range(first, first + batch)]
                    publisher.publish(body)
                    keys.extend(f"b{i}" for i in range(first, first + batch))
                    # Healthy readers keep up (in a browser they would); pace
                    # the publisher so a busy test machine does not make them
                    # "slow" too. The stalled client falls further behind anyway.
                    wait_until(lambda: all(len(c.notes) >= len(keys) - 300 for c in group), 10, interval=0.005,
                               message="the healthy readers to keep up")
                    assert time.monotonic() - started < 60, "publishing 10,000 events took too long"
                published_in = time.monotonic() - started
                wait_delivered(group, {user: keys for user in readers}, timeout=60)
                rss_after = {pid: rss_kib(pid) for pid in pids}
                for client in group:
                    assert_exactly_once_in_order(client, keys)
                evictions = metric(servers, "notifier_evictions_total")
                replayed = metric(servers, "notifier_replayed_events_total")
                assert evictions >= 1
            growth_mib = max(rss_after[pid] - rss_before[pid] for pid in pids) / 1024
            # Unbounded, the stalled stream would hold ~10,000 x 1.7 KB frames
            # (plus the decoded payloads): over 30 MiB. Bounded, its queue holds
            # at most NOTIFIER_QUEUE_SIZE (512) events.
            assert growth_mib < 16, f"worker RSS grew by {growth_mib:.1f} MiB ({evictions:.0f} evictions, {replayed:.0f} replayed)"
            # The server ended the stalled stream: reading it now reaches EOF.
            stalled.settimeout(10)
            received = 0
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                chunk = stalled.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
            else:
                raise AssertionError("the stalled stream was never closed")
            assert received < total * len(payload), "the stalled client was not sent everything"
            print(f"slow client: evicted ({evictions:.0f}), RSS growth {growth_mib:.1f} MiB, "
                  f"10,000 events published in {published_in:.1f}s, stalled client got {received // 1024} KiB")
        finally:
            stalled.close()


# --------------------------------------------------------------------------
# 7. A Last-Event-ID older than the history kept
# --------------------------------------------------------------------------


def test_resume_older_than_history_gets_reset() -> None:
    with stack(NOTIFIER_HISTORY_MAX_EVENTS="5") as (servers, _redis):
        server = servers[0]
        publisher = Publisher(server.url)
        ids = [publisher.publish(user_event("old", f"o{i}"))["published"][0]["id"] for i in range(12)]
        headers = tokens.bearer(tokens.token("old"))

        # Within the history: a plain replay.
        recent = SSEConnection(server.url + "/v1/events", {**headers, "Last-Event-ID": ids[8]})
        assert recent.status == 200
        got = recent.collect(3, 5)
        recent.close()
        assert [e.json()["data"]["key"] for e in got] == ["o9", "o10", "o11"]

        # Older than the history: reset, with an id to resume from.
        for query in (f"?last_event_id={ids[1]}", ""):
            extra = {} if query else {"Last-Event-ID": ids[1]}
            old = SSEConnection(server.url + "/v1/events" + query, {**headers, **extra})
            assert old.status == 200
            [event] = old.collect(1, 5)
            assert event.event == "reset"
            assert event.json()["reason"] == "too_old"
            assert event.id == ids[-1] == event.json()["resume_from"]
            # ...and live from there on, nothing replayed twice.
            new_id = publisher.publish(user_event("old", "o-live"))["published"][0]["id"]
            [live] = old.collect(1, 5)
            assert live.id == new_id
            old.close()
            ids.append(new_id)
        assert metric(servers, 'notifier_replay_resets_total') >= 2
        # The page refetches: /v1/notifications has what the history still holds.
        page = requests.get(server.url + "/v1/notifications?limit=50", headers=headers, timeout=5).json()
        assert [n["id"] for n in page["notifications"]] == list(reversed(ids[-5:]))
