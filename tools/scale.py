"""The scale benchmark of the README ("Scale"): exact search against heatsearch's ANN backends
(:mod:`heatsearch.ann`) on INRIA Holidays hidden among synthetic distractors.

The protocol (Holidays plus distractors):

* Real rows: the paper authors' 1491 Holidays HeW descriptors (``holidays/vecs_ho.mat``)
  with the README's Holidays post-processing (signed square root, then L2; 80.24 mAP exact,
  tests/test_rerank.py), rows ``0 .. 1490`` of the database; the 500 Holidays queries are
  their rows ``qidx`` (each query's own row is junk, as in ``gnd_holidays.mat``).
* Distractors: ``n - 1491`` rows drawn from a Gaussian fitted to the 1491 post-processed real
  rows (their mean and full 512 x 512 covariance, sampled through its eigendecomposition),
  then L2-normalised like real rows. They match the real rows' first two moments (a distractor's
  best cosine to a query averages 0.905 against 0.969 for the query's true best match at
  100k), but not their cluster structure, which makes them a hard case for the ANN indexes
  (IVF's cells and HNSW's graph exploit clusters).
* Generated out of core: written block by block (:data:`BLOCK` rows) into a ``.npy`` memmap,
  float32 or float16 (``--dtype float16``: 10M x 512 is 10 GB instead of 20 GB), and
  searched block by block, so 10M rows never need to fit in RAM.

Measured for each n and method (``exact``, ``ivfpq``, ``hnsw``), each method in its own
process (so its peak RSS is its own): build time (ANN training + adding; exact: none), disk
(the ANN file; every method also keeps the ``n x d`` descriptors, which the ANN's exact
re-scoring reads), peak RSS (``VmHWM``: memory-mapped descriptor pages count when touched),
query latency with ``--threads`` threads (``batch``: the 500 queries in one call, per query;
``single``: one query per call, median), recall@100 against exact search, and the Holidays
mAP of the top-1000 ranking (positives beyond 1000 count as not retrieved, for every method).

Usage::

    python tools/scale.py --n 100000 1000000 --work /tmp/scale --json scale.json
    python tools/scale.py --n 10000000 --dtype float16 --single-queries 20 --work /big/disk   # 10M: ~10 GB
    python tools/scale.py --crossover /tmp/scale/db-1000000-float32.npy --n 100000 200000 400000 1000000 --work /tmp/scale
    python tools/scale.py --diffusion --n 1491 20000 100000 --work /tmp/scale   # global graph vs shortlist graph

Reads ``$HEATSEARCH_SHARED_DATA`` (default ``../shared/data``) for Holidays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: Rows generated, and exactly searched, at a time (200 MB of float32 at d = 512).
BLOCK = 100_000
#: Recall is measured at this depth, mAP on a ranking this long.
RECALL_AT = 100
MAP_DEPTH = 1000
#: Single-query latency: the median over this many queries (``--single-queries``; fewer at 10M,
#: where one exact query streams all 10M rows).
SINGLE_QUERIES = 100
METHODS = ("exact", "ivfpq", "hnsw")


def shared_data() -> Path:
    env = os.environ.get("HEATSEARCH_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def holidays() -> Tuple[np.ndarray, np.ndarray, List[Dict[str, np.ndarray]]]:
    """``(Y (1491, 512) float64 post-processed rows, qidx (500,), gnd)`` (0-based)."""
    import heatsearch as hs

    folder = shared_data() / "holidays"
    X = hs.load_descriptors(folder / "vecs_ho.mat").astype(np.float64)
    Y = np.sign(X) * np.sqrt(np.abs(X))
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    gt = hs.load_ground_truth(folder / "gnd_holidays.mat")
    gnd = [{"ok": np.asarray(g["ok"]), "junk": np.asarray(g.get("junk", []))} for g in gt.gnd]
    return Y, np.asarray(gt.query_indices, np.int64), gnd


class Distractors:
    """A Gaussian fitted to the real rows ``Y (m, d)`` (mean, full covariance), sampled through
    the covariance's eigendecomposition, L2-normalised."""

    def __init__(self, Y: np.ndarray, seed: int = 0) -> None:
        self.mean = Y.mean(axis=0)
        w, V = np.linalg.eigh(np.cov(Y, rowvar=False))
        self.L = V * np.sqrt(np.clip(w, 0.0, None))
        self.rng = np.random.default_rng(seed)

    def draw(self, count: int) -> np.ndarray:
        D = self.mean + self.rng.standard_normal((count, self.L.shape[0])) @ self.L.T
        return D / np.linalg.norm(D, axis=1, keepdims=True)


def database(n: int, seed: int = 0) -> np.ndarray:
    """The ``(n, 512)`` float32 database in memory (real rows first): for small n."""
    Y, _, _ = holidays()
    return np.vstack([Y, Distractors(Y, seed).draw(n - len(Y))]).astype(np.float32)


def generate(path: Path, n: int, dtype: str, seed: int = 0) -> None:
    """Writes the ``(n, 512)`` database (real rows first, then distractors) to ``path``,
    :data:`BLOCK` rows at a time (out of core)."""
    Y, _, _ = holidays()
    if n < len(Y):
        raise SystemExit(f"--n must be at least {len(Y)} (the real rows), got {n}")
    model = Distractors(Y, seed)
    tmp = path.with_name(path.name + ".part")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=(n, Y.shape[1]))
    out[: len(Y)] = Y
    for start in range(len(Y), n, BLOCK):
        stop = min(n, start + BLOCK)
        out[start:stop] = model.draw(stop - start)
    out.flush()
    del out
    os.replace(tmp, path)


def blocks(db: np.ndarray):  # type: ignore[no-untyped-def]
    for start in range(0, db.shape[0], BLOCK):
        yield np.ascontiguousarray(db[start : start + BLOCK], np.float32)


def exact_topk(db: np.ndarray, Q: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """heatsearch's exact search, streamed over blocks of ``db`` with a running top-k."""
    import heatsearch as hs

    best_i = np.empty((len(Q), 0), np.int64)
    best_s = np.empty((len(Q), 0), np.float32)
    for start, block in zip(range(0, db.shape[0], BLOCK), blocks(db)):
        r, s = hs.search(block, Q, k)
        ids = np.concatenate([best_i, r + start], axis=1)
        sc = np.concatenate([best_s, s], axis=1)
        order = np.argsort(-sc, axis=1, kind="stable")[:, :k]
        best_i, best_s = np.take_along_axis(ids, order, 1), np.take_along_axis(sc, order, 1)
    return best_i, best_s


def truth_file(db_path: Path) -> Path:
    """Where exact search leaves its top-1000 of the Holidays queries on ``db_path`` (beside it,
    named after it: a database of another n or dtype has its own)."""
    return db_path.with_name(f"truth-{db_path.stem}.npy")


def vm(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (0 where there is none)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_one(db_path: Path, method: str, threads: int, work: Path, singles: int = SINGLE_QUERIES,
            reuse: bool = False) -> Dict[str, Any]:
    """One method on one database, in this process."""
    import heatsearch as hs
    from heatsearch.ann import AnnIndex, ann_params

    hs.set_num_threads(threads)
    db = np.load(db_path, mmap_mode="r")
    n = db.shape[0]
    _, qidx, gnd = holidays()
    Q = np.ascontiguousarray(db[qidx], np.float32)
    truth = truth_file(db_path)
    out: Dict[str, Any] = {"n": n, "method": method, "dtype": str(db.dtype), "threads": threads}
    if method == "exact":
        t = time.perf_counter()
        ranks, _ = exact_topk(db, Q, MAP_DEPTH)
        out["batch1000_ms"] = 1e3 * (time.perf_counter() - t) / len(Q)
        np.save(truth, ranks)
        times = []
        for i in range(min(singles, len(Q))):
            t = time.perf_counter()
            exact_topk(db, Q[i : i + 1], MAP_DEPTH)
            times.append(time.perf_counter() - t)
        out["single_ms"] = 1e3 * float(np.median(times))
        out["build_s"] = 0.0
        out["ann_disk_bytes"] = 0
    else:
        path = work / f"{method}-{n}.faiss"
        if reuse and path.exists():  # searched with today's rule (its search parameters)
            out["build_s"] = None
        else:
            t = time.perf_counter()
            ann = AnnIndex.build(blocks(db), method, n=n)
            out["build_s"] = time.perf_counter() - t
            ann.save(path)
            del ann
        out["ann_disk_bytes"] = path.stat().st_size
        ann = AnnIndex.load(path)
        ann.params = ann_params(method, n, db.shape[1])  # today's rule (search parameters of a reused file too)
        out["params"] = {k: v for k, v in ann.params.to_dict().items() if v is not None}
        out["rss_loaded_bytes"] = vm("VmRSS")
        exact = db  # float16 rows are read as float32 for the re-scoring
        t = time.perf_counter()
        ranks, _ = ann.search(Q, MAP_DEPTH, exact=exact)
        out["batch1000_ms"] = 1e3 * (time.perf_counter() - t) / len(Q)
        times = []
        for i in range(min(singles, len(Q))):
            t = time.perf_counter()
            ann.search(Q[i : i + 1], RECALL_AT, exact=exact)
            times.append(time.perf_counter() - t)
        out["single_ms"] = 1e3 * float(np.median(times))
        # k = 100 as a service would ask (the shortlist is refine * 100)
        t = time.perf_counter()
        r100, _ = ann.search(Q, RECALL_AT, exact=exact)
        out["batch100_ms"] = 1e3 * (time.perf_counter() - t) / len(Q)
        true = np.load(truth)[:, :RECALL_AT]
        out["recall100"] = float(np.mean([len(np.intersect1d(a, b)) / RECALL_AT for a, b in zip(r100, true)]))
    out["map"] = 100 * float(hs.compute_map(np.where(ranks < 0, 0, ranks), gnd).map)
    out["db_disk_bytes"] = db_path.stat().st_size
    out["peak_rss_bytes"] = vm("VmHWM")
    return out


def crossover(db_path: Path, sizes: List[int], threads: int, work: Path) -> List[Dict[str, Any]]:
    """Per-query latency (k = 100, the 500 Holidays queries) of exact search on the first n
    rows of ``db_path`` for each n of ``sizes``, and of each ANN file ``work/<kind>-<n>.faiss``
    found for those n, measured back to back in one process (so under the same load): where
    an ANN becomes faster than exact search (``heatsearch.ann.AUTO_MIN_ROWS``)."""
    import heatsearch as hs
    from heatsearch.ann import AnnIndex, ann_params

    hs.set_num_threads(threads)
    full = np.load(db_path, mmap_mode="r")
    _, qidx, _ = holidays()
    Q = np.ascontiguousarray(full[qidx], np.float32)
    rows = []
    for n in sizes:
        db = full[:n]
        for method in ("exact",) + tuple(m for m in METHODS if (work / f"{m}-{n}.faiss").exists()):
            ann = None if method == "exact" else AnnIndex.load(work / f"{method}-{n}.faiss")
            if ann is not None:  # today's search parameters (nprobe, efSearch, refine) for a file built before
                ann.params = ann_params(method, n, full.shape[1])

            def one(q: np.ndarray) -> Any:
                return exact_topk(db, q, RECALL_AT) if ann is None else ann.search(q, RECALL_AT, exact=db)

            one(Q[:50])  # warm: page in the rows
            t = time.perf_counter()
            one(Q)
            batch = 1e3 * (time.perf_counter() - t) / len(Q)
            times = []
            for i in range(SINGLE_QUERIES):
                t = time.perf_counter()
                one(Q[i : i + 1])
                times.append(time.perf_counter() - t)
            rows.append({"n": n, "method": method, "batch_ms": batch, "single_ms": 1e3 * float(np.median(times)),
                         "loadavg": open("/proc/loadavg").read().split()[:3]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


class _ExactShortlist:
    """The shortlist an ANN index would give, made exact (heatsearch's search): isolates the
    effect of diffusing on the shortlist's own graph from the ANN's recall."""

    def search(self, Q: np.ndarray, k: int, *, exact: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        import heatsearch as hs

        return hs.search(exact, Q, k)


def diffusion_graphs(sizes: List[int], threads: int) -> List[Dict[str, Any]]:
    """Holidays mAP (top-1000 ranking) plain, with diffusion on the whole database's kNN graph
    (what :class:`heatsearch.Index` does with exact search) and with diffusion on each query's
    shortlist graph (its exact top 1000, what an index with an ANN does:
    ``heatsearch.app.index._ann_rank``), on Holidays plus ``n - 1491`` distractors."""
    import heatsearch as hs
    from heatsearch.app.index import _ann_rank
    from heatsearch.pipeline import rank

    hs.set_num_threads(threads)
    _, qidx, gnd = holidays()
    rows = []
    for n in sizes:
        db = database(n)
        Q = np.ascontiguousarray(db[qidx])
        out: Dict[str, Any] = {"n": n}
        for name, run in (
            ("plain", lambda: rank(db, Q, k=MAP_DEPTH)),
            ("diffusion, global graph", lambda: rank(db, Q, k=MAP_DEPTH, rerank="diffusion")),
            ("diffusion, shortlist graph", lambda: _ann_rank(_ExactShortlist(), db, Q, MAP_DEPTH, "diffusion")),
        ):
            t = time.perf_counter()
            ranks, _ = run()
            out[name] = {"map": 100 * float(hs.compute_map(ranks, gnd).map), "s": time.perf_counter() - t}
        out.update(loadavg=open("/proc/loadavg").read().split()[:3], threads=threads,
                   machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
                   time=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
        print(json.dumps(out), flush=True)
        rows.append(out)
    return rows


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, required=True, help="folder for the generated databases and ANN files")
    ap.add_argument("--single-queries", type=int, default=SINGLE_QUERIES, help="queries timed one by one (median)")
    ap.add_argument("--reuse", action="store_true",
                    help="search the ANN files already in --work (today's search parameters) instead of building them")
    ap.add_argument("--json", type=Path, help="append the results here (one JSON object a line)")
    ap.add_argument("--crossover", type=Path, metavar="DB",
                    help="latency of exact search on the first n rows of DB for each --n, and of the ANN files in --work")
    ap.add_argument("--diffusion", action="store_true",
                    help="Holidays mAP with diffusion on the whole database's kNN graph against the shortlist's, for each --n")
    ap.add_argument("--one", nargs=2, metavar=("DB", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.crossover:
        crossover(args.crossover, args.n, args.threads, args.work)
        return 0
    if args.single_queries < 1 or min(args.n) < 1491:
        raise SystemExit(f"--single-queries must be >= 1 and every --n >= 1491 (the real rows), got "
                         f"{args.single_queries} and {args.n}")
    if args.diffusion:
        diffusion_graphs(args.n, args.threads)
        return 0
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), args.one[1], args.threads, args.work, args.single_queries, args.reuse)))
        return 0
    for n in args.n:
        db = args.work / f"db-{n}-{args.dtype}.npy"
        if not db.exists():
            t = time.perf_counter()
            generate(db, n, args.dtype)
            print(f"generated {db} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        # exact first: the truth the others' recall is measured against (run when asked, or
        # when no earlier run left it)
        first = ["exact"] if "exact" in args.methods or not truth_file(db).exists() else []
        methods = first + [m for m in args.methods if m != "exact"]
        for method in methods:
            load = open("/proc/loadavg").read().split()[:3]
            proc = subprocess.run(
                [sys.executable, __file__, "--work", str(args.work), "--threads", str(args.threads),
                 "--single-queries", str(args.single_queries), *(["--reuse"] if args.reuse else []),
                 "--one", str(db), method],
                check=True, capture_output=True, text=True,
            )
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res.update(loadavg_before=load, loadavg_after=open("/proc/loadavg").read().split()[:3],
                       machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
                       time=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
            print(json.dumps(res), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
