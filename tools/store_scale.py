"""The descriptor store at scale (README, "Descriptor store"): one run of each measurement on an
index of N x 512 random unit rows (default N = 1,000,000, 2 GB of float32):

1. adding 1,000 rows to the saved index and saving it (format version 3: only the new rows are
   written), against version 2's save of the same change (the whole descriptors array
   concatenated in memory and rewritten, fsync-ed; its pooled.npy left out, so a lower bound):
   time and bytes written (``wchar`` of /proc/self/io);
2. exact search of 100 queries (k = 10) streamed from the shards of the loaded index, against
   the same search over one array in memory (``heatsearch.search.search``);
3. the same streamed search in a child process whose address space (RLIMIT_AS) is limited to
   what it uses after importing heatsearch plus 256 MB and 64 MB per search thread (the GEMM's
   scratch), far below the index's bytes: time, and its peak resident memory (VmHWM).

    python tools/store_scale.py [--rows N] [--folder DIR]

Prints one line of JSON per measurement, with /proc/loadavg at the time. The folder (default: a
new temporary one) keeps the index between runs; it is not removed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from heatsearch.app.index import Index
from heatsearch.search import search

DIM = 512
CHUNK = 100_000
ADDED = 1000

_LIMITED = r"""
import json, resource, sys, time
import numpy as np
from heatsearch.app.index import Index
def status():
    return {l.split(":")[0]: int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(("VmSize", "VmHWM"))}
threads = int(sys.argv[3])
limit = status()["VmSize"] + (256 << 20) + threads * (64 << 20)  # the GEMM's scratch: 64 MB a thread
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
index = Index.load(sys.argv[1])
Q = np.load(sys.argv[2])
t = time.perf_counter()
hits = index.search_many(Q, k=10)
elapsed = time.perf_counter() - t
print(json.dumps({"limit_bytes": limit, "index_rows": len(index), "search_s": elapsed,
                  "peak_rss_bytes": status()["VmHWM"], "first_hit": hits[0][0].row}))
"""


def rows(seed: int, n: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def written() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar"))


def report(what: str, **values: object) -> None:
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps({"measurement": what, **values, "loadavg": " ".join(load)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--folder", default=None)
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="heatsearch-store-"))
    target = folder / "idx"
    if not (target / "index.json").exists():
        index = Index()
        t = time.perf_counter()
        for start in range(0, args.rows, CHUNK):
            index.add_descriptors(rows(start, min(CHUNK, args.rows - start)))
            index.save(target)
        report("build", rows=args.rows, seconds=round(time.perf_counter() - t, 1))
    Q = rows(10**9, 100)
    np.save(folder / "queries.npy", Q)

    # 1. add 1,000 rows: version 3 against version 2's rewrite.
    index = Index.load(target)
    n = len(index)
    new = rows(10**9 + 1 + n, ADDED)
    index.add_descriptors(new, [f"added-{n + i}" for i in range(ADDED)])
    before, t = written(), time.perf_counter()
    index.save(target)
    report("add 1000 rows + save, format 3", rows=n, seconds=round(time.perf_counter() - t, 3),
           bytes_written=written() - before)
    X = np.array(Index.load(target).descriptors[:n])
    before, t = written(), time.perf_counter()
    joined = np.concatenate([X, new])
    with open(folder / "v2-descriptors.npy", "wb") as f:
        np.save(f, joined)
        f.flush()
        os.fsync(f.fileno())
    report("add 1000 rows + save, format 2 (descriptors.npy rewritten)", rows=n,
           seconds=round(time.perf_counter() - t, 3), bytes_written=written() - before)
    del joined
    os.unlink(folder / "v2-descriptors.npy")

    # 2. search: streamed from the shards against one array in memory.
    loaded = Index.load(target)
    loaded.search_many(Q[:2], k=10)  # threads started, first windows touched
    t = time.perf_counter()
    hits = loaded.search_many(Q, k=10)
    streamed = time.perf_counter() - t
    report("search 100 queries k=10, streamed from shards", rows=len(loaded), seconds=round(streamed, 3))
    X = np.array(loaded.descriptors)
    search(X, Q[:2], 10)
    t = time.perf_counter()
    ranks, _ = search(X, Q, 10)
    report("search 100 queries k=10, one array in memory", rows=len(X), seconds=round(time.perf_counter() - t, 3))
    assert [[h.row for h in hh] for hh in hits] == ranks.tolist()
    del X

    # 3. under an address-space limit far below the index's bytes.
    env = dict(os.environ, MALLOC_ARENA_MAX="1", HEATSEARCH_NUM_THREADS=os.environ.get("HEATSEARCH_NUM_THREADS", "1"))
    out = subprocess.run([sys.executable, "-c", _LIMITED, str(target), str(folder / "queries.npy"), env["HEATSEARCH_NUM_THREADS"]],
                         capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode:
        raise SystemExit(out.stderr)
    result = json.loads(out.stdout)
    report("search under RLIMIT_AS", index_bytes=len(loaded) * DIM * 4, **result,
           threads=env["HEATSEARCH_NUM_THREADS"])


if __name__ == "__main__":
    main()
