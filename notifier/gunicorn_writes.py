"""Fewer system calls per response in gunicorn's writer (installed by
gunicorn.conf.py in each worker; nothing else imports this module).

gunicorn (27) writes a response's head and its first body bytes with two
``sendall`` calls, and gevent's ``sendall`` asks the kernel for the socket's
buffer size (``getsockopt``) before each send. On loopback a send is the
costly part of a publish request and of every SSE write (the kernel does the
receiver's work in the sender's call), and more so in a VM. So, measured with
``bench/`` on 2 cores:

- the head is kept until the first body write (or ``close``) and goes out in
  the same ``send`` as the body (or the SSE stream's first chunk): one send
  per small response instead of two;
- a write is one ``send``; only a partial send falls back to ``sendall`` for
  the rest (no ``getsockopt``).

Bytes on the wire are unchanged. If gunicorn's ``Response`` ever stops
looking as expected, nothing is patched and gunicorn behaves as shipped.
"""

from __future__ import annotations

from typing import Any

_HEAD = "_notifier_pending_head"
TESTED_GUNICORN = ("27.0.1",)


def _send(sock: Any, data: bytes) -> None:
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def install() -> bool:
    """Patch gunicorn's Response in this process; True when patched."""
    try:
        from gunicorn import util  # type: ignore[import-untyped]
        from gunicorn.http.wsgi import Response  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - not under gunicorn
        return False
    import gunicorn

    needed = ("write", "send_headers", "_emit_body", "close", "sendfile", "default_headers")
    if getattr(Response, "_notifier_writes", False):
        return True
    # Only on the gunicorn releases this was read against and tested with
    # (constraints.txt): another release runs as shipped, merely slower.
    if gunicorn.__version__ not in TESTED_GUNICORN or not all(callable(getattr(Response, n, None)) for n in needed):
        return False
    original_write = Response.write
    original_sendfile = Response.sendfile
    original_send_headers = Response.send_headers

    def send_headers(self: Any) -> None:
        # gunicorn's own send_headers, minus the write: the head waits for the body.
        if self.headers_sent:
            return
        if self.__dict__.get("_notifier_direct"):
            original_send_headers(self)
            return
        tosend = self.default_headers()
        tosend.extend([f"{k}: {v}\r\n" for k, v in self.headers])
        setattr(self, _HEAD, util.to_bytestring("{}\r\n".format("".join(tosend)), "latin-1"))
        self.headers_sent = True

    def _flush_head(self: Any, tail: bytes = b"") -> None:
        head = self.__dict__.pop(_HEAD, b"")
        if head or tail:
            _send(self.sock, head + tail)

    def _emit_body(self: Any, data: bytes) -> None:
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        _flush_head(self, data)

    def close(self: Any) -> None:
        if not self.headers_sent:
            self.send_headers()
        _flush_head(self, b"0\r\n\r\n" if self.chunked else b"")

    def sendfile(self: Any, respiter: Any) -> Any:
        # sendfile writes the head and the file itself, as shipped.
        _flush_head(self)
        self._notifier_direct = True
        return original_sendfile(self, respiter)

    def write(self: Any, data: bytes) -> None:
        original_write(self, data)
        # gunicorn returns early on an empty write (or a body-less response):
        # a head still pending must go out now, as it would have unpatched.
        if self.__dict__.get(_HEAD):
            _flush_head(self)

    Response.write = write
    Response.send_headers = send_headers
    Response._emit_body = _emit_body
    Response.close = close
    Response.sendfile = sendfile
    Response._notifier_writes = True
    return True
