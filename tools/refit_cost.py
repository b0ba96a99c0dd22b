"""Time and memory of re-learning an index's whitening and of its near-duplicate search.

    python tools/refit_cost.py [--rows 20000] [--channels 1280]

Builds, in a temporary folder, a saved index of ``--rows`` random non-negative pooled rows
(MAC pooling, so no HeW mean is needed; every 10th row a scaled copy of the one before it,
so the whitening finds near-duplicate groups), then, in a fresh process that loads it
(memory-mapped, as ``heatsearch add`` does):

* ``duplicates``: :meth:`Index.duplicates` at its default, split into learning and applying
  the duplicates' whitening (``Index._duplicate_rows``) and the pairs' search;
* ``refit``: :meth:`Index.refit_whitening` (what an "auto" index does when it has doubled),
  with the peak resident memory above the loaded index (``getrusage``'s ``ru_maxrss``).

Each step runs in a process of its own (building the index in this one would leave its peak
in the children's ``ru_maxrss``).

README, "Descriptor store" and "Near-duplicates", quote its output.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from typing import List, Optional

import numpy as np


def _build(folder: str, rows: int, channels: int) -> None:
    from heatsearch import PostProcess
    from heatsearch.app.index import Index, IndexConfig

    rng = np.random.default_rng(0)
    pooled = np.abs(rng.standard_normal((rows, channels))).astype(np.float32)
    pooled[1::10] = pooled[0::10][: len(pooled[1::10])] * 1.5
    config = IndexConfig(whiten="none", pooling="mac")
    descriptors = PostProcess(None, power=config.power)(pooled.astype(np.float64)).astype(np.float32)
    root = os.path.join(folder, "images")
    Index(config=config, paths=[os.path.join(root, f"{i}.jpg") for i in range(rows)], descriptors=descriptors,
          pooled=pooled, root=root).save(os.path.join(folder, "index"))


def _measure(folder: str, what: str) -> None:
    from dataclasses import replace

    from heatsearch import duplicate_groups
    from heatsearch.app.index import Index

    warnings.simplefilter("ignore")
    index = Index.load(os.path.join(folder, "index"))
    index.config = replace(index.config, whiten="auto")
    if what in ("all", "duplicates"):
        t = time.perf_counter()
        X = index._duplicate_rows()
        learned = time.perf_counter() - t
        t = time.perf_counter()
        groups = duplicate_groups(X, index.duplicate_threshold)
        print(f"duplicates: learn and apply the whitening {learned:.2f} s, search {time.perf_counter() - t:.2f} s "
              f"({len(groups)} groups)")
    if what in ("all", "refit"):
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        index.refit_whitening()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"refit: {time.perf_counter() - t:.1f} s, peak RSS {peak / 1024:.0f} MB "
              f"(+{(peak - base) / 1024:.0f} MB over the loaded index)")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--channels", type=int, default=1280)
    parser.add_argument("--only", choices=["all", "duplicates", "refit"], default="all")
    parser.add_argument("--_build", help=argparse.SUPPRESS)
    parser.add_argument("--_measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._build:
        _build(args._build, args.rows, args.channels)
        return 0
    if args._measure:
        _measure(args._measure, args.only)
        return 0
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"{args.rows} rows x {args.channels} channels; load average {' '.join(load)}")
    # Each step in a process of its own: a child inherits its parent's peak RSS across fork.
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--channels", str(args.channels),
                        "--_build", folder], check=True)
        for what in (["duplicates", "refit"] if args.only == "all" else [args.only]):
            subprocess.run([sys.executable, __file__, "--only", what, "--_measure", folder], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
