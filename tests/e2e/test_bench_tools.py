"""The benchmark's tools run end to end at a tiny size (so they do not rot):
the floor server (bench/floor.py, a bare WSGI app under notifier's gunicorn
config, which shows what the server alone costs) and the per-stream memory
attribution (bench/memory.py)."""

from __future__ import annotations

import json

import pytest

from ..support.processes import run_bench

pytestmark = pytest.mark.e2e


def test_the_floor_server_holds_streams_and_answers_publishes(tmp_path) -> None:
    done = run_bench(["bench.run", "connect", "publish", "unicast", "--server", "floor", "-n", "20", "--hold", "0.5",
                      "-t", "0.5", "--publish-connections", "2", "--log-level", "WARNING", "--out", str(tmp_path)], 120)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["scenario"]: r for r in map(json.loads, done.stdout.splitlines())}
    # unicast needs deliveries, which the floor does not make: not run.
    assert set(results) == {"machine", "connect", "publish", "publish_with_subscribers"}, sorted(results)
    assert results["machine"]["server"] == "floor"
    assert results["connect"]["opened"] == 20 and not results["connect"]["errors"]
    assert results["connect"]["rss_per_stream_kib"] > 0
    publish = results["publish"]
    assert publish["requests"] > 0 and set(publish["statuses"]) == {"202"}, publish


def test_the_memory_report_attributes_a_streams_memory(tmp_path) -> None:
    report = tmp_path / "memory.txt"
    done = run_bench(["bench.memory", "-n", "40", "--top", "10", "--out", str(report)], 180)
    assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    assert "RSS per stream, tracemalloc off:" in text and "traced per stream:" in text, text
    # Each stream's own objects are notifier's, and its connection gunicorn's.
    packages = text.split("by package", 1)[1].split("by allocation site", 1)[0]
    assert "notifier" in packages and "gunicorn" in packages, text
