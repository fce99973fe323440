"""Durations as log-bucket histograms: percentiles within the stated error, histograms that add
up, and the bucket the database computes is the one Python computes."""

from __future__ import annotations

import random

import pytest

from app.core import sketch


def histogram(values):
    out: dict[int, int] = {}
    for v in values:
        out[sketch.bucket(v)] = out.get(sketch.bucket(v), 0) + 1
    return out


def exact(values, q):
    """PostgreSQL's percentile_cont."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_a_percentile_from_buckets_is_within_the_relative_error_of_the_exact_one(q):
    rng = random.Random(7)
    values = [rng.lognormvariate(0, 2) for _ in range(5001)]
    got = sketch.percentile(histogram(values), q)
    assert got == pytest.approx(exact(values, q), rel=sketch.RELATIVE_ERROR)


def test_two_samples_interpolate_as_percentile_cont_does():
    h = histogram([400.0, 600.0])
    assert sketch.percentile(h, 0.5) == pytest.approx(500, rel=sketch.RELATIVE_ERROR)
    assert sketch.percentile(h, 0.95) == pytest.approx(590, rel=sketch.RELATIVE_ERROR)
    assert sketch.percentile({}, 0.5) is None


def test_histograms_of_parts_merge_into_the_histogram_of_the_whole():
    a, b = [0.01 * i for i in range(1, 300)], [3.0 + i for i in range(50)]
    assert sketch.merge(histogram(a), histogram(b)) == histogram(a + b)


def test_durations_under_the_floor_share_bucket_zero_and_read_back_as_the_floor():
    assert sketch.bucket(0) == sketch.bucket(-1.0) == sketch.bucket(sketch.FLOOR_SECONDS) == 0
    assert sketch.percentile({0: 3}, 0.5) == sketch.FLOOR_SECONDS


def test_each_bucket_spans_its_share_of_a_doubling():
    for seconds in (0.001, 0.25, 1.0, 60.0, 86400.0):
        b = sketch.bucket(seconds)
        assert sketch.value(b) == pytest.approx(seconds, rel=2 * sketch.RELATIVE_ERROR + 1e-9)
        assert sketch.bucket(seconds * 2) == b + sketch.BUCKETS_PER_DOUBLING
