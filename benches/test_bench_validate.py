"""What the one validation layer costs: each public function against the bare extension call
it makes after its checks (``heatsearch._core``, given arguments already checked), side by
side in one run.

The Python layer checks types, dtypes, shapes and parameters (constant time); the data checks
(finite values, ranking entries) run inside the Rust kernels either way, so both sides pay
them. Small calls show the fixed cost per call; a realistic one shows it does not matter.

    python -m pytest benches/test_bench_validate.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest

import heatsearch as hs
from heatsearch import _core

rng = np.random.default_rng(0)


def unit(n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


X_SMALL, Q_SMALL = unit(1000, 64), unit(1, 64)
X_BIG, Q_BIG = unit(100_000, 512), unit(100, 512)
FMAP = np.maximum(rng.standard_normal((8, 8, 64)), 0).astype(np.float32)
R_SMALL, S_SMALL = hs.search(X_SMALL, Q_SMALL, 100)

CALLS = {
    # name: (public call, the bare extension call it makes)
    "search n=1000 d=64 nq=1 k=10": (
        lambda: hs.search(X_SMALL, Q_SMALL, 10),
        lambda: _core.search(X_SMALL, Q_SMALL, k=10),
    ),
    "search n=100k d=512 nq=100 k=100": (
        lambda: hs.search(X_BIG, Q_BIG, 100),
        lambda: _core.search(X_BIG, Q_BIG, k=100),
    ),
    "hew_pool 8x8x64": (
        lambda: hs.hew_pool(FMAP),
        lambda: _core.hew_pool(FMAP.reshape(64, 64), None, threshold=0.0, ground=0.1),
    ),
    "heat_rerank depth=100 d=64 nq=1": (
        lambda: hs.heat_rerank(X_SMALL, Q_SMALL, R_SMALL, depth=100, scores=S_SMALL),
        lambda: _core.heat_rerank(X_SMALL, Q_SMALL, R_SMALL, depth=100, ground=0.1, scores=S_SMALL),
    ),
}


@pytest.mark.parametrize("impl", ["checked", "bare"])
@pytest.mark.parametrize("call", list(CALLS))
def test_validation_cost(benchmark, call, impl):
    benchmark.group = f"validation cost: {call}"
    public, bare = CALLS[call]
    fn = public if impl == "checked" else bare
    rounds = 10 if "100k" in call else 2000
    out = benchmark.pedantic(fn, rounds=rounds, warmup_rounds=2)
    want = bare()
    for a, b in zip(out if isinstance(out, tuple) else (out,), want if isinstance(want, tuple) else (want,)):
        np.testing.assert_array_equal(a, b)
