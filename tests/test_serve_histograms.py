"""The overload benchmark's reading of Serve's own histograms (bench/serve_histograms.py): the
quantile of what was observed between two snapshots, as Prometheus's histogram_quantile
interpolates it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import serve_histograms

INF = float("inf")
# Counts before the phase (other traffic), and after it: the phase saw 50 answers up to
# 100 ms, 40 between 100 and 200 ms, 10 between 200 and 500 ms.
BEFORE = {100.0: 10.0, 200.0: 10.0, 500.0: 10.0, INF: 10.0}
AFTER = {100.0: 60.0, 200.0: 100.0, 500.0: 110.0, INF: 110.0}


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 100.0), (0.9, 200.0), (0.95, 350.0), (0.99, 470.0), (0.25, 50.0)],
)
def test_quantiles_of_the_phase_only(q, expected):
    assert serve_histograms.quantile(BEFORE, AFTER, q) == pytest.approx(expected)


def test_a_quantile_in_the_open_bucket_is_the_highest_finite_bound():
    after = {**AFTER, INF: 130.0}  # 20 answers slower than 500 ms
    assert serve_histograms.quantile(BEFORE, after, 0.99) == 500.0


def test_nothing_observed_is_none():
    assert serve_histograms.quantile(AFTER, AFTER, 0.99) is None
    assert serve_histograms.quantile({}, {}, 0.99) is None


def test_no_prometheus_gives_empty_snapshots():
    snapshot = serve_histograms.snapshot("http://127.0.0.1:9")  # discard port: nothing listens
    assert snapshot == serve_histograms.Snapshot({}, {}, {}, {}, {}, {})
