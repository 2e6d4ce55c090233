"""Garbage collection in workers (notifier/worker_gc.py): startup objects
frozen, full collections spaced out, every pause timed for the metric."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from prometheus_client import CollectorRegistry, Histogram

from notifier.metrics import GC_PAUSE_BUCKETS
from notifier.worker_gc import FULL_COLLECTION_EVERY, SPACES_FULL_COLLECTIONS, PauseRecorder


def test_tune_for_streams_freezes_what_startup_left_and_spaces_full_collections() -> None:
    # In a child: freezing is for the life of a process.
    script = (
        "import gc, json, notifier, notifier.worker_gc as w\n"
        "before = gc.get_threshold()\n"
        "frozen = w.tune_for_streams()\n"
        "print(json.dumps({'before': before, 'after': gc.get_threshold(), 'frozen': frozen,"
        " 'tracked': len(gc.get_objects())}))\n"
    )
    result = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                                       text=True, timeout=60).stdout)
    young, middle, full = result["before"]
    assert result["after"] == [young, middle, FULL_COLLECTION_EVERY if SPACES_FULL_COLLECTIONS else full]
    assert result["frozen"] > 10_000, "the imported package's objects are frozen"
    assert result["tracked"] < 100, "nothing left for a collection to walk but what came after"


def _histogram() -> Histogram:
    return Histogram("gc_pause_seconds", "test", ["generation"], buckets=GC_PAUSE_BUCKETS,
                     registry=CollectorRegistry())


def _count(histogram: Histogram, generation: str) -> float:
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels["generation"] == generation:
                return sample.value
    return 0.0


def test_pause_recorder_times_each_collection_by_generation_and_writes_only_when_flushed() -> None:
    histogram = _histogram()
    recorder = PauseRecorder(histogram, interval=3600)
    recorder.start()
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
        # The callback only appends: writing the metric inside a collection
        # could take a lock the interrupted code already holds.
        assert _count(histogram, "2") == 0
    finally:
        recorder.stop()  # stops listening, then flushes
    assert recorder.on_collection not in gc.callbacks
    assert _count(histogram, "0") >= 1
    assert _count(histogram, "2") == 2
    gc.collect(2)
    recorder.flush()
    assert _count(histogram, "2") == 2, "a stopped recorder records nothing"


def test_pause_recorder_keeps_at_most_max_pending_until_flushed() -> None:
    recorder = PauseRecorder(_histogram())
    for _ in range(PauseRecorder.MAX_PENDING + 5):
        recorder.on_collection("start", {"generation": 0})
        recorder.on_collection("stop", {"generation": 0})
    assert len(recorder._pending) == PauseRecorder.MAX_PENDING
    recorder.flush()
    assert recorder._pending == []
