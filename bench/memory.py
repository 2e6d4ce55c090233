"""Where an idle stream's memory goes: ``python -m bench.memory [-n 2000]``.

Starts a throwaway redis-server and gunicorn with one gevent worker (the
production ``gunicorn.conf.py``, plus ``bench/memory_hooks.py``, which turns
on ``tracemalloc`` in the worker and takes snapshots when asked), takes a
snapshot, opens N authenticated streams (each its own user) from this
process, takes another, and prints the difference per stream: by package,
then by allocation site. Then the same with tracemalloc off, for the RSS
per stream (tracemalloc's own bookkeeping inflates RSS while it runs).

What tracemalloc cannot see, the RSS line shows as the rest: the page of
Python frames CPython maps for each greenlet (at least 4 KiB) and malloc's
overhead. A greenlet's saved C stack is seen: greenlet copies it to the heap,
and it shows at the line where the stream waits. bench/README.md reads one.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from .agents import make_token
from .server import ROOT, Gunicorn, RedisServer, rss_kib, wait_until

PACKAGES = ("notifier", "gunicorn", "gevent", "greenlet", "flask", "werkzeug", "flask_jwt_extended", "jwt", "redis",
            "prometheus_client")


def open_streams(port: int, secret: str, n: int, prefix: str, opened: list[socket.socket]) -> None:
    """N streams into ``opened`` (the caller closes them, also after a
    failure), each read up to its first chunk; in batches, so the kernel's
    backlog is never the limit."""
    for start in range(0, n, 200):
        for i in range(start, min(n, start + 200)):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            opened.append(sock)
            sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer "
                         f"{make_token(secret, f'{prefix}{i}')}\r\nAccept: text/event-stream\r\n\r\n".encode())
        for sock in opened[start:]:
            head = sock.recv(4096)
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                raise SystemExit(f"a stream was refused: {head[:300]!r}")


class Worker:
    """One gunicorn worker of notifier that takes tracemalloc snapshots on request."""

    def __init__(self, traced: bool, workdir: Path):
        self.secret = secrets.token_urlsafe(48)
        self.dir = workdir
        self.traced = traced
        self.redis = RedisServer()
        self.server: Gunicorn | None = None
        self.pid = 0
        self.taken = 0

    def start(self) -> None:
        """Each process is kept before it starts: ``stop`` stops whatever a failed start left running."""
        self.redis.start()
        env = {"NOTIFIER_ENV": "production", "NOTIFIER_REDIS_URL": self.redis.url, "NOTIFIER_JWT_SECRET": self.secret,
               "NOTIFIER_BENCH_SNAPSHOTS": str(self.dir), "NOTIFIER_BENCH_TRACE": "1" if self.traced else "0"}
        self.server = Gunicorn(env, 1, self.dir / "gunicorn.log", config=ROOT / "bench" / "memory_hooks.py")
        self.server.start()
        self.pid = self.server.worker_pids()[0]

    def snapshot(self) -> Path:
        """Ask the worker for a snapshot (after a full collection); its path."""
        request = self.dir / f"snapshot-{self.taken}.request"
        done = self.dir / f"snapshot-{self.taken}.tracemalloc"
        request.write_text("")
        wait_until(done.exists, 120, "the worker's snapshot")
        self.taken += 1
        return done

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.redis.stop()


def package_of(filename: str) -> str:
    parts = Path(filename).parts
    for name in PACKAGES:
        if name in parts:
            return name
    return Path(filename).name


def site_of(filename: str, lineno: int) -> str:
    parts = Path(filename).parts
    for name in PACKAGES:
        if name in parts:
            return "/".join(parts[parts.index(name):]) + f":{lineno}"
    return f"{Path(filename).name}:{lineno}"


def report(before: Path, after: Path, n: int, top: int) -> str:
    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    stats = new.compare_to(old, "lineno")
    total = sum(s.size_diff for s in stats)
    by_package: Counter[str] = Counter()
    for stat in stats:
        by_package[package_of(stat.traceback[0].filename)] += stat.size_diff
    lines = [f"traced per stream: {total / n:,.0f} B", "", "by package (where the block was allocated):"]
    lines += [f"  {size / n:7,.0f} B  {name}" for name, size in by_package.most_common() if abs(size) >= n * 8]
    lines += ["", f"by allocation site (top {top}; blocks per stream):"]
    for stat in sorted(stats, key=lambda s: -s.size_diff)[:top]:
        frame = stat.traceback[0]
        lines.append(f"  {stat.size_diff / n:7,.0f} B  {stat.count_diff / n:5.2f}  {site_of(frame.filename, frame.lineno)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--streams", type=int, default=2000, help="idle streams to open (default 2000)")
    p.add_argument("--top", type=int, default=40, help="allocation sites to list (default 40)")
    p.add_argument("--out", help="also write the report to this file")
    args = p.parse_args(argv)
    results = []
    for traced in (True, False):
        with tempfile.TemporaryDirectory(prefix="notifier-bench-memory-") as workdir:
            worker = Worker(traced, Path(workdir))
            streams: list[socket.socket] = []
            try:
                worker.start()
                assert worker.server is not None
                time.sleep(1)  # startup's stragglers
                before = worker.snapshot()
                rss_before = rss_kib(worker.pid)
                open_streams(worker.server.port, worker.secret, args.streams, "memory-user", streams)
                time.sleep(2)
                after = worker.snapshot()
                rss_per_stream = (rss_kib(worker.pid) - rss_before) / args.streams
                if traced:
                    results.append(report(before, after, args.streams, args.top))
                else:
                    results.append(f"RSS per stream, tracemalloc off: {rss_per_stream:.2f} KiB (one worker, "
                                   f"{args.streams:,} streams)")
            finally:
                for sock in streams:
                    sock.close()
                worker.stop()
    text = f"# python -m bench.memory -n {args.streams}\n\n" + "\n\n".join(reversed(results)) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
