"""Real processes for the tests: a throwaway redis-server, gunicorn with
gevent workers and Prometheus, each on a free loopback port, stopped by PID.

redis-server or prometheus missing is a loud failure, never a skip: CI
installs them (scripts/ensure-system-deps).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

# The process helpers the benchmark needs too live in bench/server.py (which
# imports nothing from the tests); re-exported here for the tests.
from bench.server import RedisServer as BenchRedisServer
from bench.server import children_of, free_port, rss_kib
from bench.server import wait_until as _wait_until

__all__ = ["ROOT", "Gunicorn", "Prometheus", "RedisServer", "children_of", "free_port", "rss_kib", "run_bench",
           "wait_until"]

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Any, timeout: float, interval: float = 0.05, message: str = "condition") -> Any:
    """bench.server.wait_until, failing the test (AssertionError) when time runs out."""
    try:
        return _wait_until(predicate, timeout, message, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


class RedisServer(BenchRedisServer):
    """bench.server.RedisServer plus the faults the tests inflict (kill, pause, restart)."""

    def __init__(self, port: int | None = None):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not on PATH: install it (apt-get install -y redis-server); these tests never skip")
        super().__init__(port)

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, **kwargs)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.process.wait(10)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def redis_and_gunicorn(settings: dict[str, str] | None = None, workers: int = 2) -> Iterator[tuple[Gunicorn, RedisServer]]:
    """A throwaway redis-server and a gunicorn serving notifier on it (test
    secret, plus ``settings``), both stopped by PID at the end."""
    from .tokens import SECRET

    redis_server = RedisServer().start()
    server = Gunicorn({"NOTIFIER_REDIS_URL": redis_server.url, "NOTIFIER_JWT_SECRET": SECRET, **(settings or {})},
                      workers=workers)
    try:
        server.start()
        yield server, redis_server
    finally:
        server.stop()
        redis_server.stop()


class Gunicorn:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` with gevent workers."""

    def __init__(self, env: dict[str, str], workers: int = 2, port: int | None = None, app: str = "wsgi:app",
                 config: Path | None = None, ready_path: str = "/readyz"):
        self.app = app
        self.ready_path = ready_path
        self.config = config or ROOT / "gunicorn.conf.py"
        self.port = port or free_port()
        self.workers = workers
        self.log_path = Path(tempfile.mkdtemp(prefix="notifier-gunicorn-")) / "gunicorn.log"
        self.env = dict(os.environ)
        # Never inherit the developer's settings: every test says what it runs with.
        for name in list(self.env):
            if name.startswith("NOTIFIER_") or name == "PROMETHEUS_MULTIPROC_DIR":
                del self.env[name]
        self.env.update({
            "NOTIFIER_BIND": f"127.0.0.1:{self.port}",
            "NOTIFIER_WORKERS": str(workers),
            "NOTIFIER_LOG_LEVEL": "INFO",
        })
        self.env.update(env)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> Gunicorn:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(self.config), "--chdir", str(ROOT), self.app],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT),
        )
        wait_until(lambda: len(self.worker_pids()) == self.workers, 20, message="gunicorn workers")
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        import requests

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            # Ask enough times that every worker has answered.
            return all(requests.get(self.url + self.ready_path, timeout=1).status_code == 200 for _ in range(self.workers * 4))

        wait_until(ready, timeout, interval=0.1, message="gunicorn /readyz")

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        return children_of(self.process.pid)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                for pid in self.worker_pids():
                    os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait(10)
        if getattr(self, "_log", None):
            self._log.close()


class Prometheus:
    """Debian's ``prometheus`` with its own config and data dir in a temp dir,
    listening on loopback only. ``config`` is the prometheus.yml to run with."""

    def __init__(self, config: str, port: int | None = None):
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not on PATH: install it (apt-get install -y prometheus); these tests never skip")
        self.binary = binary
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="notifier-prometheus-"))
        (self.dir / "prometheus.yml").write_text(config)
        self.log_path = self.dir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> Prometheus:
        import requests

        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=str(self.dir),
        )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
            return requests.get(self.url + "/-/ready", timeout=1).status_code == 200

        try:
            wait_until(ready, timeout, interval=0.1, message="prometheus /-/ready")
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_bench(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m <args>`` from the checkout, for a command that starts
    servers of its own (the benchmark's tools). It runs in a session of its
    own: on a timeout its whole process group, all started here, is stopped
    by that group's id, not only the command."""
    process = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
                out, err = process.communicate(timeout=grace)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        raise AssertionError(f"python -m {' '.join(args)} timed out after {timeout} s") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)
