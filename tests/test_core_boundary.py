"""The boundary of the Rust extension: a panic of the core (a broken precondition: only a bug
can cause one, since the Python layer checks every argument first) comes back as
InternalError, a HeatsearchError that says it is a bug and where to report it, never as
pyo3's PanicException (a BaseException that ``except Exception`` would not catch); and the
extension keeps working afterwards."""

from __future__ import annotations

import numpy as np
import pytest

import heatsearch as hs
from heatsearch import _core
from heatsearch.errors import ISSUES_URL, HeatsearchError, InternalError

X = np.ones((5, 3), np.float32)


@pytest.mark.parametrize(
    "call",
    [
        # Each skips the Python layer's checks on purpose.
        lambda: _core.search(X, np.ones((2, 4), np.float32), k=1),
        lambda: _core.hew_weights(np.ones((0, 3), np.float64), None, threshold=0.0, ground=0.1),
        lambda: _core.hew_pool(X, None, threshold=0.0, ground=0.0),
        lambda: _core.heat_rerank(X, X[:1], np.zeros((1, 9), np.int64), depth=3, ground=0.1, scores=None),
    ],
)
def test_a_core_panic_is_an_internal_error(call):
    with pytest.raises(InternalError) as info:
        call()
    err = info.value
    assert isinstance(err, HeatsearchError) and isinstance(err, RuntimeError)
    assert "bug in heatsearch" in str(err) and ISSUES_URL in str(err)
    # The extension is still usable.
    ranks, _ = hs.search(X, X[:2], 2)
    assert ranks.shape == (2, 2)


def test_data_errors_are_not_internal_errors():
    bad = X.copy()
    bad[1, 1] = np.nan
    with pytest.raises(hs.InvalidInputError, match="X must be finite"):
        _core.search(bad, X[:1], k=1)


def test_the_binding_names_a_dtype_mismatch_it_is_handed():
    with pytest.raises(hs.InvalidDTypeError, match="Q must have the dtype of X"):
        _core.search(X, X[:1].astype(np.float64), k=1)
