"""The benchmark's tools run end to end at a tiny size (so they do not rot):
the floor server (bench/floor.py, a bare WSGI app under notifier's gunicorn
config with Redis between its workers, which shows what the stack alone
costs) and the per-stream memory attribution (bench/memory.py)."""

from __future__ import annotations

import json

import pytest

from ..support.processes import run_bench

pytestmark = pytest.mark.e2e


def test_the_floor_server_holds_streams_answers_publishes_and_delivers_each_to_its_user(tmp_path) -> None:
    done = run_bench(["bench.run", "connect", "publish", "unicast", "broadcast", "--server", "floor", "-n", "20",
                      "--hold", "0.5", "-t", "1", "-r", "200", "--publish-connections", "2", "--log-level", "WARNING",
                      "--out", str(tmp_path)], 120)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["scenario"]: r for r in map(json.loads, done.stdout.splitlines())}
    # broadcast is not among what the floor answers: not run.
    assert set(results) == {"machine", "connect", "publish", "publish_with_subscribers", "unicast"}, sorted(results)
    assert results["machine"]["server"] == "floor"
    assert results["connect"]["opened"] == 20 and not results["connect"]["errors"]
    assert results["connect"]["rss_per_stream_kib"] > 0
    publish = results["publish"]
    assert publish["requests"] > 0 and set(publish["statuses"]) == {"202"}, publish
    unicast = results["unicast"]
    assert unicast["published"] == 200 and unicast["delivered"] == 200, unicast
    assert (unicast["lost"], unicast["duplicates"], unicast["misrouted"], unicast["out_of_order"]) == (0, 0, 0, 0)


def test_the_memory_report_attributes_a_streams_memory(tmp_path) -> None:
    report = tmp_path / "memory.txt"
    done = run_bench(["bench.memory", "-n", "40", "--top", "10", "--out", str(report)], 180)
    assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    assert "RSS per stream, tracemalloc off:" in text and "traced per stream:" in text, text
    # Each stream's own objects are notifier's, and its connection gunicorn's.
    packages = text.split("by package", 1)[1].split("by allocation site", 1)[0]
    assert "notifier" in packages and "gunicorn" in packages, text
