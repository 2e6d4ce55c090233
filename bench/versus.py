"""notifier against Nchan, side by side: ``python -m bench.versus``.

Runs ``bench.run`` against each server in turn, ``--runs`` times, the order
alternating (after, before, Nchan, then Nchan, before, after, ...), so a
machine that drifts does not favour one; then prints one Markdown table: each
figure per run and server, the ratio of notifier (this checkout) to Nchan
(means of the runs) and the goal of issue 14.

    python -m bench.versus                                   # this checkout and Nchan, 2 runs each
    python -m bench.versus --before /tmp/before              # and an older tree (git archive ... | tar -x)
    python -m bench.versus --floor                           # and the floor: a bare app on the same stack
    python -m bench.versus --table bench/results/versus-...  # the table again, from a finished run

Every server gets the same client, the same worker count and the same
scenarios (``SCENARIO_ARGS``; scenarios Nchan has no equivalent for run on
notifier only). ``--floor`` adds bench/floor.py, a WSGI app that relays each
publish to its user's stream through Redis and does nothing else, served by
notifier's gunicorn config: its column shows how much of a gap to Nchan the
stack alone (gunicorn, gevent, the Redis hop) accounts for.
Results go to ``bench/results/versus-<time>/<label>-<run>/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .run import FLOOR_SCENARIOS, RESULTS, lookup

# The scenarios: 10,000 idle streams; 200 broadcasts back to back to
# 1,000 streams; the highest unicast rate held with one HTTP publish per event
# on 16 connections (then 80% of it); unicast at 1,000/s for CPU per delivery;
# the Python Publisher (notifier only).
SCENARIO_ARGS = [
    ["connect", "-n", "10000", "--hold", "20"],
    ["fanout", "--fanout-streams", "1000", "--fanout-events", "200"],
    ["unicast", "-n", "10000", "-r", "1000", "-t", "10"],
    ["unicast_max", "-n", "10000"],
    ["direct", "-n", "10000"],
    ["publish", "-n", "1000", "-t", "10"],
]

Row = tuple[str, str, str, str, Callable[[float], bool] | None]
# (label, scenario, path, goal text, goal check on the ratio notifier / Nchan)
ROWS: list[Row] = [
    ("server RSS per idle stream (KiB, 10,000 streams)", "connect", "rss_per_stream_kib", "<= 1.25x",
     lambda r: r <= 1.25),
    ("10,000 streams connected (s)", "connect", "ramp_s", "<= 2x", lambda r: r <= 2),
    ("server CPU per connect (us)", "connect", "server_us_per_connect", "", None),
    ("broadcast, 200 back to back to 1,000 streams (deliveries/s)", "fanout", "deliveries_per_s", ">= 1x",
     lambda r: r >= 1),
    ("... server CPU per delivery (us)", "fanout", "cpu.server_us_per_delivery", "", None),
    ("... client CPU (cores)", "fanout", "cpu.client_cores", "", None),
    ("unicast, highest rate held (deliveries/s, p99 < 100 ms, no loss)", "unicast_max", "held_per_s", ">= 0.33x",
     lambda r: r >= 0.33),
    ("... p99 latency at that rate (ms)", "unicast_max", "at_held.latency_p99_ms", "", None),
    ("... publish request p50 at 80% of it (ms)", "unicast_max", "at_80_percent.http_p50_ms", "< 2 ms (notifier)",
     None),
    ("server CPU per unicast delivery at 1,000/s (us)", "unicast", "cpu.server_us_per_delivery", "<= 4x",
     lambda r: r <= 4),
    ("... latency p50 / p99 (ms)", "unicast", "latency", "", None),
    ("Python Publisher, highest rate held (deliveries/s)", "direct", "held_per_s", "> Nchan's HTTP unicast", None),
    ("... server CPU per delivery there (us)", "direct", "at_held.server_us_per_delivery", "", None),
    ("HTTP publish to a user with no stream, 16 connections (requests/s)", "publish", "requests_per_s", "", None),
    ("... server CPU per request (us)", "publish", "cpu.server_us_per_request", "", None),
    ("... request p50 / p99 (ms)", "publish", "http_ms", "", None),
]
LOSS_FIELDS = ("lost", "duplicates", "misrouted", "out_of_order", "unexpected")


def run_one(label: str, extra: list[str], out: Path, workers: int, passthrough: list[str]) -> None:
    for scenario_args in SCENARIO_ARGS:
        if label == "nchan" and scenario_args[0] == "direct":
            continue
        if label == "floor" and scenario_args[0] not in FLOOR_SCENARIOS:
            continue
        command = [sys.executable, "-m", "bench.run", *scenario_args, "--workers", str(workers), "--out", str(out),
                   *extra, *passthrough]
        print(f"# {label}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL)


def load(directory: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("bench-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                result = json.loads(line)
                found[result.get("scenario", "")] = result  # the last of each scenario
    return found


def losses(results: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Lost, duplicated, misrouted, out-of-order and unexpected events, every result of the run."""
    total = dict.fromkeys(LOSS_FIELDS, 0)
    for result in results.values():
        for name in LOSS_FIELDS:
            value = result.get(name)
            if isinstance(value, int):
                total[name] += value
    return total


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{value.get('p50_ms')} / {value.get('p99_ms')}"
    if isinstance(value, float) and value >= 100:
        return f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def to_nchan(numbers: dict[str, list[float]], label: str) -> float | None:
    """The mean of ``label``'s runs over the mean of Nchan's, when both have numbers."""
    if numbers.get(label) and numbers.get("nchan") and statistics.mean(numbers["nchan"]):
        return statistics.mean(numbers[label]) / statistics.mean(numbers["nchan"])
    return None


def table(root: Path) -> str:
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {}
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        label = directory.name.rsplit("-", 1)[0]
        runs.setdefault(label, []).append(load(directory))
    labels = [name for name in ("before", "after", "nchan", "floor") if name in runs]
    header = ["figure"] + [f"{label} {i + 1}" for label in labels for i in range(len(runs[label]))]
    header += ["after / Nchan", *(["floor / Nchan"] if "floor" in runs else []), "goal", "met"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 2) + "|---|"]
    for text, scenario, path, goal, check in ROWS:
        values = {label: [lookup(run.get(scenario, {}), path) for run in runs[label]] for label in labels}
        if all(v is None for vs in values.values() for v in vs):
            continue
        row = [text] + [cell(v) for label in labels for v in values[label]]
        numbers = {label: [v for v in vs if isinstance(v, (int, float))] for label, vs in values.items()}
        ratio = to_nchan(numbers, "after")
        row.append(f"{ratio:.2f}x" if ratio is not None else "-")
        if "floor" in runs:
            floor = to_nchan(numbers, "floor")
            row.append(f"{floor:.2f}x" if floor is not None else "-")
        row.append(goal)
        row.append("" if check is None or ratio is None else ("yes" if check(ratio) else "**no**"))
        lines.append("| " + " | ".join(row) + " |")
    loss_row = ["lost / duplicated / misrouted / out of order / unexpected, all scenarios"]
    for label in labels:
        for run in runs[label]:
            loss_row.append(" / ".join(str(n) for n in losses(run).values()))
    lines.append("| " + " | ".join([*loss_row, "", *([""] if "floor" in runs else []), "0 everywhere", ""]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.versus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2, help="runs of each server (default 2)")
    p.add_argument("--before", help="also measure this source tree (e.g. the code before a change)")
    p.add_argument("--floor", action="store_true", help="also measure the floor (bench/floor.py) on connect, publish and unicast")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers and nginx workers (default 2)")
    p.add_argument("--table", help="print the table of a finished run's directory and stop")
    p.add_argument("passthrough", nargs="*", help="more bench.run options, after --")
    args = p.parse_args(argv)
    if args.table:
        print(table(Path(args.table)))
        return 0
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root = RESULTS / f"versus-{stamp}"
    configs: list[tuple[str, list[str]]] = [("after", [])]
    if args.before:
        configs.append(("before", ["--root", args.before]))
    configs.append(("nchan", ["--server", "nchan"]))
    if args.floor:
        configs.append(("floor", ["--server", "floor"]))
    for run in range(args.runs):
        for label, extra in (configs if run % 2 == 0 else list(reversed(configs))):
            run_one(label, extra, root / f"{label}-{run + 1}", args.workers, args.passthrough)
    print(table(root))
    print(f"# results in {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
