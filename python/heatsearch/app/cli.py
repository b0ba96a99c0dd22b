"""The ``heatsearch`` command line.

    heatsearch demo                               an offline benchmark, start here
    heatsearch index PHOTOS/ -o my.index          index a folder of images
    heatsearch search my.index query.jpg -k 10 --rerank heat --html results.html
    heatsearch explain photo.jpg -o weights.png   what HeW keeps and what it suppresses
    heatsearch evaluate --db vecs.mat --gnd gnd_holidays.mat --postprocess sqrt,l2

Run ``heatsearch COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import HeatsearchError

__all__ = ["main", "build_parser"]

EVAL_METHODS: Dict[str, Optional[str]] = {
    "plain": None,
    "+AQE": "aqe",
    "+alpha-QE": "alpha-qe",
    "+HeR": "heat",
    "+AQE+HeR": "aqe+heat",
    "+diffusion": "diffusion",
}


def _bbox(text: str) -> List[float]:
    parts = [float(v) for v in text.replace(" ", "").split(",")]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"a box is x1,y1,x2,y2 (4 numbers), got {text!r}")
    return parts


# -- index ---------------------------------------------------------------------------------
def cmd_index(args: argparse.Namespace) -> int:
    from .index import Index, IndexConfig
    from .storage import check_target
    from ..whitening import PCAWhitening

    config = IndexConfig(
        backbone=args.backbone,
        layer=args.layer,
        max_size=args.max_size,
        pooling=args.pooling,
        scales=(1.0,) if args.single_scale else IndexConfig.scales,
        whiten="none" if args.no_whiten else "auto",
    )
    whitening = PCAWhitening.load(args.whiten) if args.whiten else None
    # Refuse a target that is not an index before spending the extraction on it.
    check_target(args.output)
    t = time.perf_counter()
    index = Index.build(args.folder, config, whitening=whitening, recursive=not args.no_recursive, progress=not args.quiet)
    index.save(args.output)
    print(f"indexed {len(index)} images in {time.perf_counter() - t:.1f} s -> {args.output}")
    for path, why in index.skipped:
        print(f"  skipped {path}: {why}", file=sys.stderr)
    return 0


# -- search --------------------------------------------------------------------------------
def cmd_search(args: argparse.Namespace) -> int:
    from .index import Index

    index = Index.load(args.index)
    for query in args.queries:
        t = time.perf_counter()
        hits = index.search(query, k=args.k, rerank=args.rerank, bbox=args.bbox)
        print(f"{query}  ({1000 * (time.perf_counter() - t):.0f} ms)")
        for r, hit in enumerate(hits, 1):
            print(f"  {r:3d}  {hit.score:8.4f}  {hit.path}")
        if args.html:
            from .gallery import write_gallery

            out = args.html if len(args.queries) == 1 else args.html.replace(".html", f"-{args.queries.index(query)}.html")
            write_gallery(out, query, hits, title=f"heatsearch: {query}")
            print(f"  wrote {out}")
    return 0


# -- explain -------------------------------------------------------------------------------
def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain_image

    mean, extractor = None, None
    if args.index:
        from .index import Index

        index = Index.load(args.index)
        mean, extractor = index.mean, index._get_extractor()
    elif args.backbone or args.layer:
        from ..vision.extract import Extractor

        extractor = Extractor(backbone=args.backbone or "efficientnet_lite0", layer=args.layer)
    w = explain_image(args.image, args.output, extractor=extractor, mean=mean)
    print(f"wrote {args.output}: HeW weights on a {w.shape[0]} x {w.shape[1]} grid, "
          f"from {w.min():.3g} (most suppressed) to {w.max():.3g}")
    return 0


# -- evaluate ------------------------------------------------------------------------------
def _postprocess(X: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    from ..postprocess import l2_normalize, power_normalize

    for step in steps:
        if step == "sqrt":
            X = power_normalize(X, p=0.5)
        elif step == "l2":
            X = l2_normalize(X)
        elif step != "none":
            raise HeatsearchError(f"--postprocess steps are sqrt, l2 or none, got {step!r}")
    return X


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..eval import compute_map, load_descriptors, load_ground_truth
    from ..pipeline import rank
    from ..postprocess import l2_normalize

    gt = load_ground_truth(args.gnd)
    X = load_descriptors(args.db, expected_count=len(gt.images))
    if X.shape[0] != len(gt.images):
        raise HeatsearchError(f"{args.db}: {X.shape[0]} descriptors, but {args.gnd} lists {len(gt.images)} database images")
    if args.queries:
        Q = load_descriptors(args.queries, expected_count=len(gt.gnd))
    elif gt.query_indices is not None:
        Q = X[gt.query_indices]
    else:
        raise HeatsearchError(f"{args.gnd} has separate query images: pass their descriptors with --queries")
    if Q.shape[0] != len(gt.gnd) or Q.shape[1] != X.shape[1]:
        raise HeatsearchError(f"expected {len(gt.gnd)} query descriptors of dimension {X.shape[1]}, got {Q.shape}")
    steps = [s.strip() for s in args.postprocess.split(",") if s.strip()]
    X, Q = _postprocess(X, steps), _postprocess(Q, steps)
    if args.whiten:
        from ..whitening import PCAWhitening

        w = PCAWhitening.load(args.whiten)
        X, Q = l2_normalize(w.transform(X)), l2_normalize(w.transform(Q))
    protocols = list(gt.protocols)
    methods = args.methods.split(",") if args.methods else list(EVAL_METHODS)
    unknown = [m for m in methods if m not in EVAL_METHODS]
    if unknown:
        raise HeatsearchError(f"unknown methods {unknown}; choose from {list(EVAL_METHODS)}")
    print(f"{X.shape[0]} database, {Q.shape[0]} queries, d = {X.shape[1]}, post-processing: {','.join(steps) or 'none'}"
          f"{' + whitening' if args.whiten else ''}")
    header = "".join(f"{p[:6]:>9}" for p in protocols)
    print(f"{'method':<12}{header}{'time':>9}")
    graph = None
    for name in methods:
        t = time.perf_counter()
        if EVAL_METHODS[name] == "diffusion" and graph is None:
            from ..knn import knn_graph

            graph = knn_graph(X)
        ranks, _ = rank(X, Q, rerank=EVAL_METHODS[name], graph=graph)
        elapsed = time.perf_counter() - t
        maps = "".join(f"{100 * compute_map(ranks, gt.protocol(p)).map:9.2f}" for p in protocols)
        print(f"{name:<12}{maps}{elapsed:8.2f}s")
    return 0


# -- demo ----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import PHOTOS, run_demo

    photos = PHOTOS[: args.photos] if args.photos else PHOTOS
    run_demo(photos=photos, max_size=args.max_size, seed=args.seed, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="heatsearch",
        description="Image retrieval with heat diffusion (HeW aggregation, HeR re-ranking).",
        epilog="Start with `heatsearch demo`. Feature extraction needs the torch extra: pip install 'heatsearch[torch]'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--threads", type=int, help="threads for heatsearch's kernels (default: all cores, or $HEATSEARCH_NUM_THREADS)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="offline copy-detection benchmark: SPoC, MAC, GeM, CroW, HeW, each +/- HeR",
                       description="Builds a small copy-detection benchmark from the photographs shipped with "
                       "scikit-image (crops, rotations, scaling, JPEG, colour, blur, occlusion), extracts features "
                       "with the default backbone and prints mAP for each pooling with and without HeR re-ranking.")
    d.add_argument("--photos", type=int, default=0, help="use only the first N photos (default: all 17)")
    d.add_argument("--max-size", type=int, default=512, help="longer image side for extraction (default 512)")
    d.add_argument("--seed", type=int, default=0, help="seed of the edits (default 0)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("index", help="index a folder of images",
                       description="Extracts, pools and post-processes every image under FOLDER (jpg, png, webp, "
                       "bmp, tiff; recursive) and saves an index directory. Unreadable files are reported and skipped.")
    i.add_argument("folder")
    i.add_argument("-o", "--output", required=True, help="index directory to write (replaced atomically)")
    i.add_argument("--backbone", default="efficientnet_lite0", help="efficientnet_lite0 (default, offline), vgg16, resnet50, resnet101")
    i.add_argument("--layer", default=None, help="backbone layer (default: the backbone's default)")
    i.add_argument("--max-size", type=int, default=1024, help="longer image side, never upscaled (default 1024, the paper)")
    i.add_argument("--pooling", default="hew", help="hew (default), spoc, mac, gem, rmac, crow")
    i.add_argument("--whiten", help="a PCAWhitening .npz fitted on a separate image set (default: learned on "
                   "the indexed images themselves once there are 64 of them)")
    i.add_argument("--no-whiten", action="store_true", help="no whitening at all")
    i.add_argument("--single-scale", action="store_true", help="one scale instead of 1, 1/sqrt(2), 1/2 (faster)")
    i.add_argument("--no-recursive", action="store_true", help="only the folder itself")
    i.add_argument("--quiet", action="store_true", help="no progress bar")
    i.set_defaults(func=cmd_index)

    s = sub.add_parser("search", help="search an index with query images",
                       description="Prints the best matches of each query image, optionally re-ranked.")
    s.add_argument("index")
    s.add_argument("queries", nargs="+", help="query image file(s)")
    s.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    s.add_argument("--rerank", choices=["heat", "aqe", "alpha-qe", "aqe+heat", "diffusion"], help="re-ranking (default none)")
    s.add_argument("--bbox", type=_bbox, help="crop the query to x1,y1,x2,y2 (pixels of the original image)")
    s.add_argument("--html", help="also write an HTML page with thumbnails")
    s.set_defaults(func=cmd_search)

    e = sub.add_parser("explain", help="draw HeW's weight map over an image",
                       description="Writes a PNG of IMAGE with its HeW weights on top: dark regions are the bursty "
                       "features the heat diffusion suppresses.")
    e.add_argument("image")
    e.add_argument("-o", "--output", required=True, help="PNG to write")
    e.add_argument("--index", help="use this index's backbone and centering mean")
    e.add_argument("--backbone", help="backbone when no index is given")
    e.add_argument("--layer", help="layer when no index is given")
    e.set_defaults(func=cmd_explain)

    v = sub.add_parser("evaluate", help="mAP of descriptors on a benchmark, plain and re-ranked",
                       description="Loads descriptors (.npy rows, or MATLAB .mat) and ground truth (revisitop .pkl, "
                       "the authors' .mat, heatsearch JSON) and prints mAP (E/M/H for the revisited datasets) of "
                       "plain search, +AQE, +alpha-QE, +HeR, +AQE+HeR and +diffusion, with timings.")
    v.add_argument("--db", required=True, help="database descriptors (.npy or .mat)")
    v.add_argument("--gnd", required=True, help="ground truth (.pkl, .mat or .json)")
    v.add_argument("--queries", help="query descriptors (default: the database rows of the ground truth's query indices)")
    v.add_argument("--postprocess", default="sqrt,l2", help="comma-separated steps: sqrt, l2, none (default sqrt,l2)")
    v.add_argument("--whiten", help="a PCAWhitening .npz (learned on another dataset), applied last, then L2")
    v.add_argument("--methods", help=f"comma-separated subset of {','.join(EVAL_METHODS)}")
    v.set_defaults(func=cmd_evaluate)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        from ..threads import set_num_threads

        set_num_threads(args.threads)
    try:
        return int(args.func(args))
    except (HeatsearchError, OSError) as e:
        print(f"heatsearch {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
