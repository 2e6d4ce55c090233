"""prometheus_client internals: a histogram's buckets, for observing many
amounts with one write per bucket touched.

Read against prometheus_client 0.26 (``Histogram._upper_bounds``, ``_buckets``,
``_sum``). In multiprocess mode each write takes a lock, asks for the pid and
writes the file, and ``observe`` makes two per amount. Outside the tested
range, or if the histogram does not look as expected: ``observe`` per amount.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from .versions import Tested

TESTED = Tested("prometheus_client", "0.26", "0.27")
ACTIVE = TESTED.active


def public_observe_many(histogram: Any, amounts: Sequence[float]) -> None:
    for amount in amounts:
        histogram.observe(amount)


def fast_observe_many(histogram: Any, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for each amount (an unlabelled histogram or one
    child of a labelled one)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if not bounds or buckets is None or total is None or len(bounds) != len(buckets) or bounds[-1] != float("inf"):
        public_observe_many(histogram, amounts)
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1  # the first bound >= amount, as observe()
    total.inc(sum(amounts))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


observe_many = fast_observe_many if ACTIVE else public_observe_many
