"""gunicorn internals: fewer system calls in its response writer, the client
socket it puts in the WSGI environ, whether it reads a request's environ
after the body, and a worker's ``alive`` flag.

The writer. gunicorn writes a response's head and its first body bytes with
two ``sendall`` calls, and gevent's ``sendall`` asks the kernel for the
socket's buffer size (``getsockopt``) before each send. On loopback a send is
the costly part of a publish request and of every SSE write (bench/README.md),
so, in each worker (``install_writes``, called by ``notifier.server``):

- the head is kept until the first body write (or ``close``) and goes out in
  the same ``send`` as the body (or the SSE stream's first chunk);
- a write is one ``send``; only a partial send falls back to ``sendall``.

Bytes on the wire are unchanged. Outside the tested range, or if
``Response`` does not look as expected, nothing is patched and gunicorn
behaves as shipped; ``client_socket`` gives None (streams then notice a gone
client at their next write) and ``worker_stopping`` is never true (no active
drain: gunicorn's ``graceful_timeout`` ends the streams).
"""

from __future__ import annotations

from typing import Any

from .versions import Tested

TESTED = Tested("gunicorn", "27.0.1", "27.1")
ACTIVE = TESTED.active

_HEAD = "_notifier_pending_head"
_NEEDED = ("write", "send_headers", "_emit_body", "close", "sendfile", "default_headers")


def client_socket(environ: dict[str, Any]) -> Any:
    """The socket gunicorn serves this request on (gevent's wrapper in a
    gevent worker), or None."""
    return environ.get("gunicorn.socket") if ACTIVE else None


# Whether this worker's gunicorn reads a request's environ once the app has
# returned: None until ``note_worker`` has looked (not a gunicorn worker of ours).
_environ_read_later: bool | None = None


def note_worker(worker: Any) -> bool:
    """Called once per worker (``notifier.server``): after the app returns,
    gunicorn reads the WSGI environ only to check for a file wrapper, in its
    logger's ``access`` (which its own logger skips while the access log is
    off) and in a ``post_request`` hook. True when none of these reads it
    here (``release_environ`` will empty environs); a logger class of the
    deployment's own may read the environ whatever the settings, so only
    gunicorn's own (and its statsd logger, which reads the response) count."""
    global _environ_read_later
    _environ_read_later = True
    if not ACTIVE:
        return False
    try:
        from gunicorn.config import PostRequest  # type: ignore[import-untyped]
        from gunicorn.glogging import Logger  # type: ignore[import-untyped]
        from gunicorn.instrument.statsd import Statsd  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - inside the tested range they exist
        return False
    own_access = getattr(type(worker.log), "access", None) in (Logger.access, Statsd.access)
    access_log = getattr(worker.log, "access_log_enabled", True)
    hook = getattr(worker.cfg, "post_request", None)
    _environ_read_later = not own_access or bool(access_log) or hook is not PostRequest.default
    return not _environ_read_later


def release_environ(environ: dict[str, Any]) -> bool:
    """Empty a request's WSGI environ once the app has returned its body,
    where this worker's gunicorn will read no more of it than the file
    wrapper check (kept). PEP 3333 lets the application change the environ
    as it likes. True when emptied.

    Why: gunicorn keeps the environ until the response ends, which for an SSE
    stream is hours. It is ~2 KiB per stream (26 entries, the header names it
    built, a closure and an error stream of its own), and it holds the
    client's credentials (the Authorization header, the cookies)."""
    if not ACTIVE or _environ_read_later is not False:
        return False
    file_wrapper = environ.get("wsgi.file_wrapper")
    environ.clear()
    if file_wrapper is not None:
        environ["wsgi.file_wrapper"] = file_wrapper
    return True


def worker_stopping(worker: Any) -> bool:
    """True once gunicorn has asked this worker to stop (SIGTERM)."""
    return ACTIVE and getattr(worker, "alive", True) is False


def writes_installed() -> bool:
    try:
        from gunicorn.http.wsgi import Response  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - gunicorn is a dependency
        return False
    return bool(getattr(Response, "_notifier_writes", False))


def install_writes() -> bool:
    """Patch gunicorn's Response in this process; True when patched."""
    from gunicorn.http.wsgi import Response

    if getattr(Response, "_notifier_writes", False):
        return True
    if not ACTIVE or not all(callable(getattr(Response, name, None)) for name in _NEEDED):
        return False
    _patch(Response)
    return True


def _send(sock: Any, data: bytes) -> None:
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def _flush_head(response: Any, tail: bytes = b"") -> None:
    head = response.__dict__.pop(_HEAD, b"")
    if head or tail:
        _send(response.sock, head + tail)


def _patch(response_class: Any) -> None:
    from gunicorn import util  # type: ignore[import-untyped]

    original_write = response_class.write
    original_sendfile = response_class.sendfile
    original_send_headers = response_class.send_headers

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

    response_class.write = write
    response_class.send_headers = send_headers
    response_class._emit_body = _emit_body
    response_class.close = close
    response_class.sendfile = sendfile
    response_class._notifier_writes = True
