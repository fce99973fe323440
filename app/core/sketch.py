"""Durations as mergeable log-bucket histograms: a duration falls in bucket
``floor(BUCKETS_PER_DOUBLING * log2(seconds / FLOOR_SECONDS))`` (0 for anything shorter), so
histograms of any windows, academies or intents add up bucket by bucket, and a percentile read
from one is within :data:`RELATIVE_ERROR` of the exact one.

The database computes the bucket (:data:`SQL_BUCKET`); this turns bucket counts back into
percentiles, interpolated as PostgreSQL's ``percentile_cont`` does between samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: Buckets per doubling of a duration: each spans a factor of 2 ** (1/8), about 9%.
BUCKETS_PER_DOUBLING = 8
#: Durations under this (0.1 ms) share bucket 0.
FLOOR_SECONDS = 1e-4
#: How far a bucket's middle (geometric) lies from any duration in it, at most.
RELATIVE_ERROR = 2 ** (1 / (2 * BUCKETS_PER_DOUBLING)) - 1

#: The bucket of the SQL expression ``{seconds}`` (NULL stays NULL).
SQL_BUCKET = (f"CASE WHEN ({{seconds}}) IS NOT NULL THEN "
              f"floor({BUCKETS_PER_DOUBLING / math.log(2)!r} * "
              f"ln(greatest(1.0, ({{seconds}}) / {FLOOR_SECONDS!r})))::int END")


def bucket(seconds: float) -> int:
    """The bucket a duration falls in (as :data:`SQL_BUCKET` computes it)."""
    return math.floor(BUCKETS_PER_DOUBLING / math.log(2)
                      * math.log(max(1.0, seconds / FLOOR_SECONDS)))


def value(b: int) -> float:
    """The duration a bucket stands for: its geometric middle (bucket 0: the floor)."""
    if b <= 0:
        return FLOOR_SECONDS
    return FLOOR_SECONDS * 2 ** ((b + 0.5) / BUCKETS_PER_DOUBLING)


def merge(*histograms: Mapping[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in histograms:
        for b, n in h.items():
            out[b] = out.get(b, 0) + n
    return out


def percentile(histogram: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of the durations counted, None when there are none:
    interpolated between the two samples around it, each taken as its bucket's middle."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    position = q * (total - 1)
    lower_rank, frac = math.floor(position), position - math.floor(position)
    lower = upper = None
    seen = 0
    for b in sorted(histogram):
        seen += histogram[b]
        if lower is None and seen > lower_rank:
            lower = value(b)
        if seen > lower_rank + (1 if frac > 0 else 0):
            upper = value(b)
            break
    assert lower is not None and upper is not None
    return lower + (upper - lower) * frac
