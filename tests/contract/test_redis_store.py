"""The Redis store's delivery rules, against a real redis-server (unique key
prefix per test): stale publishes are refused, a lost history is reported,
and trimmed channels are found. tests/chaos/test_chaos.py drives the same rules
through real faults."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from notifier.broker.redis_history import RedisHistory
from notifier.broker.redis_store import RedisStore, make_client
from notifier.channels import ChannelNames
from notifier.events import Target, parse_event_id
from notifier.validation import Limits, validate_notification

from ..support.processes import RedisServer

TS = "2026-01-01T00:00:00.000Z"


def history_of(store: RedisStore) -> RedisHistory:
    """The history over what ``store`` publishes."""
    return RedisHistory(store.client, store.names)


def note(user: str, message: str = "m"):
    return validate_notification({"user_id": user, "message": message}, Limits(), TS)


@pytest.fixture
def store(redis_server, prefix):
    client = make_client(redis_server.url, socket_timeout=1)
    store = RedisStore(client, ChannelNames(prefix), history_max_events=5)
    yield store
    store.close()


def test_a_publish_run_after_its_deadline_stores_nothing(store: RedisStore, prefix: str) -> None:
    store._deadline_ms()  # measure the clock offset
    assert store._clock_offset_ms is not None
    # As if Redis ran the script long after the caller gave up (a stalled Redis).
    store._clock_offset_ms -= 60_000
    with pytest.raises(redis.ResponseError, match="STALE"):
        store.publish(note("alice"))
    assert store.client.exists(store.names.sequence_key, store.names.history_key(store.names.user("alice"))) == 0
    # A refusal re-measures the clock (it may have stepped): the next publish goes through.
    assert store._clock_offset_ms is None
    [published] = store.publish(note("alice"))
    assert parse_event_id(published.id) is not None


def test_no_deadline_without_a_socket_timeout(redis_server, prefix: str) -> None:
    store = RedisStore(redis.Redis.from_url(redis_server.url), ChannelNames(prefix))
    try:
        assert store._deadline_ms() == 0
        assert store.publish(note("bob"))
    finally:
        store.close()


def test_resume_from_before_a_lost_history_resets(store: RedisStore) -> None:
    channels = store.names.for_subscriber("carol", [])
    old = parse_event_id(store.publish(note("carol", "before"))[0].id)
    assert old is not None
    # Redis restarted without persistence: every key is gone.
    store.client.delete(store.names.sequence_key, store.names.history_key(channels[0]))
    assert history_of(store).replay(channels, old).reason == "unknown_id", "nothing published since: the id is unknown"
    time.sleep(0.002)  # a real restart takes longer than a millisecond: new ids are newer
    new = parse_event_id(store.publish(note("carol", "after"))[0].id)
    assert new is not None and new > old
    replay = history_of(store).replay(channels, old)
    assert replay.reset and replay.reason == "history_lost"
    # Resuming inside the new history is a normal replay.
    assert not history_of(store).replay(channels, new).reset
    newer = store.publish(note("carol", "later"))[0].id
    assert [d.payload for d in history_of(store).replay(channels, new).events] == [d.payload for d in history_of(store).recent(channels, None, 1)]
    assert history_of(store).replay(channels, new).events[0].payload.startswith('{"id":"' + newer)


def test_gaps_name_the_channels_trimmed_past_a_point(store: RedisStore) -> None:
    names = store.names
    quiet, busy = names.for_target(Target("user", "quiet")), names.for_target(Target("user", "busy"))
    store.publish(note("quiet") + note("busy"))
    seen = history_of(store).last_id()
    assert history_of(store).gaps([quiet, busy], seen) == []
    store.publish(note("quiet"))
    for _ in range(4):  # 1 + 4 = 5 kept: the oldest (already seen) is trimmed, nothing after `seen` is
        store.publish(note("busy"))
    assert history_of(store).gaps([quiet, busy], seen) == []
    for _ in range(2):  # now events after `seen` were trimmed from busy
        store.publish(note("busy"))
    assert history_of(store).gaps([quiet, busy], seen) == [busy]
    assert history_of(store).gaps([names.user("nobody")], seen) == []


# The publish script runs on the store's own connections (broker/redis_script.py):
# a connection goes back for reuse only after a complete reply.

def test_publishing_survives_a_redis_restart_without_a_spurious_error(prefix: str) -> None:
    server = RedisServer().start()
    client = make_client(server.url, socket_timeout=1)
    store = RedisStore(client, ChannelNames(prefix))
    try:
        assert store.publish(note("alice"))
        server.restart()  # the idle connection is now closed by the other side
        [published] = store.publish(note("alice", "after the restart"))
        assert history_of(store).recent([store.names.user("alice")], None, 5)[0].payload.startswith('{"id":"' + published.id)
    finally:
        store.close()
        server.stop()


def test_a_flushed_script_cache_is_refilled(store: RedisStore) -> None:
    store.publish(note("alice"))
    store.client.script_flush()
    assert store.client.script_exists(store._script.sha) == [False]
    assert store.publish(note("alice", "second"))
    assert store.client.script_exists(store._script.sha) == [True]


def test_a_reply_that_came_too_late_is_never_read_as_the_next_ones(prefix: str) -> None:
    """The connection that timed out is dropped: its late reply cannot be
    taken for the reply of the next publish (a stale ack, wrong ids)."""
    server = RedisServer().start()
    store = RedisStore(make_client(server.url, socket_timeout=0.5), ChannelNames(prefix), history_max_events=5)
    try:
        store.publish(note("alice", "warm-up"))  # one connection, idle, ready for reuse
        server.pause()
        resume = threading.Timer(1.0, server.resume)
        resume.start()
        with pytest.raises(redis.TimeoutError):
            store.publish(note("alice", "lost in the stall"))
        resume.join()
        [after] = store.publish(note("alice", "after the stall"))
        recent = history_of(store).recent([store.names.user("alice")], None, 5)
        assert recent[0].payload.startswith('{"id":"' + after.id)
        assert [json.loads(d.payload)["message"] for d in recent] == ["after the stall", "warm-up"], \
            "the stalled one ran after its deadline, so it stored nothing"
    finally:
        store.close()
        server.stop()


def test_publishing_waits_for_a_free_connection_and_gives_up_in_time(redis_server, prefix: str) -> None:
    client = make_client(redis_server.url, socket_timeout=0.5, max_connections=1)
    store = RedisStore(client, ChannelNames(prefix))
    try:
        assert store._script._slots.acquire(timeout=1)  # the only publishing connection is busy
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError, match="no Redis connection available"):
            store.publish(note("alice"))
        assert 0.4 < time.monotonic() - started < 2
        store._script._slots.release()
        assert store.publish(note("alice"))
    finally:
        store.close()


def test_threads_share_the_publishing_connections(redis_server, prefix: str) -> None:
    """The Python publisher may be used from several threads at once: more
    threads than connections, every publish stored once, ids all distinct."""
    store = RedisStore(make_client(redis_server.url, socket_timeout=2, max_connections=2), ChannelNames(prefix))
    ids: list[str] = []
    errors: list[Exception] = []

    def publish_some(n: int) -> None:
        try:
            for i in range(40):
                ids.extend(p.id for p in store.publish(note(f"u{n}", f"m{i}")))
        except Exception as exc:  # noqa: BLE001 - any failure in a thread is reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=publish_some, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == [] and len(ids) == 320 and len(set(ids)) == 320
        assert len(store._script._all) <= 2
    finally:
        store.close()
