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
        "name, message = limited(8 << 20, call)\n"  # well below the buffer (twice the L3 cache)
        "print(name); print(message)\n"
        "print('after', bool(check(call())))\n"  # the same process, the limit lifted
    )
    proc = run(code, threads)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, message, after = proc.stdout.strip().splitlines()[-3:]
    assert name == "MemoryLimitError", proc.stdout
    assert "expected" in message and "MB" in message and "could not be allocated" in message, message
    assert after == "after True"


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
    assert "the candidates and results of 2000 queries (k = 200000 of 200000 items)" in message, message
    assert after == "after True"
