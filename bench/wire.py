"""A minimal, correct and cheap reader for one SSE response: the HTTP/1.1
status line and headers, ``Transfer-Encoding: chunked`` (what gunicorn sends)
or a raw body, then SSE blocks.

Pure (no I/O) so it can be tested on its own. The benchmark needs only each
event's ``id`` (the coordinator knows when each id was published), so it does
not decode ``data:``; it follows the SSE line rules (CRLF, LF or CR end a
line, a blank line ends a block, ``:`` starts a comment) and counts comments
(heartbeats) and events.
"""

from __future__ import annotations


class ProtocolError(Exception):
    pass


class StreamDecoder:
    __slots__ = ("_body", "_chunk_left", "_head", "_sse", "chunked", "comments", "ended", "headers", "retry", "status")

    def __init__(self) -> None:
        self._head = b""           # until the headers are complete
        self._body: bytes | None = None  # raw bytes not yet de-chunked
        self._chunk_left = 0       # bytes left in the current chunk, its trailing CRLF included
        self._sse = b""            # SSE text of an unfinished block
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunked = False
        self.ended = False         # the last chunk (size 0) was seen
        self.comments = 0          # comment-only blocks: the opening one and heartbeats
        self.retry = 0

    @property
    def headers_done(self) -> bool:
        return self._body is not None

    def feed(self, data: bytes) -> list[bytes]:
        """Bytes from the socket -> the ids of the events completed by them."""
        if self._body is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > 65536:
                    raise ProtocolError("response headers too long")
                return []
            self._parse_head(self._head[:end])
            data = self._head[end + 4:]
            self._head = b""
            self._body = b""
        if self.chunked:
            data = self._dechunk(data)
        if not data:
            return []
        return self._blocks(data)

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ProtocolError(f"bad status line {lines[0]!r}")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()

    def _dechunk(self, data: bytes) -> bytes:
        if self.ended:  # the last chunk's CRLF and any trailers
            return b""
        buf = self._body + data if self._body else data
        pos, size_total, out = 0, len(buf), []
        while pos < size_total:
            if self._chunk_left == 0:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.ended = True
                    pos = size_total
                    break
                self._chunk_left = size + 2
            take = min(self._chunk_left, size_total - pos)
            payload = min(max(self._chunk_left - 2, 0), take)
            if payload:
                out.append(buf[pos:pos + payload])
            pos += take
            self._chunk_left -= take
        self._body = buf[pos:]
        return out[0] if len(out) == 1 else b"".join(out)

    def _complete_blocks(self, data: bytes) -> list[bytes]:
        """The blocks ``data`` completes (blank-line runs dropped, LF line ends)."""
        text = self._sse + data if self._sse else data
        if b"\r" in text:
            # CRLF and CR end lines too; a CR at the very end may be half of a CRLF.
            if text.endswith(b"\r"):
                self._sse = text
                return []
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        last = text.rfind(b"\n\n")
        if last < 0:
            self._sse = text
            return []
        self._sse = text[last + 2:]
        # runs of blank lines are one separator
        return [block for block in (b.lstrip(b"\n") for b in text[:last].split(b"\n\n")) if block]

    def _blocks(self, data: bytes) -> list[bytes]:
        ids: list[bytes] = []
        for block in self._complete_blocks(data):
            if block.startswith(b"id: "):  # notifier's frames: the id line first
                nl = block.find(b"\n")
                ids.append(block[4:nl] if nl >= 0 else block[4:])
                continue
            event_id = None
            has_data = False
            for line in block.split(b"\n"):
                if line.startswith(b":"):
                    continue
                name, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if name == b"id":
                    event_id = value
                elif name == b"data":
                    has_data = True
                elif name == b"retry" and value.isdigit():
                    self.retry = int(value)
            if event_id is not None and has_data:
                ids.append(event_id)
            elif not has_data and event_id is None and block.startswith(b":"):
                self.comments += 1
        return ids


def nchan_marked(raw: bytes) -> tuple[int, int, int]:
    """An Nchan event id as (channel position, time, tag), to check order.

    A subscriber to several channels sees ids like ``1796212370:[0],-``: the
    message's time, then one tag per channel, the bracketed one the channel
    the message came from (``-``: nothing yet); with one time per channel,
    ``T1,T2:...``. One channel's (time, tag) only grow. A plain ``T:N`` is
    one channel's.
    """
    times, _, tags = raw.partition(b":")
    tag_list = tags.split(b",")
    if len(tag_list) == 1 and b"[" not in tags:
        return 0, int(times), int(tags)
    time_list = times.split(b",")
    for position, tag in enumerate(tag_list):
        if tag.startswith(b"[") and tag.endswith(b"]"):
            stamp = time_list[position] if len(time_list) > 1 else time_list[0]
            return position, int(stamp), int(tag[1:-1])
    raise ProtocolError(f"no channel marked in Nchan id {raw!r}")


class NchanDecoder(StreamDecoder):
    """Nchan's events carry ids of its own, which the publisher is not told
    reliably (its reply names the channel's last message, which a concurrent
    publish may already have replaced). So the bench's publisher puts its own
    key first in the data, ``{"k":"<key>",...``; this returns those keys, and
    checks Nchan's ids for order itself, per channel (``out_of_order``)."""

    __slots__ = ("_last", "out_of_order")

    KEY = b'data: {"k":"'

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[int, tuple[int, int]] = {}
        self.out_of_order = 0

    def _blocks(self, data: bytes) -> list[bytes]:
        keys: list[bytes] = []
        for block in self._complete_blocks(data):
            start = block.find(self.KEY)
            if start < 0:  # a comment, or Nchan's keep-alive ping event (``event: ping``, no id, no data)
                if block.startswith(b":") or not block.startswith(b"id:"):
                    self.comments += 1
                    continue
                raise ProtocolError(f"unexpected Nchan event {block[:80]!r}")
            if not block.startswith(b"id: "):
                raise ProtocolError(f"unexpected Nchan event {block[:80]!r}")
            position, stamp, tag = nchan_marked(block[4:block.find(b"\n")])
            if (stamp, tag) < self._last.get(position, (0, -1)):
                self.out_of_order += 1
            self._last[position] = (stamp, tag)
            start += len(self.KEY)
            keys.append(block[start:block.find(b'"', start)])
        return keys
