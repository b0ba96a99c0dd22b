"""Spatial verification on real photographs: mAP and the added time per query.

    PYTHONPATH=python python tools/spatial_verification.py [--data ../shared/data] \\
        [--set smvs|phototourism] [--whiten auto|none] [--depths 20,50,100] \\
        [--features sift,cnn] [--index /tmp/heatsearch-spatial]

``--set smvs`` (default): the 91 smvs_paintings references are the database, the 91 phone
photos the queries, one positive each (protocol (a) of issue 11). ``--set phototourism``: the
13 photos of 4 landmarks, each querying all 13 (itself junk).

Builds the default index of the database (EfficientNet-Lite0, longer side at most 1024, three
scales, HeW, whitening learned on the database once it holds 64 images; ``--whiten none`` for
none) once and caches it with ``Index.save`` (``--index`` + ``-SET-WHITEN``), then ranks the
queries with the plain search and with HeR, and verifies the top of each ranking with every
kind of local features (each at its default minimum inlier count).

Every (query, candidate) pair is verified once and its inlier count reused for every depth
and threshold (the count of a pair does not depend on them: OpenCV's RANSAC is seeded). The
added time per query is summed from what was measured for that query: its own features, and
for each of its top-k candidates the candidate's features (cold: an empty cache) and the
matching; warm = with every database image's features cached. Medians over the queries.

Prints the markdown table of the README's "Spatial verification" and a second one of mAP
against the minimum inlier count.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import heatsearch as hs
from heatsearch.app.index import Index, IndexConfig
from heatsearch.vision.spatial import SpatialVerifier, spatial_order
from protocols import phototourism, smvs_query_to_database  # the protocols' data, one place


Gnd = List[Dict[str, np.ndarray]]


def _smvs(data: Path) -> Tuple[Path, List[str], Gnd]:
    """Database = the references (their folder), queries = the phone photos, one positive each:
    protocol (a) of tools/protocols.py."""
    refs, queries, gnd = smvs_query_to_database(data)
    return Path(refs[0]).parent, queries, gnd


def _phototourism(data: Path) -> Tuple[Path, List[str], Gnd]:
    """Every photo queries all 13 (their folder); itself junk; positives: the other photos of
    its landmark: protocol (d) of tools/protocols.py."""
    photos, queries, gnd = phototourism(data)
    return Path(photos[0]).parent, queries, gnd


SETS = {"smvs": _smvs, "phototourism": _phototourism}


def _index(ref: Path, cache: str, whiten: str) -> Index:
    if os.path.isdir(cache):
        return Index.load(cache)
    index = Index.build(ref, IndexConfig(whiten=whiten))
    index.save(cache)
    return index


def _map(ranks: np.ndarray, gnd: Gnd) -> float:
    return 100 * hs.compute_map(ranks, gnd).map


def _reordered(ranks: np.ndarray, inliers: List[List[Optional[int]]], depth: int, min_inliers: int) -> np.ndarray:
    out = ranks.copy()
    for i, counts in enumerate(inliers):
        order = spatial_order(counts[:depth], min_inliers)
        out[i, :depth] = ranks[i, :depth][order]
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("HEATSEARCH_SHARED_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--set", default="smvs", choices=tuple(SETS), help="the dataset (default smvs)")
    ap.add_argument("--index", default="/tmp/heatsearch-spatial", help="where the index is cached (+ '-SET-WHITEN')")
    ap.add_argument("--whiten", default="auto", choices=("auto", "none"), help="the index's whitening (default auto)")
    ap.add_argument("--depths", default="20,50,100")
    ap.add_argument("--features", default="sift,cnn")
    ap.add_argument("--min-inliers", default="0,4,6,8,10,12,15,20,25,30",
                    help="thresholds of the second table; the first uses each method's default")
    ap.add_argument("--queries", type=int, default=0, help="only the first N queries (0: all)")
    ap.add_argument("--end-to-end", type=int, default=5, metavar="N",
                    help="also time Index.search itself on N evenly spaced queries (0: not)")
    args = ap.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",")]
    thresholds = [int(t) for t in args.min_inliers.split(",")]
    ref, queries, gnd = SETS[args.set](Path(args.data))
    if args.queries:
        queries, gnd = queries[: args.queries], gnd[: args.queries]
    index = _index(ref, f"{args.index}-{args.set}-{args.whiten}", args.whiten)
    paths = index.paths
    assert paths == sorted(str(p) for p in ref.glob("*.jpg")), "the cached index is not of this set"

    t = time.perf_counter()
    Q = np.stack([index.describe(q) for q in queries])
    describe_s = (time.perf_counter() - t) / len(queries)
    X = np.asarray(index.descriptors)
    firsts = {"plain": hs.rank(X, Q)[0], "HeR": hs.rank(X, Q, rerank="heat")[0]}
    deepest = max(depths)

    rows = []
    threshold_rows = []
    for name, ranks in firsts.items():
        rows.append((name, "-", "-", f"{_map(ranks, gnd):.1f}", "-", "-"))
    for kind in args.features.split(","):
        verifier = SpatialVerifier(kind, extractor=index._get_extractor() if kind == "cnn" else None)
        # Database features once each (cold cost per image), then query features and matches.
        feat_s: Dict[str, float] = {}
        feats = {}
        for p in paths:
            t = time.perf_counter()
            feats[p] = verifier.describe(p)
            feat_s[p] = time.perf_counter() - t
        pair_inliers: Dict[Tuple[int, str], int] = {}
        match_s: Dict[Tuple[int, str], float] = {}
        query_s = []
        for i, q in enumerate(queries):
            t = time.perf_counter()
            qf = verifier.describe(q)
            query_s.append(time.perf_counter() - t)
            todo = {paths[r] for ranks in firsts.values() for r in ranks[i, :deepest]}
            for p in sorted(todo):
                t = time.perf_counter()
                pair_inliers[i, p] = verifier.inliers(qf, feats[p])
                match_s[i, p] = time.perf_counter() - t
        for name, ranks in firsts.items():
            inl = [[pair_inliers[i, paths[r]] for r in ranks[i, :deepest]] for i in range(len(queries))]
            for k in depths:
                top = [[paths[r] for r in ranks[i, :k]] for i in range(len(queries))]
                warm = [query_s[i] + sum(match_s[i, p] for p in top[i]) for i in range(len(queries))]
                cold = [warm[i] + sum(feat_s[p] for p in top[i]) for i in range(len(queries))]
                m = _map(_reordered(ranks, inl, k, verifier.min_inliers), gnd)
                rows.append((f"{name} + spatial ({kind})", str(k), str(verifier.min_inliers), f"{m:.1f}",
                             f"{np.median(cold):.2f}", f"{np.median(warm):.2f}"))
                threshold_rows.append((f"{name} + spatial ({kind})", k,
                                       [_map(_reordered(ranks, inl, k, t), gnd) for t in thresholds]))
            if name == "plain":
                # How many inliers do wrong and right candidates reach? (the threshold's scale)
                wrong, right = [], []
                for i in range(len(queries)):
                    ok, junk = set(gnd[i]["ok"].tolist()), set(gnd[i]["junk"].tolist())
                    pairs = list(zip(ranks[i, :deepest].tolist(), inl[i]))
                    wrong.append(max((c for r, c in pairs if r not in ok and r not in junk), default=0))
                    right += [c for r, c in pairs if r in ok]
                print(f"<!-- {kind}: best wrong candidate's inliers per query: median {np.median(wrong):.0f}, "
                      f"90th percentile {np.percentile(wrong, 90):.0f}, max {max(wrong)}; positives' inliers "
                      f"(in the top {deepest}): median {np.median(right):.0f}, "
                      f"10th percentile {np.percentile(right, 10):.0f} -->", flush=True)
        print(f"<!-- {kind}: database image features {np.median(list(feat_s.values())) * 1000:.0f} ms (median), "
              f"query {np.median(query_s) * 1000:.0f} ms, one match {np.median(list(match_s.values())) * 1000:.1f} ms -->",
              flush=True)

    print(f"\n{args.set}, {len(queries)} queries -> {len(paths)} database images; first pass: the default index "
          f"(whitening {args.whiten}; query description {describe_s:.2f} s a query, not included below). Machine: {platform.machine()}, "
          f"{os.cpu_count()} CPUs shared with other jobs (noisy timings), Python {platform.python_version()}.\n")
    print("| ranking | k verified | min inliers | mAP | added s/query cold | added s/query warm |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if args.end_to_end:
        step = max(1, len(queries) // args.end_to_end)
        _end_to_end(index, queries[::step][: args.end_to_end], args.features.split(","), depths)
    print("\n| ranking | k | " + " | ".join(f"min {t}" for t in thresholds) + " |")
    print("|---|---|" + "---|" * len(thresholds))
    for name, k, maps in threshold_rows:
        print(f"| {name} | {k} | " + " | ".join(f"{m:.1f}" for m in maps) + " |")


def _end_to_end(index: Index, queries: Sequence[str], kinds: Sequence[str], depths: Sequence[int]) -> None:
    """The added time as a user meets it: ``Index.search(q, rerank="spatial")`` less
    ``Index.search(q)``, cold (a new verifier for each query: nothing cached) and warm (the
    same search again), medians over ``queries``."""
    print(f"\nEnd to end, `Index.search(query, k=10, rerank=\"spatial\")` less `Index.search(query, k=10)`, "
          f"{len(queries)} evenly spaced queries, medians:\n")
    print("| features | k verified | added s/query cold | added s/query warm |")
    print("|---|---|---|---|")
    index.warmup()
    for kind in kinds:
        for k in depths:
            cold, warm = [], []
            for q in queries:
                t = time.perf_counter()
                index.search(q, k=10)
                plain = time.perf_counter() - t
                index.spatial = SpatialVerifier(kind, depth=k)
                for out in (cold, warm):
                    t = time.perf_counter()
                    index.search(q, k=10, rerank="spatial")
                    out.append(time.perf_counter() - t - plain)
            print(f"| {kind} | {k} | {np.median(cold):.2f} | {np.median(warm):.2f} |", flush=True)


if __name__ == "__main__":
    main()
