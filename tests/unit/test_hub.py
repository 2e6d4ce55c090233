"""Hub fan-out, eviction of slow subscribers, and the replay hand-over."""

from __future__ import annotations

import time

import gevent

from notifier.events import Delivery
from notifier.hub import CloseReason, Hub, Subscription


def delivery(n: int) -> Delivery:
    return Delivery((n, 0), f"id: {n}-0\ndata: x\n\n".encode())


def test_fan_out_shares_one_frame_and_only_reaches_members() -> None:
    hub = Hub()
    a = Subscription("a", ["user:a", "bc"], 10)
    b = Subscription("b", ["user:b", "bc"], 10)
    assert hub.add(a) == ["user:a", "bc"]
    assert hub.add(b) == ["user:b"]
    event = delivery(1)
    assert hub.dispatch("bc", event) == 2
    assert hub.dispatch("user:a", delivery(2)) == 1
    assert hub.dispatch("nobody", delivery(3)) == 0
    got_a, got_b = a.take(), b.take()
    assert [d.id[0] for d in got_a] == [1, 2]
    assert [d.id[0] for d in got_b] == [1]
    assert got_a[0].frame is got_b[0].frame, "the frame is encoded once and shared"


def test_unsubscribe_reports_emptied_channels_and_frees() -> None:
    hub = Hub()
    a = Subscription("a", ["x", "y"], 10)
    b = Subscription("b", ["y"], 10)
    hub.add(a)
    hub.add(b)
    assert hub.remove(a) == ["x"]
    assert hub.remove(b) == ["y"]
    assert hub.channels() == [] and len(hub) == 0


def test_full_queue_evicts_that_subscriber_only() -> None:
    evicted = []
    hub = Hub(on_evict=evicted.append)
    slow = Subscription("slow", ["bc"], 3)
    fast = Subscription("fast", ["bc"], 3)
    hub.add(slow)
    hub.add(fast)
    called = []
    slow.on_evict = lambda: called.append(True)
    for n in range(1, 6):
        hub.dispatch("bc", delivery(n))
        fast.take()  # the fast one keeps up
    assert slow.closed == CloseReason.EVICTED
    assert evicted == [slow] and called == [True]
    assert slow.queue == type(slow.queue)(), "an evicted queue is freed"
    assert fast.closed is None
    assert slow.wait(0) is True, "the stream wakes up to end"


def test_duplicates_and_old_ids_are_dropped() -> None:
    sub = Subscription("a", ["c"], 10)
    for n in (1, 2, 2, 1, 3):
        sub.offer(delivery(n))
    assert [d.id[0] for d in sub.take()] == [1, 2, 3]


def test_skip_through_hands_over_from_replay_to_live() -> None:
    sub = Subscription("a", ["c"], 10)
    for n in (4, 5, 6):
        sub.offer(delivery(n))  # arrived live while history was read
    sub.skip_through((5, 0))  # history covered up to 5
    sub.offer(delivery(5))
    sub.offer(delivery(7))
    assert [d.id[0] for d in sub.take()] == [6, 7]


def test_close_all_and_wait_timeout() -> None:
    hub = Hub()
    subs = [Subscription(str(i), ["c"], 5) for i in range(3)]
    for sub in subs:
        hub.add(sub)
    assert subs[0].wait(0.01) is False
    assert hub.close_all() == 3
    assert all(sub.closed == CloseReason.SHUTDOWN for sub in subs)
    subs[0].offer(delivery(1))
    assert subs[0].take() == []


def test_one_alarm_clock_per_hub_wakes_streams_when_due_without_a_timer_each() -> None:
    hub = Hub(alarm_interval=0.02)
    early, late = Subscription("a", ["user:a"], 10), Subscription("b", ["user:b"], 10)
    hub.add(early)
    hub.add(late)
    clock = hub._alarm_clock
    assert clock is not None and early.on_alarm_clock
    late.wake_at = time.monotonic() + 60
    start = time.monotonic()
    early.sleep_until(start + 0.1)
    woke = time.monotonic() - start
    assert 0.1 <= woke < 0.1 + 0.02 + 0.08, woke
    assert not late.wakeup.is_set(), "not due: left asleep"
    assert hub._alarm_clock is clock, "one greenlet for every stream"
    # Something queued wakes a sleeper at once, whatever its alarm.
    gevent.spawn_later(0.01, hub.dispatch, "user:b", delivery(1))
    start = time.monotonic()
    late.sleep_until(start + 60)
    assert time.monotonic() - start < 1 and [d.id for d in late.take()] == [(1, 0)]


def test_the_alarm_clock_stops_with_the_last_subscription_and_starts_with_the_next() -> None:
    hub = Hub(alarm_interval=0.01)
    first = Subscription("a", ["user:a"], 10)
    hub.add(first)
    hub.remove(first)
    assert not first.on_alarm_clock and first.wakeup.is_set(), "a sleeper without a timer is woken to re-arm with one"
    gevent.sleep(0.05)
    assert hub._alarm_clock is None, "no greenlet left behind for an empty hub"
    second = Subscription("b", ["user:b"], 10)
    hub.add(second)
    start = time.monotonic()
    second.sleep_until(start + 0.05)
    assert 0.05 <= time.monotonic() - start < 0.5


def test_without_a_hub_a_subscription_sleeps_on_its_own_timer() -> None:
    loose = Subscription("a", ["user:a"], 10)
    start = time.monotonic()
    loose.sleep_until(start + 0.05)
    assert 0.05 <= time.monotonic() - start < 0.5


def big(n: int, size: int) -> Delivery:
    return Delivery((n, 0), b"x" * size)


def test_a_queue_is_bounded_in_bytes_as_well_as_events() -> None:
    cut: list[str] = []
    sub = Subscription("a", ["c"], 100, max_bytes=1000)
    sub.on_evict = lambda: cut.append("socket shut down")
    assert sub.offer(big(1, 600)) and sub.offer(big(2, 400)), "exactly at the bound"
    assert sub.queued_bytes == 1000
    assert sub.take() and sub.queued_bytes == 0, "what was written no longer counts"
    assert sub.offer(big(3, 5000)), "one event larger than the bound still goes alone into an empty queue"
    assert not sub.offer(big(4, 1)), "but nothing after it"
    assert sub.closed == CloseReason.EVICTED and cut == ["socket shut down"]


def test_the_alarm_clock_cuts_a_write_blocked_past_the_deadline_or_the_write_timeout() -> None:
    hub = Hub(alarm_interval=0.01, write_timeout=0.3)
    expiring, stuck, idle = (Subscription(name, [name], 10) for name in ("expiring", "stuck", "idle"))
    cut: list[str] = []
    for sub in (expiring, stuck, idle):
        sub.on_evict = lambda name=sub.user_id: cut.append(name)
        hub.add(sub)
    now = time.monotonic()
    expiring.writing_since, expiring.deadline, expiring.deadline_reason = now, now + 0.1, CloseReason.TOKEN_EXPIRED
    stuck.writing_since = now
    idle.deadline = now + 0.1  # past its deadline but not writing: its own greenlet ends it, not the clock
    gevent.sleep(0.2)
    assert cut == ["expiring"] and expiring.closed == CloseReason.TOKEN_EXPIRED
    gevent.sleep(0.2)
    assert cut == ["expiring", "stuck"] and stuck.closed == CloseReason.WRITE_TIMEOUT
    assert idle.closed is None
    for sub in (expiring, stuck, idle):
        hub.remove(sub)
