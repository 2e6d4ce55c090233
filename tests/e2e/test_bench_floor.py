"""The benchmark's floor server (bench/floor.py) runs end to end at a tiny
size: a bare WSGI app under notifier's gunicorn config holds streams and
answers publishes, so the bench can show what the server alone costs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..support.processes import ROOT

pytestmark = pytest.mark.e2e


def test_the_floor_server_holds_streams_and_answers_publishes(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "connect", "publish", "unicast", "--server", "floor", "-n", "20",
         "--hold", "0.5", "-t", "0.5", "--publish-connections", "2", "--log-level", "WARNING", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["scenario"]: r for r in map(json.loads, done.stdout.splitlines())}
    # unicast needs deliveries, which the floor does not make: not run.
    assert set(results) == {"machine", "connect", "publish", "publish_with_subscribers"}, sorted(results)
    assert results["machine"]["server"] == "floor"
    assert results["connect"]["opened"] == 20 and not results["connect"]["errors"]
    assert results["connect"]["rss_per_stream_kib"] > 0
    publish = results["publish"]
    assert publish["requests"] > 0 and set(publish["statuses"]) == {"202"}, publish
