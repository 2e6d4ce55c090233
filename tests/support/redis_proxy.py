"""A TCP proxy in front of redis-server, for failures a real Redis will not
produce on demand (silent connection deaths, replies cut in two)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


class RedisProxy:
    """A TCP proxy in front of redis-server that can make a pub/sub connection
    die *silently*: the failure that a closed socket never reports (a NAT or
    load balancer dropping the flow, a half-open TCP connection)."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.pairs: list[dict[str, Any]] = []
        self.sockets: list[socket.socket] = [self.listener]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="redis-proxy").start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            pair = {"down": down, "up": up, "pubsub": False, "severed": False, "silenced": False, "split": 0.0}
            with self.lock:
                self.pairs.append(pair)
                self.sockets += [down, up]
            threading.Thread(target=self._pump, args=(down, up, pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, pair, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, pair: dict[str, Any], upward: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if upward and b"SUBSCRIBE" in data.upper():
                pair["pubsub"] = True
            if pair["silenced"] and not upward:
                continue  # Redis talks, the client never hears it
            try:
                if pair["split"] and not upward and len(data) > 1:
                    # The reader sees the first half of a reply, then nothing for a while.
                    half = len(data) // 2
                    target.sendall(data[:half])
                    time.sleep(pair["split"])
                    data = data[half:]
                target.sendall(data)
            except OSError:
                break
        if not pair["severed"]:
            for sock in (pair["down"], pair["up"]):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def pubsub_pairs(self) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.pairs if p["pubsub"] and not p["severed"] and not p["silenced"]]

    def sever_pubsub(self) -> int:
        """Redis side closed (Redis unsubscribes them), client side left open and silent."""
        pairs = self.pubsub_pairs()
        for pair in pairs:
            pair["severed"] = True
            try:
                pair["up"].shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(pairs)

    def silence_pubsub(self) -> int:
        """Both sides open, but nothing Redis sends reaches the client."""
        pairs = self.pubsub_pairs()
        for pair in pairs:
            pair["silenced"] = True
        return len(pairs)

    def split_pubsub(self, delay: float) -> int:
        """Everything Redis sends to the subscribers arrives in two halves,
        ``delay`` seconds apart: a reader finds half a message and must wait."""
        pairs = self.pubsub_pairs()
        for pair in pairs:
            pair["split"] = delay
        return len(pairs)

    def close(self) -> None:
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.close()
                except OSError:
                    pass
