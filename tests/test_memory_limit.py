"""Under a memory limit the kernels raise MemoryLimitError, never abort the process.

Rust aborts a process whose allocation fails; the core asks for the memory a kernel cannot do
without (the matrix product's per-thread buffer, a search's results) fallibly first
(rust/core/src/memory.rs). Each case runs in a child process under ``RLIMIT_AS``, then lifts
the limit in the same process and checks that the kernel still works there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(__import__("resource"), "RLIMIT_AS") or not Path("/proc/self/status").exists(),
    reason="needs resource.RLIMIT_AS and /proc (Linux)",
)

_PRELUDE = r"""
import resource, sys
import numpy as np
import heatsearch as hs

def vm_size():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))

def limited(extra, call):
    "call() under a limit of the address space in use plus `extra` bytes: its error class and message."
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size() + extra, hard))
    try:
        call()
        return "no error", ""
    except Exception as e:
        return type(e).__name__, str(e)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

rng = np.random.default_rng(0)
"""


def run(code: str, threads: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, MALLOC_ARENA_MAX="1", HEATSEARCH_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", _PRELUDE + code], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kernel", ["search", "hew_pool"])
def test_the_matrix_products_buffer_out_of_reach_is_an_error(kernel, threads):
    code = {
        "search": "X = rng.standard_normal((4000, 256), dtype=np.float32); Q = X[:300].copy()\n"
                  "call = lambda: hs.search(X, Q, 5)\n"
                  "check = lambda r: (r[0][:, 0] == np.arange(300)).all()\n",
        "hew_pool": "F = np.maximum(rng.standard_normal((48, 32, 256)), 0).astype(np.float32)\n"
                    "call = lambda: hs.hew_pool(F)\n"
                    "check = lambda d: np.allclose(d, hs.reference.hew_pool(F), rtol=1e-4, atol=1e-5)\n",
    }[kernel]
    code += (
        # room for the pool's thread stacks, not for one product buffer
        "headroom = 8 << 20\n"
        "print(hs.gemm_buffer_bytes() > headroom)\n"
        "name, message = limited(headroom, call)\n"
        "print(name); print(message)\n"
        "print('after', bool(check(call())))\n"  # the same process, the limit lifted
    )
    proc = run(code, threads)
    assert proc.returncode == 0, proc.stderr[-3000:]
    larger, name, message, after = proc.stdout.strip().splitlines()[-4:]
    if larger != "True":
        pytest.skip("this machine's product buffer fits in the 8 MB left (a small L3 cache, or not x86-64)")
    assert name == "MemoryLimitError", proc.stdout
    assert f"expected {-(-__import__('heatsearch').gemm_buffer_bytes() // (1 << 20))} MB" in message, message
    assert "could not be allocated" in message and "ulimit -v" in message, message
    assert after == "after True"


def test_the_error_is_a_memory_error_and_a_heatsearch_error():
    import heatsearch as hs

    assert issubclass(hs.MemoryLimitError, MemoryError) and issubclass(hs.MemoryLimitError, hs.HeatsearchError)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_small_first_call_leaves_the_buffers_in_place(threads):
    """A first search of two queries (no product of faer's x86 kernel runs for it) still takes
    every thread's product buffer, so a larger search later under a tight limit cannot abort
    the process for want of one (it did when only the check was made up front)."""
    code = (
        "X = rng.standard_normal((4000, 256), dtype=np.float32)\n"
        "hs.search(X, X[:2], 3)\n"
        "out = {}\n"
        "name, message = limited(40 << 20, lambda: out.setdefault('r', hs.search(X, X[:300], 5)))\n"
        "print(name); print(bool((out['r'][0][:, 0] == np.arange(300)).all()) if 'r' in out else message)\n"
    )
    proc = run(code, threads)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, found = proc.stdout.strip().splitlines()[-2:]
    assert (name, found) == ("no error", "True"), proc.stdout


def test_results_larger_than_the_limit_are_an_error():
    # k = None ranks the whole database for each query: 2,000 x 200,000 x 12 bytes = 4.8 GB.
    code = (
        "X = rng.standard_normal((200_000, 4), dtype=np.float32); Q = X[:2000].copy()\n"
        "hs.search(X, Q[:2], 3)\n"  # the threads' product buffers are in place
        "name, message = limited(256 << 20, lambda: hs.search(X, Q, None))\n"
        "print(name); print(message)\n"
        "r, s = hs.search(X, Q[:3], None)\n"
        "print('after', r.shape == (3, 200_000) and bool((np.diff(s, axis=1) <= 0).all()))\n"
    )
    proc = run(code, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, message, after = proc.stdout.strip().splitlines()[-3:]
    assert name == "MemoryLimitError", proc.stdout
    assert "a search of 2000 queries (k = 200000 of 200000 items)" in message, message
    assert after == "after True"


@pytest.mark.parametrize("headroom_mb", [150, 190, 205, 215, 230, 300])
def test_near_the_bound_a_search_either_answers_or_raises(headroom_mb):
    """Around the memory a whole-database search needs (200 queries x 50,000 items), every
    limit gives the right ranking or MemoryLimitError: never an abort (205-215 MB aborted when
    the bound left out the lists' growth)."""
    code = (
        "X = rng.standard_normal((50_000, 4), dtype=np.float32); Q = X[:200].copy()\n"
        "hs.search(X, Q[:2], 3)\n"
        "out = {}\n"
        f"name, message = limited({headroom_mb} << 20, lambda: out.setdefault('r', hs.search(X, Q, None)))\n"
        "print(name)\n"
        "print(bool((out['r'][0] == hs.search(X, Q, None)[0]).all()) if 'r' in out else 'none')\n"
    )
    proc = run(code, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, found = proc.stdout.strip().splitlines()[-2:]
    assert (name, found) in {("no error", "True"), ("MemoryLimitError", "none")}, proc.stdout
