"""Redis topologies on loopback for the tests and the benchmark: a Sentinel
set (one master, replicas, sentinels) and a Redis Cluster, each process
started and stopped by PID.

Sentinels are ``redis-server sentinel.conf --sentinel`` (no separate
redis-sentinel binary needed); the cluster is made by
``redis-cli --cluster create``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from .server import RedisServer, free_port, wait_until


def redis_command(port: int, *args: str, timeout: float = 2.0) -> str:
    """One command with redis-cli, its reply as text (for setup, not for speed)."""
    result = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout,
                            check=False)
    return result.stdout.strip()


class Node(RedisServer):
    """A redis-server with extra configuration lines, killable like the tests' server."""

    def __init__(self, extra: list[str] | None = None, port: int | None = None):
        super().__init__(port)
        self.extra = extra or []

    def start(self) -> Node:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", *self.PERSISTENCE,
                "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log"), *self.extra]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._ping, 10, f"redis-server on port {self.port}")
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.process.wait(10)

    def command(self, *args: str) -> str:
        return redis_command(self.port, *args)


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class Sentinel:
    """``redis-server sentinel.conf --sentinel`` watching one master."""

    def __init__(self, master_port: int, service: str, quorum: int, down_after_ms: int):
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on PATH (apt-get install -y redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="notifier-sentinel-")
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as handle:
            handle.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {os.path.join(self.dir, 'sentinel.log')}\n"
                f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}\n"
                f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
                f"sentinel failover-timeout {service} 10000\n"
                f"sentinel parallel-syncs {service} 1\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sentinel:
        self.process = subprocess.Popen([self.binary, self.conf, "--sentinel"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_until(self._ping, 10, f"sentinel on port {self.port}")
        return self

    def _ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSet:
    """One master, ``replicas`` replicas and ``sentinels`` sentinels (quorum 2)
    on loopback. ``url`` is the ``redis+sentinel://`` URL notifier takes."""

    def __init__(self, replicas: int = 1, sentinels: int = 3, service: str = "mymaster", down_after_ms: int = 1000):
        self.service = service
        self.down_after_ms = down_after_ms
        self.nodes: list[Node] = []
        self.sentinels: list[Sentinel] = []
        self.replica_count = replicas
        self.sentinel_count = sentinels

    def start(self) -> SentinelSet:
        try:
            master = Node().start()
            self.nodes.append(master)
            for _ in range(self.replica_count):
                self.nodes.append(Node(["--replicaof", "127.0.0.1", str(master.port)]).start())
            wait_until(lambda: self._replicas_online(master.port) >= self.replica_count, 20, "replicas in sync")
            for _ in range(self.sentinel_count):
                self.sentinels.append(Sentinel(master.port, self.service, 2, self.down_after_ms).start())
            wait_until(self._sentinels_agree, 30, "sentinels see each other and the replicas")
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _replicas_online(port: int) -> int:
        info = redis_command(port, "INFO", "replication")
        return sum(1 for line in info.splitlines() if line.startswith("slave") and "state=online" in line)

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            reply = redis_command(sentinel.port, "SENTINEL", "MASTER", self.service)
            fields = reply.splitlines()
            info = dict(zip(fields[0::2], fields[1::2]))
            if int(info.get("num-other-sentinels", 0)) < self.sentinel_count - 1:
                return False
            if int(info.get("num-slaves", 0)) < self.replica_count:
                return False
        return True

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def master_port(self) -> int:
        reply = redis_command(self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(reply.splitlines()[1])

    def master(self) -> Node:
        port = self.master_port()
        return next(node for node in self.nodes if node.port == port)

    def wait_for_new_master(self, old_port: int, timeout: float = 30) -> int:
        """Until every sentinel names a master other than ``old_port`` that says it is one."""
        def moved() -> int:
            ports = {int(redis_command(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service).splitlines()[1])
                     for s in self.sentinels if s.process is not None and s.process.poll() is None}
            if len(ports) != 1 or old_port in ports:
                return 0
            port = ports.pop()
            return port if redis_command(port, "ROLE").splitlines()[:1] == ["master"] else 0
        return int(wait_until(moved, timeout, "a new master"))

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.nodes if node.alive and node.process is not None]

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()


class Cluster:
    """A Redis Cluster of ``masters`` masters, each with ``replicas`` replicas,
    created by ``redis-cli --cluster create`` on loopback."""

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000):
        self.master_count = masters
        self.replica_count = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[Node] = []

    def _config(self) -> list[str]:
        return ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms), "--cluster-require-full-coverage", "no",
                # a replica of a killed master takes over at once, whatever its replication lag
                "--cluster-replica-validity-factor", "0"]

    def start(self) -> Cluster:
        try:
            for _ in range(self.master_count * (1 + self.replica_count)):
                self.nodes.append(Node(self._config(), cluster_port()).start())
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            if len(self.nodes) == 1:  # redis-cli --cluster create wants 3 masters: one shard by hand
                self.nodes[0].command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            else:
                subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas",
                                str(self.replica_count), "--cluster-yes"], capture_output=True, check=True,
                               timeout=60)
            wait_until(self._healthy, 30, "cluster state ok on every node")
        except BaseException:
            self.stop()
            raise
        return self

    def _healthy(self) -> bool:
        for node in self.nodes:
            if not node.alive:
                continue
            if "cluster_state:ok" not in node.command("CLUSTER", "INFO"):
                return False
        masters = [n for n in self.nodes if n.alive and n.command("ROLE").splitlines()[:1] == ["master"]]
        return len(masters) >= self.master_count

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:self.master_count])

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def masters(self) -> list[Node]:
        return [n for n in self.nodes if n.alive and n.command("ROLE").splitlines()[:1] == ["master"]]

    def owner_of(self, slot: int) -> Node:
        """The master serving ``slot``, from CLUSTER SHARDS-like data (CLUSTER SLOTS)."""
        for node in self.masters():
            for line in node.command("CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" not in fields[2]:
                    continue
                for part in fields[8:]:
                    if part.startswith("["):
                        continue
                    low, _, high = part.partition("-")
                    if int(low) <= slot <= int(high or low):
                        return node
        raise LookupError(f"no master serves slot {slot}")

    def node_id(self, node: Node) -> str:
        return node.command("CLUSTER", "MYID")

    def migrate_slot(self, slot: int, target: Node, keys_per_batch: int = 100, pause: float = 0.0) -> None:
        """Move ``slot`` and its keys to ``target`` the way redis-cli does:
        SETSLOT IMPORTING / MIGRATING, MIGRATE the keys, SETSLOT NODE everywhere.
        ``pause``: seconds between the last MIGRATE and SETSLOT NODE (a big slot
        takes a while; meanwhile ASK sends the slot's writes to the target)."""
        source = self.owner_of(slot)
        source_id, target_id = self.node_id(source), self.node_id(target)
        target.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        source.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        while True:
            keys = source.command("CLUSTER", "GETKEYSINSLOT", str(slot), str(keys_per_batch)).split()
            if not keys:
                break
            source.command("MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *keys)
        time.sleep(pause)
        for node in (target, source, *[n for n in self.masters() if n not in (source, target)]):
            node.command("CLUSTER", "SETSLOT", str(slot), "NODE", target_id)

    def replica_of(self, master: Node) -> Node:
        master_id = self.node_id(master)
        for line in master.command("CLUSTER", "REPLICAS", master_id).splitlines():
            port = int(line.split()[1].split("@")[0].rsplit(":", 1)[1])
            return self.node(port)
        raise LookupError("no replica")

    def wait_promoted(self, replica: Node, timeout: float = 30) -> None:
        def promoted() -> bool:
            return replica.command("ROLE").splitlines()[:1] == ["master"] and self._healthy_without_dead()
        wait_until(promoted, timeout, "the replica promoted")

    def _healthy_without_dead(self) -> bool:
        return all("cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.nodes if n.alive)

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.nodes if node.alive and node.process is not None]

    def master_pids(self) -> dict[int, int]:
        return {node.port: node.process.pid for node in self.masters() if node.process is not None}

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
