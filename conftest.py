"""Fixtures shared by the tests (tests/) and the benchmarks (benches/)."""

from __future__ import annotations

import pytest

import heatsearch as hs


@pytest.fixture
def restore_threads():
    """Puts heatsearch's thread count back as it was after the test or benchmark."""
    n = hs.get_num_threads()
    yield
    hs.set_num_threads(n)
