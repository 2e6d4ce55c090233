"""CPU and memory of each gunicorn worker, for ``notifier_worker_cpu_seconds_total``,
``notifier_worker_resident_memory_bytes`` and ``notifier_memory_limit_bytes``.

prometheus_client's own process collector does not work in multiprocess mode
(a scrape would report the one worker answering it), so each worker samples
itself from a small greenlet: its CPU time goes into a counter (counters of
dead workers stay in the sum, so the pod's total never goes back) and its
resident memory into a live gauge (summed over the live workers). The limit
is what the pod may use: the cgroup's memory limit when there is one, else
the machine's memory. Linux only (``/proc``, ``/sys/fs/cgroup``); elsewhere
the memory gauges stay at 0.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from .periodic import Every

log = logging.getLogger("notifier.metrics")

CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # v2, v1


def resident_bytes() -> int:
    """This process's resident set size, 0 where ``/proc`` is missing."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def memory_limit_bytes(paths: tuple[str, ...] = CGROUP_MEMORY_LIMITS) -> int:
    """The cgroup memory limit, capped at the machine's memory (cgroup v1
    shows "no limit" as a huge number, v2 as ``max``)."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        physical = 0
    for path in paths:
        try:
            with open(path) as limit_file:
                text = limit_file.read().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(int(text), physical) if physical else int(text)
    return physical


class ResourceSampler:
    """Writes this worker's CPU time and resident memory every ``interval`` seconds."""

    def __init__(self, metrics: Any, interval: float = 5.0):
        self.metrics = metrics
        self.interval = interval
        self._cpu = 0.0  # a forked worker's CPU time starts at 0: the first sample counts all of it
        self._chore = Every(interval, self.sample, "sample the worker's CPU and memory")

    def sample(self) -> None:
        cpu = time.process_time()
        if cpu > self._cpu:
            self.metrics.worker_cpu.inc(cpu - self._cpu)
            self._cpu = cpu
        self.metrics.worker_memory.set(resident_bytes())

    def start(self) -> None:
        if not self._chore.running:
            self.metrics.memory_limit.set(memory_limit_bytes())
            self.sample()
            self._chore.start()

    def stop(self) -> None:
        self._chore.stop()
