"""Benchmarks: pytest-benchmark, the Rust path and the NumPy reference side by side.

Run: ``python -m pytest benches --benchmark-only`` (add ``--benchmark-json out.json`` and
``python tools/bench_report.py out.json`` for the README table). They are not collected by the
normal test run (``testpaths = ["tests"]``).
"""

from __future__ import annotations

import time

import pytest

#: Seconds to wait before each benchmark. OpenBLAS's worker threads keep the cores busy for a
#: while after NumPy's matrix products: measured on the 2-core VM, one HeW map of N = 768 on 2
#: threads took 3.9 ms instead of 2.8 ms in the 100 ms after five 3072 x 3072 matmuls, and was
#: back to normal 0.5 s later. A benchmark that follows a NumPy one would share the cores with
#: them. (The cold start after the pause is absorbed by each benchmark's warm-up round.)
QUIET_SECONDS = 0.5


@pytest.fixture(autouse=True)
def quiet_cores():
    time.sleep(QUIET_SECONDS)
