"""The benchmark's SSE reader (bench/wire.py): it decides what counts as a
delivery, so it must follow the wire format exactly, whatever the read sizes."""

from __future__ import annotations

import pytest

from bench.wire import ProtocolError, StreamDecoder

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%X\r\n%s\r\n" % (len(data), data)


BODY = (chunk(b"retry: 3000\n\n: connected\n\n")
        + chunk(b'id: 1-0\nevent: bench\ndata: {"a":1}\n\n' + b'id: 1-1\nevent: bench\ndata: {"a":2}\n\n')
        + chunk(b":\n\n")
        + chunk(b'event: x\r\nid: 2-0\r\ndata: one\r\ndata: two\r\n\r\n')
        + chunk(b"id: 3-0\rdata: cr\r\r")
        + chunk(b"data: no id\n\n")
        + b"0\r\n\r\n")


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_ids_comments_and_end_whatever_the_read_size(size: int) -> None:
    decoder = StreamDecoder()
    wire = HEAD + BODY
    ids: list[bytes] = []
    for start in range(0, len(wire), size):
        ids.extend(decoder.feed(wire[start:start + size]))
    assert decoder.status == 200 and decoder.chunked
    assert ids == [b"1-0", b"1-1", b"2-0", b"3-0"]
    assert decoder.comments == 2  # ": connected" and the heartbeat
    assert decoder.retry == 3000
    assert decoder.ended


def test_raw_body_and_error_status() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"HTTP/1.0 200 OK\r\n\r\nid: 9-9\ndata: x\n\n") == [b"9-9"]
    refused = StreamDecoder()
    refused.feed(b'HTTP/1.1 401 UNAUTHORIZED\r\nContent-Length: 2\r\n\r\n{}')
    assert refused.status == 401


def test_garbage_is_refused() -> None:
    with pytest.raises(ProtocolError):
        StreamDecoder().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
