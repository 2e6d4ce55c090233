"""Compare result files of ``bench.run`` as a Markdown table:
``python -m bench.compare before.jsonl after.jsonl`` (the last result of each
scenario in each file)."""

from __future__ import annotations

import json
import sys
from typing import Any

from .run import lookup

ROWS: list[tuple[str, str, str]] = [
    ("connect", "ramp_s", "time to connect all streams (s)"),
    ("connect", "connect_ms.p99_ms", "connect time p99 (ms)"),
    ("connect", "rss_per_stream_kib", "server RSS per idle stream (KiB)"),
    ("connect", "with_heartbeat", "streams that got a heartbeat while idle"),
    ("broadcast", "time_to_all.p50_ms", "broadcast time-to-all p50 (ms)"),
    ("broadcast", "time_to_all.p99_ms", "broadcast time-to-all p99 (ms)"),
    ("broadcast", "lost", "broadcast lost"),
    ("broadcast", "cpu.server_us_per_delivery", "broadcast server CPU per delivery (us)"),
    ("fanout", "deliveries_per_s", "fan-out deliveries/s (1,000 streams, back to back)"),
    ("fanout", "lost", "fan-out lost"),
    ("fanout", "cpu.server_us_per_delivery", "fan-out server CPU per delivery (us)"),
    ("fanout", "cpu.client_us_per_delivery", "fan-out client CPU per delivery (us)"),
    ("unicast", "deliveries_per_s", "unicast deliveries/s (one publish per event)"),
    ("unicast", "latency.p50_ms", "unicast latency p50 (ms)"),
    ("unicast", "latency.p99_ms", "unicast latency p99 (ms)"),
    ("unicast", "lost", "unicast lost"),
    ("unicast", "cpu.server_us_per_delivery", "unicast server CPU per delivery (us)"),
    ("unicast_batch", "deliveries_per_s", "batch-publish deliveries/s"),
    ("unicast_batch", "latency.p99_ms", "batch-publish latency p99 (ms)"),
    ("unicast_batch", "lost", "batch-publish lost"),
    ("unicast_batch", "cpu.server_us_per_delivery", "batch server CPU per delivery (us)"),
    ("publish_with_subscribers", "requests_per_s", "publish requests/s, with subscribers"),
    ("publish", "requests_per_s", "publish requests/s, no subscribers"),
    ("publish", "cpu.server_us_per_request", "publish server CPU per request (us)"),
]


def load(path: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    with open(path) as handle:
        for line in handle:
            if line.strip():
                result = json.loads(line)
                found[result.get("scenario", "")] = result
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    runs = [load(path) for path in argv]
    print("| metric | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " |")
    print("|---|" + "---:|" * len(runs))
    for scenario, path, label in ROWS:
        values = [lookup(run.get(scenario, {}), path) for run in runs]
        if all(v is None for v in values):
            continue
        print(f"| {label} | " + " | ".join("" if v is None else f"{v:,}" if isinstance(v, int) else str(v)
                                          for v in values) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
