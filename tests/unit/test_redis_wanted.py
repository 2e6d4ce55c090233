"""What request greenlets ask of the Redis subscriber, and when they are let
go: only once their own channels are confirmed on a session that has caught
up, never by someone else's confirmation."""

from __future__ import annotations

from notifier.broker.redis_wanted import Wanted


def test_a_confirmation_before_the_session_caught_up_releases_nobody() -> None:
    wanted = Wanted({"bc"})
    waiter = wanted.waiter(["user:a"])
    assert waiter is not None
    wanted.confirm("user:a")
    assert not waiter.done.is_set(), "the catch-up has not run yet"
    wanted.go_live()
    assert waiter.done.is_set()


def test_each_confirmation_releases_only_the_waiters_of_its_channel() -> None:
    wanted = Wanted(set())
    wanted.go_live()
    a, ab, b = wanted.waiter(["a"]), wanted.waiter(["a", "b"]), wanted.waiter(["b"])
    assert a and ab and b
    wanted.confirm("a")
    assert a.done.is_set() and not ab.done.is_set() and not b.done.is_set()
    wanted.confirm("b")
    assert ab.done.is_set() and b.done.is_set()
    assert wanted.waiter(["a", "b"]) is None, "confirmed and live: nothing to wait for"


def test_a_waiter_that_gave_up_is_forgotten_and_a_lost_session_unconfirms() -> None:
    wanted = Wanted(set())
    wanted.go_live()
    waiter = wanted.waiter(["a"])
    assert waiter is not None
    wanted.forget(waiter)
    wanted.confirm("a")
    assert not waiter.done.is_set()
    wanted.go_down()
    assert wanted.waiter(["a"]) is not None, "after a lost session every channel waits for the next one"
