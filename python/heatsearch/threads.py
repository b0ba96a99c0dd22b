"""Thread control for heatsearch's kernels, and the thread count for each worker of a service.

heatsearch runs its Rust kernels on its own thread pool (never rayon's global one), sized by
the environment variable ``HEATSEARCH_NUM_THREADS`` when set, else by the number of logical
CPUs. A forked child process builds a fresh pool on first use. The GIL is released while the
kernels run, so other Python threads keep going.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Optional

from . import _core, _validate

__all__ = ["set_num_threads", "get_num_threads", "gemm_buffer_bytes", "threads_per_worker", "limit_blas_threads"]


def set_num_threads(n: int) -> None:
    """Use ``n >= 1`` threads from now on (the pool is rebuilt on its next use)."""
    _core.set_num_threads(_validate.integer(n, "n", minimum=1))


def get_num_threads() -> int:
    """The number of threads the kernels use."""
    return int(_core.get_num_threads())


def gemm_buffer_bytes() -> int:
    """Bytes of address space each of heatsearch's threads takes, once, at its first kernel:
    the packing buffer of faer's x86 matrix product, twice its estimate of the L3 cache (64 MB
    on a machine of one 32 MB L3; 0 off x86-64). A memory limit (``ulimit -v``) must leave that
    much per thread (:func:`get_num_threads`), or the kernels raise
    :class:`~heatsearch.errors.MemoryLimitError`."""
    return int(_core.gemm_buffer_bytes())


def threads_per_worker(workers: int = 1) -> int:
    """The threads each of ``workers`` processes should use, so that together they use each
    CPU this process may run on once: ``max(1, cpus // workers)``.

    ``cpus`` is the number of CPUs in this process's affinity mask (``os.sched_getaffinity``;
    ``os.cpu_count()`` where the platform has none), capped by the CPU quota of a container
    (cgroup v2 ``/sys/fs/cgroup/cpu.max`` or v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``,
    rounded down, at least 1), which neither torch nor heatsearch's pool take into account.
    The count is rounded down: threads beyond the CPUs only queue behind each other.

    Give the result to both pools of each worker, which run one after the other in a query:
    ``heatsearch.set_num_threads(t)`` (or ``HEATSEARCH_NUM_THREADS=t``) and
    ``Extractor(num_threads=t)`` (or ``OMP_NUM_THREADS=t``). See the README's "Threads in a
    service" for the measurements behind this.

    Raises:
        InvalidInputError, InvalidDTypeError: ``workers`` is not an int >= 1.
    """
    workers = _validate.integer(workers, "workers", minimum=1)
    return _share(_available_cpus(), workers)


def _share(cpus: int, workers: int) -> int:
    """``max(1, cpus // workers)``: each worker's whole share of ``cpus``, never 0."""
    return max(1, cpus // workers)


def _available_cpus(read: Optional[Callable[[str], Optional[str]]] = None) -> int:
    """The CPUs this process may use: its affinity mask, capped by the cgroup CPU quota.

    ``read(path)`` returns a file's text or None (injected by the tests; default: the file).
    """
    read = read or _read_text
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(read)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota(read: Callable[[str], Optional[str]]) -> Optional[float]:
    """The CPUs' worth of time the cgroup may use (quota / period), None without a quota.

    cgroup v2: ``cpu.max`` holds ``"<quota> <period>"`` or ``"max <period>"``; v1:
    ``cpu.cfs_quota_us`` (-1 without a quota) and ``cpu.cfs_period_us``. Unreadable or
    malformed files count as no quota (the affinity mask still bounds the count).
    """
    v2 = read("/sys/fs/cgroup/cpu.max")
    if v2 is not None:
        fields = v2.split()
        if len(fields) == 2 and fields[0] != "max":
            return _ratio(fields[0], fields[1])
        return None
    quota = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    period = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _ratio(quota.strip(), period.strip())


def _ratio(quota: str, period: str) -> Optional[float]:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def limit_blas_threads(n: int = 1) -> bool:
    """Caps the BLAS library NumPy loaded (OpenBLAS, MKL, BLIS) at ``n >= 1`` threads for the
    rest of this process, through threadpoolctl (in the ``serve`` extra). Returns False, and
    changes nothing, when threadpoolctl is not installed.

    For a process whose heavy work is not NumPy's: a server's query runs the network (ONNX
    Runtime or torch) and heatsearch's Rust kernels, while NumPy only multiplies small
    matrices (the query's whitening, the cosines of its hits). OpenBLAS's threads go on
    spinning for a while after each such product, on the cores the next network pass needs:
    measured with ``heatsearch serve`` on the 2-vCPU VM (README, "Serving under load"), a
    1024 x 768 image query took p50 152.7 ms with OpenBLAS's default 2 threads and 121.7 ms
    with 1 (one scale: 91 -> 63 ms). ``heatsearch serve`` calls it with 1 in each worker.
    A library should not call it behind its user's back: it changes the whole process.
    """
    count = _validate.integer(n, "n", minimum=1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(limits=count, user_api="blas")
    return True
