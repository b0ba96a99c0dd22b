"""Retrieval quality on real multi-view photographs: the numbers behind heatsearch's defaults.

    python tools/quality.py [--data ../shared/data] [--layers head,block15] [--sizes 0,512]

Datasets (../shared/data, see its README):

* ``smvs_paintings``: 91 museum paintings, database = the clean references, queries = phone
  photos (one positive each). The README's reference pipeline (EfficientNet-Lite0 head conv,
  images as stored, signed sqrt + L2, no whitening, no re-ranking) reaches SPoC 33.1, GeM
  34.6, HeW 33.9 mAP: a floor to beat.
* ``phototourism``: 13 photos of 4 landmarks; every photo queries all 13 (itself junk).

For every backbone available offline, layer and image size it extracts the feature maps once,
then pools them with every method, post-processes (signed sqrt + L2, and optionally a
PCA-whitening learned on the DATABASE images, never on the queries, capped at their rank) and
prints mAP with and without HeR. Extraction is the slow part (a few minutes per layer on
2 cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

import heatsearch as hs
from heatsearch.aggregate import pool
from heatsearch.vision.extract import Extractor
from heatsearch.pipeline import rank
from protocols import phototourism, smvs_query_to_database  # the protocols' data, one place

POOLINGS = ("spoc", "mac", "gem", "rmac", "crow", "hew")


def evaluate(fdb, fq, gnd, method: str, whiten: bool) -> Tuple[float, float]:
    # Each image is a list of maps, one per scale: pool each, sum (cirtorch averages; L2
    # removes the difference).
    mean = hs.local_mean([m for f in fdb for m in f]) if method == "hew" else None
    kw = {"mean": mean} if method == "hew" else {}
    X = np.stack([sum(pool(m, method, **kw) for m in f) for f in fdb]).astype(np.float64)
    Q = np.stack([sum(pool(m, method, **kw) for m in f) for f in fq]).astype(np.float64)
    post = hs.PostProcess.fit(X, power=0.5) if whiten else hs.PostProcess()
    X, Q = post(X), post(Q)
    plain = hs.compute_map(rank(X, Q)[0], gnd).map
    her = hs.compute_map(rank(X, Q, rerank="heat")[0], gnd).map
    return 100 * plain, 100 * her


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--layers", default="head,block15,block14,block10")
    ap.add_argument("--sizes", default="0,512", help="max sides; 0 = as stored")
    ap.add_argument("--scales", default="1", help="multi-scale factors, e.g. 1,0.707,0.5")
    ap.add_argument("--poolings", default=",".join(POOLINGS))
    args = ap.parse_args(argv)
    data = Path(args.data)
    sets = {"smvs_paintings": smvs_query_to_database(data), "phototourism": phototourism(data)}
    scales = tuple(float(s) for s in args.scales.split(","))
    print(f"| layer | max side | scales | pooling | whitening | smvs mAP | smvs +HeR | phototourism mAP | +HeR |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layer in args.layers.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            ex = Extractor(args.backbone, layer=layer, max_size=size or None, scales=scales)
            t = time.perf_counter()
            maps = {}
            for name, (db, queries, _) in sets.items():
                cache = {}
                for p in list(db) + list(queries):
                    if p not in cache:
                        m = ex.feature_map(str(p))
                        cache[p] = [m] if isinstance(m, np.ndarray) else list(m)
                maps[name] = ([cache[p] for p in db], [cache[p] for p in queries])
            dt = time.perf_counter() - t
            for method in args.poolings.split(","):
                for whiten in (False, True):
                    cells = []
                    for name, (_, _, gnd) in sets.items():
                        fdb, fq = maps[name]
                        if whiten and name == "phototourism":
                            cells += ["-", "-"]
                            continue
                        a, b = evaluate(fdb, fq, gnd, method, whiten)
                        cells += [f"{a:.1f}", f"{b:.1f}"]
                    print(f"| {layer} | {size or 'stored'} | {args.scales} | {method} | {'db' if whiten else 'none'} | " + " | ".join(cells) + " |", flush=True)
            print(f"<!-- {layer} @ {size or 'stored'}: extraction {dt:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
