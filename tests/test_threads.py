"""Thread control, GIL release, thread-count independence and fork safety."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest

import heatsearch as hs
from heatsearch import threads
from helpers import ticks_while



def maps(seed=0, sizes=((32, 24), (16, 12), (64, 48), (8, 8)), c=256, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [np.maximum(rng.standard_normal((h, w, c)), 0).astype(dtype) for h, w in sizes]


def test_set_and_get(restore_threads):
    hs.set_num_threads(1)
    assert hs.get_num_threads() == 1
    hs.set_num_threads(3)
    assert hs.get_num_threads() == 3
    with pytest.raises(ValueError, match=">= 1"):
        hs.set_num_threads(0)
    with pytest.raises(TypeError, match="int"):
        hs.set_num_threads(2.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_the_thread_count(restore_threads, dtype):
    fmaps = maps(dtype=dtype)
    results = []
    for n in (1, 2, 3):
        hs.set_num_threads(n)
        results.append((
            [hs.hew_weights(f) for f in fmaps],
            hs.hew_pool_batch(fmaps),
            hs.hew_pool_batch(fmaps[:1]),
            hs.local_mean(fmaps),
        ))
    for other in results[1:]:
        for a, b in zip(results[0][0], other[0]):
            np.testing.assert_array_equal(a, b)
        for k in (1, 2, 3):
            np.testing.assert_array_equal(results[0][k], other[k])


def test_gil_is_released_during_a_batch():
    """A second Python thread keeps running while a large batch is pooled."""
    fmaps = maps(sizes=[(64, 48)] * 6, c=512)
    assert ticks_while(lambda: hs.hew_pool_batch(fmaps)) > 10_000


def run_python(code, env_extra):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_environment_variable():
    out = run_python("import heatsearch as hs; print(hs.get_num_threads())", {"HEATSEARCH_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    bad = run_python(
        "import numpy as np, heatsearch as hs\n"
        "try:\n    hs.hew_weights(np.ones((3, 2)))\n"
        "except hs.ThreadPoolError as e:\n    print('ThreadPoolError', e)\n",
        {"HEATSEARCH_NUM_THREADS": "many"},
    )
    assert bad.returncode == 0, bad.stderr
    assert "ThreadPoolError" in bad.stdout and "HEATSEARCH_NUM_THREADS" in bad.stdout and "'many'" in bad.stdout.replace('"', "'")


def _child(queue):
    f = maps(seed=3, sizes=[(20, 20)])[0]
    queue.put(hs.hew_pool(f).tolist())


@pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX-only")
def test_fork_after_use_does_not_deadlock():
    f = maps(seed=3, sizes=[(20, 20)])[0]
    expected = hs.hew_pool(f)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    result = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(np.array(result, dtype=np.float32), expected)


# --------------------------------------------------------------------------------------------
# threads_per_worker: each worker's share of the CPUs this process may use


@pytest.mark.parametrize("cpus, workers, expected", [
    (2, 1, 2), (2, 2, 1), (2, 3, 1), (8, 3, 2), (8, 4, 2), (64, 5, 12), (1, 1, 1),
])
def test_share_rounds_down_and_never_gives_zero(cpus, workers, expected):
    assert threads._share(cpus, workers) == expected


def _files(**text):
    paths = {
        "v2": "/sys/fs/cgroup/cpu.max",
        "v1_quota": "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        "v1_period": "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
    }
    files = {paths[k]: v for k, v in text.items()}
    return files.get


@pytest.mark.parametrize("files, quota", [
    ({}, None),                                             # no cgroup files: no quota
    ({"v2": "max 100000\n"}, None),                         # v2 without a limit
    ({"v2": "150000 100000\n"}, 1.5),                       # docker --cpus 1.5
    ({"v2": "400000 100000\n"}, 4.0),
    ({"v2": "garbage"}, None),
    ({"v2": "0 100000"}, None),
    ({"v1_quota": "-1\n", "v1_period": "100000\n"}, None),  # v1 without a limit
    ({"v1_quota": "200000\n", "v1_period": "100000\n"}, 2.0),
    ({"v1_quota": "200000\n"}, None),                       # no period: ignored
])
def test_cgroup_cpu_quota(files, quota):
    assert threads._cgroup_cpu_quota(_files(**files)) == quota


def test_available_cpus_is_capped_by_the_quota():
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert threads._available_cpus(_files()) == affinity
    assert threads._available_cpus(_files(v2="max 100000")) == affinity
    assert threads._available_cpus(_files(v2="150000 100000")) == 1  # rounded down
    assert threads._available_cpus(_files(v2="50000 100000")) == 1   # never 0
    assert threads._available_cpus(_files(v2=f"{100000 * (affinity + 8)} 100000")) == affinity


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_threads_per_worker_follows_the_affinity_mask():
    cpus = sorted(os.sched_getaffinity(0))
    code = (
        "import os, heatsearch as hs\n"
        f"os.sched_setaffinity(0, {{{cpus[0]}}})\n"
        "print(hs.threads_per_worker(), hs.threads_per_worker(3))\n"
    )
    out = run_python(code, {})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]
    quota = threads._cgroup_cpu_quota(threads._read_text)
    expected = len(cpus) if quota is None else min(len(cpus), max(1, int(quota)))
    assert hs.threads_per_worker() == expected
    assert hs.threads_per_worker(workers=len(cpus)) == max(1, expected // len(cpus))


@pytest.mark.parametrize("workers, error", [(0, hs.InvalidInputError), (1.5, hs.InvalidDTypeError),
                                            (True, hs.InvalidDTypeError), (None, hs.InvalidDTypeError)])
def test_threads_per_worker_bad_workers(workers, error):
    with pytest.raises(error, match="workers"):
        hs.threads_per_worker(workers)


def test_limit_blas_threads_caps_numpys_blas_for_the_process():
    """In a fresh process (the setting is process-wide): every BLAS library NumPy loaded
    reports one thread after ``limit_blas_threads(1)``."""
    pytest.importorskip("threadpoolctl", reason="threadpoolctl is part of the serve extra")
    code = (
        "import heatsearch as hs, numpy, threadpoolctl\n"
        "assert hs.limit_blas_threads(1) is True\n"
        "print(sorted({i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("[1]", "[]"), out.stdout  # [] only where NumPy has no BLAS library
    with pytest.raises(hs.InvalidInputError, match="n must be >= 1"):
        hs.limit_blas_threads(0)


def test_a_server_worker_caps_blas_before_it_builds_the_app(monkeypatch):
    """``heatsearch serve --workers N``'s factory runs in each worker process: it caps NumPy's
    BLAS threads there, before the app (and the index) is made."""
    from heatsearch.app import server

    calls = []
    monkeypatch.setattr(server, "limit_blas_threads", lambda n: calls.append(("blas", n)))
    monkeypatch.setattr(server, "create_app", lambda **kw: calls.append(("app", kw)) or "app")
    monkeypatch.setenv(*next(iter(server.environment_config(index_path="/nowhere").items())))
    assert server.app_from_environment() == "app"
    assert calls == [("blas", 1), ("app", {"index_path": "/nowhere"})]
