"""What the core asked a worker's Redis subscriber for, shared by the request
greenlets that ask (``RedisBroker.subscribe`` / ``unsubscribe``) and the
owner greenlet that acts on it (``redis_session.Session``)."""

from __future__ import annotations

import os

from gevent.event import Event


class Waiter:
    """A request greenlet waiting for its channels to be confirmed."""

    __slots__ = ("done", "missing")

    def __init__(self, missing: set[str]):
        self.missing = missing
        self.done = Event()


class Wanted:
    """What the core asked for, shared by request greenlets and the owner.

    ``changed`` holds the channels whose wish changed since the owner last
    looked, so the owner never compares all (10,000s of) channels; the pipe
    wakes the owner from its wait on the socket.
    """

    def __init__(self, always: set[str]):
        self.always = always
        self.channels: set[str] = set(always)
        self.changed: set[str] = set()
        self.confirmed: set[str] = set()
        self.waiters: list[Waiter] = []
        # Opened by ``open`` in the process that serves: a pipe made before a
        # fork (an app preloaded in gunicorn's master) would be shared by every
        # worker, and one worker's owner would swallow another's wake-ups.
        self._read_fd = self._write_fd = -1

    def open(self) -> None:
        if self._read_fd < 0:
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)

    @property
    def wake_fd(self) -> int:
        return self._read_fd

    def wake(self) -> None:
        if self._write_fd < 0:
            return  # not started: the first session subscribes everything wanted
        try:
            os.write(self._write_fd, b"!")
        except BlockingIOError:
            pass  # the pipe is full: the owner is already due to wake

    def drain(self) -> set[str]:
        """Acknowledge the wake-ups; returns the changed channels."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        changed, self.changed = self.changed, set()
        return changed

    def confirm(self, channel: str) -> None:
        self.confirmed.add(channel)

    def release_waiters(self) -> None:
        """Wake every waiter whose channels are all confirmed."""
        for waiter in list(self.waiters):
            waiter.missing -= self.confirmed
            if not waiter.missing:
                waiter.done.set()
                self.waiters.remove(waiter)

    def close(self) -> None:
        if self._read_fd >= 0:
            os.close(self._read_fd)
            os.close(self._write_fd)
            self._read_fd = self._write_fd = -1
