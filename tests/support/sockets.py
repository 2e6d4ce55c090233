"""Which of our processes holds a given loopback TCP connection, read from
/proc (the tests count pub/sub connections per worker this way)."""

from __future__ import annotations

import os
from pathlib import Path

ESTABLISHED = "01"


def _socket_inodes(pid: int) -> dict[str, int]:
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            found[target[8:-1]] = pid
    return found


def connection_owners(pids: list[int]) -> dict[tuple[int, int], int]:
    """{(local port, remote port): pid} for the established IPv4 TCP
    connections held by ``pids``. Keyed by both ports and read by inode: one
    ephemeral port can appear at once in a live connection and in another's
    TIME_WAIT line (inode 0), which must not hide the live one."""
    inodes: dict[str, int] = {}
    for pid in pids:
        inodes.update(_socket_inodes(pid))
    owners = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state == ESTABLISHED and inode in inodes:
            owners[(int(local.split(":")[1], 16), int(remote.split(":")[1], 16))] = inodes[inode]
    return owners
