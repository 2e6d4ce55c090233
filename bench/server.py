"""The server under test: a throwaway redis-server and gunicorn, each on a free
loopback port, started and stopped by PID (never by name). Also what /proc
says about them: CPU time and resident memory.

The tests use the same process helpers (tests/support/processes.py imports
them from here); the benchmark never imports the test package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last!r})" if last else ""))


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "mem_gib": round(mem_kib / 1048576, 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()], "python": sys.version.split()[0]}


class RedisServer:
    # No persistence: a throwaway server. (A subclass may keep an append-only file.)
    PERSISTENCE: tuple[str, ...] = ("--save", "", "--appendonly", "no")

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on PATH (apt-get install -y redis-server), or give --url")
        self.binary = binary
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="notifier-bench-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", *self.PERSISTENCE,
                "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._ping, 10, f"redis-server on port {self.port}")
        return self

    def _ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Gunicorn:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` with gevent workers, as in production."""

    def __init__(self, env: dict[str, str], workers: int, log_path: Path, root: Path = ROOT,
                 wrapper: list[str] | None = None, app: str = "wsgi:app", config: Path | None = None):
        self.wrapper = wrapper or []  # e.g. a profiler that starts gunicorn as its child
        self.app = app  # another WSGI app under the same config: bench/floor.py
        self.config = config or root / "gunicorn.conf.py"  # or one that adds to it: bench/memory_hooks.py
        self.port = free_port()
        self.workers = workers
        self.root = root
        self.log_path = log_path
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("NOTIFIER_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        self.env.update({"NOTIFIER_BIND": f"127.0.0.1:{self.port}", "NOTIFIER_WORKERS": str(workers)})
        self.env.update(env)
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gunicorn:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "gunicorn", "-c", str(self.config), "--chdir", str(self.root),
             self.app],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(self.root),
        )
        wait_until(lambda: len(self.worker_pids()) == self.workers, 30, "gunicorn workers")
        wait_until(self._ready, 30, "gunicorn /readyz", interval=0.1)
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
        for _ in range(self.workers * 4):  # enough that every worker answered
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                if response.status != 200:
                    return False
        return True

    @property
    def master_pid(self) -> int | None:
        if self.process is None:
            return None
        if not self.wrapper:
            return self.process.pid
        children = children_of(self.process.pid)
        return children[0] if children else None

    def worker_pids(self) -> list[int]:
        master = self.master_pid
        return children_of(master) if master is not None else []

    def pids(self) -> list[int]:
        master = self.master_pid
        return ([master] if master is not None else []) + self.worker_pids()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            master = self.master_pid
            # The master, not a wrapper: a profiler ends (and writes) when its child does.
            stop_server(self.process, master, [*self.worker_pids(), *([master] if master and self.wrapper else [])], 40)
        if self._log is not None:
            self._log.close()


def stop_server(process: subprocess.Popen[bytes], master: int | None, children: list[int], grace: float) -> None:
    """SIGTERM to ``master`` (a server's master process, ours), then wait up
    to ``grace`` s for ``process`` to end; past that, SIGKILL ``children``
    (PIDs read before, so still ours) and ``process``."""
    if master is not None:
        try:
            os.kill(master, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.kill()
        process.wait(10)


class Probe:
    """CPU seconds and RSS of a fixed set of server processes, read from /proc."""

    def __init__(self, web: list[int] | None = None, redis: list[int] | None = None):
        self.web = web or []
        self.redis = redis or []

    def cpu(self) -> dict[str, float]:
        return {"web": sum(cpu_seconds(p) for p in self.web), "redis": sum(cpu_seconds(p) for p in self.redis)}

    def cpu_each(self) -> list[float]:
        return [cpu_seconds(p) for p in self.web]

    def rss_kib(self) -> int:
        return sum(rss_kib(p) for p in self.web)

    def per_process_rss_kib(self) -> list[int]:
        return [rss_kib(p) for p in self.web]
