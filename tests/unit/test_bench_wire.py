"""The benchmark's SSE reader (bench/wire.py): it decides what counts as a
delivery, so it must follow the wire format exactly, whatever the read sizes."""

from __future__ import annotations

import pytest

from bench.wire import NchanDecoder, ProtocolError, StreamDecoder, nchan_marked

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



@pytest.mark.parametrize(("seen", "marked"), [
    (b"1796212370:[0],-", (0, 1796212370, 0)),   # the user's channel, nothing on broadcast yet
    (b"1796212372:0,[14]", (1, 1796212372, 14)),  # from broadcast
    (b"1796212371,1796212370:-,[3]", (1, 1796212370, 3)),  # one time per channel
    (b"1796212286:7", (0, 1796212286, 7)),        # one channel
])
def test_nchan_ids_name_their_channel_time_and_tag(seen: bytes, marked: tuple[int, int, int]) -> None:
    assert nchan_marked(seen) == marked


def test_an_nchan_id_with_no_channel_marked_is_refused() -> None:
    with pytest.raises(ProtocolError):
        nchan_marked(b"1796212370:0,0")


def test_nchan_events_give_the_publisher_s_keys_and_their_order_is_checked_per_channel() -> None:
    decoder = NchanDecoder()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    body = (b": hi\n\n"
            b'id: 5:[0],-\ndata: {"k":"7-0","user_id":"u"}\n\n'
            b'id: 5:0,[0]\ndata: {"k":"8-0","broadcast":true}\n\n'
            b'id: 6:[0],0\ndata: {"k":"9-0"}\n\n'
            b'id: 5:[1],0\ndata: {"k":"10-0"}\n\n'  # older than 6:0 on the same channel
            b": \n\n"
            b"event: ping\ndata: \n\n")  # Nchan's keep-alive
    keys = [key for i in range(0, len(head + body), 7) for key in decoder.feed((head + body)[i:i + 7])]
    assert keys == [b"7-0", b"8-0", b"9-0", b"10-0"]
    assert decoder.out_of_order == 1
    assert decoder.comments == 3
