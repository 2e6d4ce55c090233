"""Sentinel: 1 master + 1 replica + 3 sentinels (``redis-server --sentinel``)
on loopback, real gunicorn (2 gevent workers) configured with a
``redis+sentinel://`` URL, EventSource-like clients connected and a publisher
running while the master fails over:

- ``SENTINEL FAILOVER`` (the old master lives on, demoted to a replica);
- SIGKILL of the master (the replica is promoted; the killed one comes back
  as a replica), with ``NOTIFIER_REDIS_MIN_REPLICAS=1``.

Every client receives every acknowledged event once, in order per channel,
or a reset; with MIN_REPLICAS=1 the new master's history holds every
acknowledged event. The numbers are printed (docs/delivery.md quotes them).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from bench.topologies import SentinelSet

from ..support import tokens
from ..support.delivery import Tally, outcome, summary, wait_received
from ..support.http import all_notifications
from ..support.processes import Gunicorn
from .test_chaos import FAST, clients

pytestmark = pytest.mark.chaos

USERS = [f"sent{i}" for i in range(4)]


@contextmanager
def sentinel_stack(**env: str) -> Iterator[tuple[Gunicorn, SentinelSet]]:
    sentinels = SentinelSet(replicas=1, sentinels=3, down_after_ms=1000).start()
    server = Gunicorn({**FAST, "NOTIFIER_REDIS_URL": sentinels.url, **env}, workers=2)
    try:
        server.start()
        yield server, sentinels
    finally:
        server.stop()
        sentinels.stop()


def publish_through(server: Gunicorn, fault: threading.Event, steps: int, fault_at: int) -> Tally:
    tally = Tally(server.url, USERS, broadcast_every=4)
    for number in range(steps):
        if number == fault_at:
            fault.set()
        tally.step(number, within=40)
        time.sleep(0.01)
    return tally


def test_sentinel_failover_every_client_gets_every_acknowledged_event_in_order() -> None:
    with sentinel_stack() as (server, sentinels), clients([server.url], USERS) as group:
        old_port = sentinels.master_port()
        fault = threading.Event()

        def inject() -> None:
            fault.wait(30)
            subprocess.run(["redis-cli", "-p", str(sentinels.sentinels[0].port), "SENTINEL", "FAILOVER",
                            sentinels.service], capture_output=True, timeout=5, check=True)

        injector = threading.Thread(target=inject, daemon=True)
        injector.start()
        tally = publish_through(server, fault, steps=80, fault_at=20)
        injector.join(10)
        new_port = sentinels.wait_for_new_master(old_port)
        for number in range(80, 100):  # and after the failover is settled
            tally.step(number)
        wait_received(group, tally)
        outcomes = [outcome(client, tally) for client in group]
        print("SENTINEL FAILOVER", old_port, "->", new_port, summary(outcomes, tally))
        for result in outcomes:
            assert not result.duplicated and not result.reordered, result
            assert result.resets or not result.lost, result
        assert server.worker_pids() and all(s == 200 for s in _readyz(server))


def test_master_sigkill_with_min_replicas_loses_no_acknowledged_event() -> None:
    with sentinel_stack(NOTIFIER_REDIS_MIN_REPLICAS="1") as (server, sentinels), clients([server.url], USERS) as group:
        master = sentinels.master()
        old_port = master.port
        fault = threading.Event()

        def inject() -> None:
            fault.wait(30)
            master.kill(signal.SIGKILL)
            sentinels.wait_for_new_master(old_port)
            master.start()  # comes back empty; the sentinels make it a replica of the new master

        injector = threading.Thread(target=inject, daemon=True)
        injector.start()
        tally = publish_through(server, fault, steps=80, fault_at=20)
        injector.join(40)
        for number in range(80, 100):
            tally.step(number, within=40)
        wait_received(group, tally)
        outcomes = [outcome(client, tally) for client in group]
        print("SIGKILL master, MIN_REPLICAS=1", summary(outcomes, tally))
        for result in outcomes:
            assert not result.duplicated and not result.reordered, result
            assert result.resets or not result.lost, result
        # Nothing acknowledged was lost with the master: the new one's history has it all.
        for user in USERS:
            kept = {n["data"]["key"] for n in all_notifications(server.url, tokens.bearer(tokens.token(user)))}
            missing = [key for key in tally.acknowledged[user] if key not in kept]
            assert not missing, f"{user}: acknowledged but gone with the master: {missing[:5]}"


def _readyz(server: Gunicorn) -> list[int]:
    return [requests.get(server.url + "/readyz", timeout=3).status_code for _ in range(8)]


def test_a_subscriber_on_a_demoted_master_notices_its_role() -> None:
    """centrifugal/centrifugo #1189: after a failover a subscriber stayed on the
    demoted master, which accepted it and even answered its probe (PUBLISH is
    allowed on a replica, and the probe went out on a pooled connection to that
    same server) while real publishes went to the new master. Sentinel kills
    clients when it reconfigures a server, but a server demoted any other way
    (by hand, an operator, a partition healing) keeps them: the subscriber asks
    its own server's ROLE on every probe and leaves a replica."""
    from notifier.broker.redis import RedisBroker
    from notifier.broker.redis_session import SessionSettings
    from notifier.broker.redis_store import RedisStore, make_client
    from notifier.channels import ChannelNames

    from ..contract.test_protocol_contracts import Listener
    from ..support.cores import pump_until
    from ..support.processes import RedisServer

    primary, other = RedisServer().start(), RedisServer().start()
    names = ChannelNames("demoted:")
    broker = RedisBroker(names, RedisStore(make_client(primary.url, 1), names), SessionSettings(1, 0.2, 0.5),
                         sentinel=True)
    broker.start(Listener())
    try:
        pump_until(lambda: broker.health().ok)
        primary.client().replicaof("127.0.0.1", other.port)  # demoted; the server keeps our connections
        pump_until(lambda: not broker.health().ok, timeout=5)
        assert "demoted master" in broker.health().reason
    finally:
        broker.stop()
        primary.stop()
        other.stop()
