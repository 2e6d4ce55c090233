"""SSE clients for tests: a parser that follows the spec's line rules, a
single connection, and an EventSource-like client that reconnects with
Last-Event-ID in a background thread."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass
class SSEEvent:
    id: str | None = None
    event: str = "message"
    data: str = ""
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEParser:
    """Incremental parser per the HTML spec: lines end with CRLF, LF or CR."""

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._event = ""
        self._retry: int | None = None
        self._pending_cr = False
        self.comments = 0
        self.last_retry: int | None = None

    def feed(self, text: str) -> list[SSEEvent]:
        """Linear in the input: readers must keep up with thousands of events a second."""
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        buffer = self._buffer + text
        lines = _LINE_END.split(buffer)
        self._buffer = lines.pop()  # the incomplete last line
        # A CR at the very end ended a line; a LF right after it must not end another.
        self._pending_cr = buffer.endswith("\r")
        out = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                out.append(event)
        return out

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            # Per the spec, a blank line dispatches only when a data line was
            # seen; the id is the "last event ID" and carries over.
            if not self._data:
                self._event, self._retry = "", None
                return None
            event = SSEEvent(self._id, self._event or "message", "\n".join(self._data), self._retry)
            self._data, self._event, self._retry = [], "", None
            return event
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = self.last_retry = int(value)
        return None


class SSEConnection:
    """One HTTP/1.1 GET held open; read events with a timeout."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 10):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.parser = SSEParser()
        try:
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            self.status, self.headers, rest = self._read_head()
        except BaseException:
            self.sock.close()  # a head that never comes must not leak the socket
            raise
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self._raw = rest
        self.closed = False
        self.body = b""  # non-stream responses

    def _read_head(self) -> tuple[int, dict[str, str], bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before headers")
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, rest

    def read_body(self, timeout: float = 5) -> bytes:
        """For error responses: the whole body (Content-Length)."""
        length = int(self.headers.get("content-length", "0"))
        self.sock.settimeout(timeout)
        data = self._raw
        while len(data) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data[:length]

    def _decode_chunks(self) -> tuple[bytes, bool]:
        """Complete chunks from the raw buffer; True when the last chunk arrived."""
        out = b""
        while True:
            if b"\r\n" not in self._raw:
                return out, False
            size_line, rest = self._raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return out, True
            if len(rest) < size + 2:
                return out, False
            out += rest[:size]
            self._raw = rest[size + 2:]

    def events(self, timeout: float) -> list[SSEEvent]:
        """Whatever events arrive within ``timeout`` (returns early once one has)."""
        deadline = time.monotonic() + timeout
        found: list[SSEEvent] = []
        while not found and not self.closed:
            payload, ended = self._decode_chunks() if self._chunked else (self._raw, False)
            if not self._chunked:
                self._raw = b""
            if payload:
                found.extend(self.parser.feed(payload.decode("utf-8")))
            if ended:
                self.closed = True
                break
            if found:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self._raw += chunk
        return found

    def collect(self, count: int, timeout: float) -> list[SSEEvent]:
        deadline = time.monotonic() + timeout
        got: list[SSEEvent] = []
        while len(got) < count and time.monotonic() < deadline and not self.closed:
            got.extend(self.events(deadline - time.monotonic()))
        return got

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


class EventSourceClient:
    """Behaves like a browser's EventSource: reconnects after the stream ends
    or fails, sending Last-Event-ID, waiting ``retry:`` (as the server set it,
    capped at ``max_retry_seconds``). Given several stream URLs it fails over
    like a browser behind a load balancer: a refused connection, a timeout or
    a non-200 answer makes it try the next one.

    Runs in a thread; ``events`` holds every event received, in order, and
    ``notes`` the JSON of each notification, parsed once on arrival
    (re-parsing thousands every poll would starve the reader threads).
    """

    def __init__(self, urls: str | list[str], headers: dict[str, str] | None = None, *,
                 max_retry_seconds: float = 1.0, head_timeout: float = 5.0, name: str = "client"):
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.headers = dict(headers or {})
        self.max_retry_seconds = max_retry_seconds
        self.head_timeout = head_timeout
        self.events: list[SSEEvent] = []
        self.notes: list[Any] = []
        self.last_event_id: str | None = None
        self.connects = 0
        self.connected_to: list[str] = []  # the URL of each successful connect
        self.connected_at: list[float] = []
        self.statuses: list[int] = []
        self.stream_ends: list[float] = []  # when a 200 stream was ended by the server
        self.comments = 0
        self.connection: SSEConnection | None = None
        self.url_index = 0
        self.opened = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def start(self) -> EventSourceClient:
        self._thread.start()
        return self

    def _run(self) -> None:
        retry_seconds = 0.2
        comments_before = 0
        while not self._stop.is_set():
            url = self.urls[self.url_index]
            headers = dict(self.headers)
            if self.last_event_id:
                headers["Last-Event-ID"] = self.last_event_id
            ok = False
            try:
                connection = SSEConnection(url, headers, timeout=self.head_timeout)
                self.connection = connection
                self.statuses.append(connection.status)
                if connection.status == 200:
                    ok = True
                    self.connects += 1
                    self.connected_to.append(url)
                    self.connected_at.append(time.monotonic())
                    self.opened.set()
                    while not self._stop.is_set() and not connection.closed:
                        for event in connection.events(0.2):
                            if event.id is not None:
                                self.last_event_id = event.id
                            self.events.append(event)
                            if event.event != "reset":
                                self.notes.append(event.json())
                        self.comments = comments_before + connection.parser.comments
                    if connection.closed and not self._stop.is_set():
                        self.stream_ends.append(time.monotonic())
                    comments_before = self.comments
                    if connection.parser.last_retry is not None:
                        retry_seconds = min(connection.parser.last_retry / 1000, self.max_retry_seconds)
                connection.close()
            except OSError:
                pass
            if not ok and len(self.urls) > 1:
                self.url_index = (self.url_index + 1) % len(self.urls)
            self._stop.wait(retry_seconds)

    def drop(self) -> None:
        """Simulate a network blip: close the socket under the client."""
        connection = self.connection
        if connection is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self.drop()
        self._thread.join(10)

    def notifications(self) -> list[Any]:
        return list(self.notes)

    def resets(self) -> list[Any]:
        return [event.json() for event in list(self.events) if event.event == "reset"]
