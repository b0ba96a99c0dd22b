"""HeW: Rust vs the NumPy reference, one map and a batch of 16, at N = 768 (32 x 24, VGG16
pool5 of a 1024 x 768 image) and N = 3072 (64 x 48, conv5_3), C = 512, float32; plus NumPy's
own float32 matrix-multiply throughput, to express HeW's effective throughput
(``N^2 C + 2 N^3 / 3`` flops per map) as a fraction of it.

Also whether the thread team earns its keep: one map on every thread of the pool (the team)
against one map on one thread (what is left without it), and a batch of 16 maps on one thread
per map, maps in parallel (no team), against the same batch on one thread."""

from __future__ import annotations

import numpy as np
import pytest

import heatsearch as hs
from heatsearch import reference as ref

C = 512
SIZES = {768: (32, 24), 3072: (64, 48)}
IMPLS = {"rust": hs, "reference": ref}


def fmap(n, seed=0):
    h, w = SIZES[n]
    rng = np.random.default_rng(seed)
    return np.maximum(rng.standard_normal((h, w, C)), 0).astype(np.float32)


def rounds(impl, n, batch):
    """Fewer rounds where one call takes seconds (the reference at N = 3072)."""
    if impl == "reference" and n == 3072:
        return 1 if batch else 3
    return 5 if batch else 20


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("n", list(SIZES))
def test_hew_single(benchmark, impl, n):
    benchmark.group = f"hew N={n} one map"
    benchmark.extra_info.update(n=n, c=C, maps=1, flops=n * n * C + 2 * n**3 / 3)
    f = fmap(n)
    out = benchmark.pedantic(IMPLS[impl].hew_pool, args=(f,), rounds=rounds(impl, n, False), warmup_rounds=1)
    assert out.shape == (C,)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("n", list(SIZES))
def test_hew_batch16(benchmark, impl, n):
    benchmark.group = f"hew N={n} batch of 16"
    benchmark.extra_info.update(n=n, c=C, maps=16, flops=16 * (n * n * C + 2 * n**3 / 3))
    maps = [fmap(n, seed) for seed in range(16)]
    out = benchmark.pedantic(IMPLS[impl].hew_pool_batch, args=(maps,), rounds=rounds(impl, n, True), warmup_rounds=0 if impl == "reference" and n == 3072 else 1)
    assert out.shape == (16, C)


@pytest.mark.parametrize("n", [768, 3072])
def test_numpy_matmul_f32(benchmark, n):
    """NumPy's float32 GEMM on this machine, the yardstick of the effective throughput."""
    benchmark.group = "numpy float32 matmul"
    benchmark.extra_info.update(n=n, flops=2 * n**3)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    out = benchmark.pedantic(np.matmul, args=(a, b), rounds=20 if n == 768 else 5, warmup_rounds=1)
    assert out.shape == (n, n)


@pytest.mark.parametrize("impl", ["rust", "1 thread"])
@pytest.mark.parametrize("n", list(SIZES))
def test_hew_team(benchmark, restore_threads, impl, n):
    benchmark.group = f"hew N={n} one map: the team on {hs.get_num_threads()} threads vs 1 thread"
    benchmark.extra_info.update(n=n, c=C, maps=1, flops=n * n * C + 2 * n**3 / 3)
    if impl == "1 thread":
        hs.set_num_threads(1)
    f = fmap(n)
    out = benchmark.pedantic(hs.hew_pool, args=(f,), rounds=20 if n == 768 else 5, warmup_rounds=1)
    assert out.shape == (C,)


@pytest.mark.parametrize("impl", ["rust", "1 thread"])
def test_hew_batch_threads(benchmark, restore_threads, impl):
    benchmark.group = f"hew N=768 batch of 16: one map per thread on {hs.get_num_threads()} threads vs 1 thread"
    benchmark.extra_info.update(n=768, c=C, maps=16, flops=16 * (768 * 768 * C + 2 * 768**3 / 3))
    if impl == "1 thread":
        hs.set_num_threads(1)
    maps = [fmap(768, seed) for seed in range(16)]
    out = benchmark.pedantic(hs.hew_pool_batch, args=(maps,), rounds=5, warmup_rounds=1)
    assert out.shape == (16, C)
