"""``runtime.gevent.on_fresh_stack``: the deep work of opening a stream runs
in a greenlet that ends with it, so the stream's long-lived greenlet does not
keep the stack pages that work touched."""

from __future__ import annotations

import contextvars
import subprocess
import sys
import textwrap

import gevent
import gevent.event
import pytest

from notifier.runtime.gevent import on_fresh_stack

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def test_returns_the_result_and_sees_the_caller_s_context() -> None:
    WHO.set("alice")
    assert on_fresh_stack(lambda a, b: (WHO.get(), a + b), 2, 3) == ("alice", 5)


def test_raises_the_function_s_exception_in_the_caller() -> None:
    def fail() -> None:
        raise KeyError("gone")

    with pytest.raises(KeyError, match="gone"):
        on_fresh_stack(fail)


def test_the_function_may_wait_while_other_greenlets_run() -> None:
    order: list[str] = []

    def slow() -> str:
        gevent.sleep(0.05)
        order.append("slow done")
        return "ok"

    other = gevent.spawn(lambda: order.append("other ran"))
    caller = gevent.spawn(on_fresh_stack, slow)
    assert caller.get(timeout=5) == "ok"
    other.join(5)
    assert order == ["other ran", "slow done"]


def test_a_waiting_greenlet_keeps_less_memory_when_its_deep_work_ran_on_a_fresh_stack() -> None:
    """Resident memory per parked greenlet, 3,000 of them, after a 150-deep
    call made in the greenlet itself or through on_fresh_stack (measured in a
    child process, 8 KiB against 17 KiB here)."""
    script = textwrap.dedent("""
        import os, sys, gevent, gevent.event
        from notifier.runtime.gevent import on_fresh_stack
        def rss():
            with open(f"/proc/{os.getpid()}/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
        def deep(n):
            return 0 if n == 0 else deep(n - 1) + 1
        fresh = sys.argv[1] == "fresh"
        ready = gevent.event.Event()
        def run():
            on_fresh_stack(deep, 150) if fresh else deep(150)
            ready.wait()
        gevent.sleep(0)
        before = rss()
        greenlets = [gevent.spawn(run) for _ in range(3000)]
        gevent.sleep(0.2)
        print((rss() - before) * 1024 // 3000)
        ready.set()
        gevent.joinall(greenlets)
    """)
    per_greenlet = {mode: int(subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                                             check=True, timeout=60).stdout) for mode in ("in_place", "fresh")}
    assert per_greenlet["in_place"] - per_greenlet["fresh"] >= 4096, per_greenlet


def test_a_caller_killed_while_the_function_waits_unwinds_the_function_too() -> None:
    """gunicorn kills a handler at its graceful timeout: the opening it was
    waiting for must unwind (and release what it took), not finish later and
    switch into whatever the killed caller waits on by then."""
    events: list[str] = []
    never = gevent.event.Event()

    def opening() -> str:
        try:
            never.wait()
            return "opened"
        finally:
            events.append("opening unwound")

    caller = gevent.spawn(on_fresh_stack, opening)
    gevent.sleep(0.01)
    caller.kill(block=True, timeout=5)
    assert caller.dead
    assert events == ["opening unwound"]
    gevent.sleep(0.01)  # nothing left to switch anywhere
    assert events == ["opening unwound"]


def test_log_flushes_asked_for_from_another_thread_run_at_once() -> None:
    import threading

    from notifier.runtime.gevent import after_this_turn_here

    defer = after_this_turn_here()
    ran: list[str] = []
    defer(lambda: ran.append("loop"))
    assert ran == [], "on the loop's own thread: after this turn"
    gevent.sleep(0)
    assert ran == ["loop"]
    worker = threading.Thread(target=defer, args=(lambda: ran.append("thread"),))
    worker.start()
    worker.join(5)
    assert ran == ["loop", "thread"], "another thread's loop would never run it"
