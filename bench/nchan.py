"""Nchan, the reference the benchmark measures notifier against: Debian's
``nginx`` with ``libnginx-mod-nchan`` (``apt-get install -y nginx
libnginx-mod-nchan``), run with a config of our own on a free loopback port,
started and stopped by PID like the other servers here.

The config mirrors what notifier is asked to do, as closely as Nchan allows:

- a subscriber opens ``GET /sub/<user>`` (EventSource) and is subscribed to
  its own channel and to ``broadcast`` (Nchan's channel multiplexing), as a
  notifier stream is to its user's channel and the broadcast one;
- a publisher sends one ``POST /pub/<channel>`` per event;
- a comment heartbeat every 15 s, as notifier's default;
- messages kept in Nchan's memory store (its default: no Redis), the last
  100 per channel for an hour, so a reconnecting client could resume.

What it does not do, and notifier does on every request: authenticate (no
token is checked: Nchan would have to ask an upstream, see
``nchan_authorize_request``), validate the event, write an access line and
count metrics. Nchan has no batch publish, so the ``batch`` scenario is
notifier's only.

The same number of worker processes as notifier's gunicorn workers, so both
get the same cores.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .server import children_of, free_port, stop_server, wait_until

MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")

CONFIG = """\
load_module {module};
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {connections}; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  nchan_shared_memory_size {shm};
  nchan_message_buffer_length 100;
  nchan_message_timeout 1h;
  nchan_subscriber_timeout 0;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location ~ ^/sub/([A-Za-z0-9_-]+)$ {{
      nchan_subscriber eventsource;
      nchan_subscriber_first_message newest;  # as a notifier stream opened without Last-Event-ID
      nchan_channel_id $1 broadcast;
      nchan_eventsource_ping_interval 15;  # Nchan pings with an event (event: ping), not a comment
    }}
    location ~ ^/pub/([A-Za-z0-9_-]+)$ {{
      nchan_publisher http;
      nchan_channel_id $1;
    }}
    location = /ready {{ return 200 "ok"; }}
  }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None or not MODULE.exists():
        raise SystemExit("Nchan needs Debian's nginx and libnginx-mod-nchan: apt-get install -y nginx libnginx-mod-nchan")
    return found


class Nchan:
    def __init__(self, workers: int, streams: int) -> None:
        self.binary = nginx_binary()
        self.port = free_port()
        self.workers = workers
        self.dir = tempfile.mkdtemp(prefix="notifier-bench-nchan-")
        self.connections = max(4096, streams // max(1, workers) + 4096)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nchan:
        config = Path(self.dir) / "nginx.conf"
        config.write_text(CONFIG.format(module=MODULE, workers=self.workers, nofile=self.connections * 2 + 1024,
                                        dir=self.dir, connections=self.connections, shm="256M", port=self.port))
        # Master in the foreground: its PID is ours to stop, its workers its children.
        self.process = subprocess.Popen([self.binary, "-c", str(config), "-p", self.dir, "-g", "daemon off;"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self._ready(probe=False) and len(self.worker_pids()) == self.workers, 10, "nginx workers")
        wait_until(self._ready, 10, f"nchan on port {self.port}")
        return self

    def _ready(self, probe: bool = True) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = Path(self.dir) / "error.log"
            raise SystemExit(f"nginx exited with {self.process.returncode}: "
                             f"{log.read_text()[-2000:] if log.exists() else ''}")
        if not probe:
            return True
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"GET /ready HTTP/1.0\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")

    def worker_pids(self) -> list[int]:
        return children_of(self.process.pid) if self.process is not None else []

    def pids(self) -> list[int]:
        return ([self.process.pid] if self.process is not None else []) + self.worker_pids()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_server(self.process, self.process.pid, self.worker_pids(), 10)  # SIGTERM: nginx's fast shutdown
        time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)
