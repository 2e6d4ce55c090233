"""The benchmark runs end to end at a tiny size (so it does not rot): it starts
its own redis-server and gunicorn, measures, and stops them."""

from __future__ import annotations

import json

import pytest

from ..support.processes import run_bench

pytestmark = pytest.mark.e2e


def test_bench_runs_every_scenario_small(tmp_path) -> None:
    done = run_bench(
        ["bench.run", "-n", "30", "--hold", "0.5", "-m", "3", "--broadcast-rate", "20",
         "--fanout-streams", "20", "--fanout-events", "20", "-r", "100", "--batch-rate", "1000", "--batch", "10",
         "-t", "1", "--publish-connections", "4", "--churn-stable", "10", "--churn-streams", "10",
         "--churn-rounds", "3", "--log-level", "WARNING", "--out", str(tmp_path)], 240)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["scenario"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert set(results) >= {"machine", "connect", "broadcast", "unicast", "unicast_batch", "publish",
                            "publish_with_subscribers", "fanout", "churn"}
    assert results["connect"]["opened"] == 30 and not results["connect"]["errors"]
    for name in ("broadcast", "fanout", "unicast", "unicast_batch"):
        assert results[name]["lost"] == 0, (name, results[name])
        assert results[name]["duplicates"] == 0, (name, results[name])
    assert results["broadcast"]["delivered"] == 30 * 3
    assert results["publish"]["requests"] > 0
    churn = results["churn"]
    assert churn["opened"] == 30 and not churn["errors"] and churn["stable_all_alive"] is True
    # The server's full collections, from notifier_gc_pause_seconds.
    assert set(churn["full_collections"] or {}) == {"count", "mean_ms", "over_100ms"}
    assert list(tmp_path.glob("bench-*.jsonl"))
