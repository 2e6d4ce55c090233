"""A worker's chores run on schedule, survive their own failures, and stop."""

from __future__ import annotations

import gevent

from notifier.periodic import Every


def test_a_chore_that_fails_keeps_running_until_stopped() -> None:
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first run fails")

    chore = Every(0.01, action, "test")
    chore.start()
    for _ in range(200):  # up to 2 s on a loaded machine
        if len(calls) >= 3:
            break
        gevent.sleep(0.01)
    assert len(calls) >= 3, "the failure did not end the chore"
    chore.stop()
    seen = len(calls)
    gevent.sleep(0.05)
    assert len(calls) == seen and not chore.running


def test_a_chore_ends_when_its_condition_says_so() -> None:
    calls: list[int] = []
    chore = Every(0.01, lambda: calls.append(1), "test", until=lambda: len(calls) >= 2)
    chore.start()
    for _ in range(200):
        if len(calls) >= 2:
            break
        gevent.sleep(0.01)
    gevent.sleep(0.05)
    assert len(calls) == 2, "no run after its condition said stop"
