"""The ``heatsearch`` command line.

    heatsearch demo                               an offline benchmark, start here
    heatsearch index PHOTOS/ -o my.index          index a folder of images
    heatsearch add my.index new.jpg MORE/         add images (files or folders)
    heatsearch remove my.index old.jpg GONE/      remove images (files or folders)
    heatsearch info my.index                      what an index holds and how it was built
    heatsearch search my.index q1.jpg q2.jpg -k 10 --rerank heat --html results.html
    heatsearch duplicates my.index                   groups of near-duplicate images
    heatsearch explain photo.jpg -o weights.png   what HeW keeps and what it down-weights
    heatsearch serve my.index --port 8000         an HTTP API and a search page (127.0.0.1)
    heatsearch evaluate --db my.index --gnd truth.json

Run ``heatsearch COMMAND --help`` for the options of each.

What a person sees: every error is one line, ``heatsearch COMMAND: error: ...``, with exit
code 2 (argument mistakes, missing or unreadable files, bad indexes; never a traceback);
warnings are one line each, ``heatsearch COMMAND: warning: ...``; files that cannot be
indexed are listed once, each with its reason. Every argument is checked before any image is
extracted, so a typo costs no time.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, NoReturn, Optional, Sequence, Tuple

import numpy as np

from .. import _validate
from ..errors import ISSUES_URL, HeatsearchError, InvalidInputError
from ..threads import limit_blas_threads
from ..vision.spatial import split_rerank, with_spatial

__all__ = ["main", "build_parser"]

EVAL_METHODS: Dict[str, Optional[str]] = {
    "plain": None,
    "+AQE": "aqe",
    "+alpha-QE": "alpha-qe",
    "+HeR": "heat",
    "+AQE+HeR": "aqe+heat",
    "+diffusion": "diffusion",
    "+auto": "auto",
}
#: --rerank: "none" (the default), "auto", the other descriptor re-rankers, "spatial" and each
#: of them followed by "+spatial" (Index.search's SEARCH_RERANKERS; spelled here so that --help
#: loads no index code).
RERANK_CHOICES: Tuple[str, ...] = ("none",) + tuple(
    r for r in with_spatial(("auto", "heat", "aqe", "alpha-qe", "aqe+heat", "diffusion")) if r is not None
)
#: --threads takes 0 (all cores) to this many threads; more would only oversubscribe.
MAX_THREADS = 1024
#: Options whose value may start with "-" (a negative coordinate): argparse would take
#: "--bbox -10,0,50,50" for two options, so they are rewritten "--bbox=-10,0,50,50".
_NUMBER_LIST_OPTIONS = ("--bbox", "--range")


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is ONE line: ``heatsearch CMD: error: ...`` (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse measures the command names at their parent's indent, one step less than they
    are printed at, so the longest name ("duplicates") would wrap: this counts the step."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if action.help is not argparse.SUPPRESS and isinstance(action, argparse._SubParsersAction):
            self._action_max_length += self._indent_increment


# -- helpers shared by the commands --------------------------------------------------------
def _say(message: str) -> None:
    print(message, flush=True)


def _note(command: str, message: str) -> None:
    print(f"heatsearch {command}: {message}", file=sys.stderr, flush=True)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _threads(text: str) -> int:
    """``--threads``: 0 means every core the process may use (like xz -T0), else 1-1024."""
    n = _validate.integer_text(text, "--threads", minimum=0, maximum=MAX_THREADS)
    if n == 0:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return n


def _reason(path: str, why: str) -> str:
    """A skip reason without the exception class name and the path the line already shows."""
    why = re.sub(r"^[A-Za-z]*(Error|Exception): ", "", why)
    for quoted in (repr(path), f'"{path}"', path):
        why = why.replace(f" {quoted}", "")
    return _one_line(why)


def _list_skipped(command: str, skipped: Sequence[Tuple[str, str]]) -> None:
    if skipped:
        _note(command, f"skipped {len(skipped)} file(s):")
        for path, why in skipped:
            print(f"  {path}: {_reason(path, why)}", file=sys.stderr)


class _ProgressExtractor:
    """The index's extractor, counting images on ONE progress bar over the whole collection
    (the index extracts a sample first for the HeW mean, then the rest: two bars, the second
    empty for small collections, without this). ``copies``: each image is followed by its
    synthetic copy (an array), so an image that cannot be read counts for both."""

    def __init__(self, extractor: Any, total: int, enabled: bool, copies: bool = False) -> None:
        self._extractor = extractor
        self._per_image = 2 if copies else 1
        self._bar = None
        if enabled and total:
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]
            except ImportError:  # progress bars are a nicety
                pass
            else:
                self._bar = tqdm(total=total, desc="extracting", unit="img")

    def feature_map(self, image: Any, bbox: Any = None) -> Any:
        try:
            out = self._extractor.feature_map(image, bbox=bbox)
        except BaseException:
            if self._bar is not None:  # an unreadable image: no copy of it will follow
                self._bar.update(1 if isinstance(image, np.ndarray) else self._per_image)
            raise
        if self._bar is not None:
            self._bar.update(1)
        return out

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._extractor, name)


def _image_files(command: str, items: Iterable[str], recursive: bool = True) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Absolute image paths from files and folders (walked), and the entries skipped."""
    from ..vision.images import SUPPORTED_EXTENSIONS, is_image_file
    from .scan import link_problem, scan_folder

    images: List[str] = []
    skipped: List[Tuple[str, str]] = []
    for item in items:
        path = os.path.abspath(item)
        if os.path.isdir(path):
            scan = scan_folder(path, recursive=recursive)
            images.extend(scan.images)
            skipped.extend(scan.skipped)
            continue
        if os.path.islink(path) and link_problem(path):
            raise InvalidInputError(f"{item}: {link_problem(path)}")
        _validate.existing_file(item, "each PATH")
        if not is_image_file(path):
            raise InvalidInputError(
                f"{item} is not an image file (expected one of {', '.join(SUPPORTED_EXTENSIONS)}) "
                "nor a folder"
            )
        images.append(path)
    return list(dict.fromkeys(images)), skipped


def _load_index(path: str, args: argparse.Namespace, *, mmap: bool = True) -> Any:
    """The index at ``path``, its images taken from ``--root`` when the command has one and it
    is given (a collection moved with its index)."""
    from .index import Index

    _validate.existing_folder(path, "INDEX")
    root = getattr(args, "root", None)
    if root is not None:
        _validate.existing_folder(root, "--root")
    return Index.load(path, mmap=mmap, root=root, runtime=getattr(args, "runtime", "auto"))


def _with_progress(index: Any, total: int, enabled: bool) -> _ProgressExtractor:
    """One bar over ``total`` images, and their synthetic copies when the index makes them
    (:attr:`IndexConfig.whiten_copies`: each extraction counts)."""
    copies = index._makes_copies()
    extractor = _ProgressExtractor(index._get_extractor(), total * (2 if copies else 1), enabled, copies)
    index.extractor = extractor
    return extractor


def _whitening_summary(index: Any, source: Optional[str] = None) -> str:
    from .index import AUTO_WHITENING_MIN_IMAGES

    w = index.whitening
    if w is None:
        if index.config.whiten == "none":
            return "no whitening (turned off)"
        return (f"no whitening yet: it is learned once the index holds {AUTO_WHITENING_MIN_IMAGES} "
                f"images, it holds {len(index)}")
    dims = f"{w.mean_.shape[0]} -> {w.dim_} dimensions"
    if source:
        return f"PCA-whitening from {source}, {dims}"
    on = f"{index.whitening_images} images" if index.whitening_images else "the index's own images"
    shrinkage = index.config.shrinkage
    how = f"shrinkage {shrinkage:g}" if isinstance(shrinkage, float) and shrinkage else (
        "Ledoit-Wolf shrinkage" if shrinkage == "ledoit-wolf" else "no shrinkage")
    copies = index.config.whiten_duplicates
    if copies is not None:
        images = w.duplicate_images_  # known when learned in this process (the file keeps the result only)
        if images == 0:
            how += f", no near-duplicates found (pairs at centred cosine >= {copies:g})"
        else:
            found = "" if images is None else f" ({images} images)"
            how += f", near-duplicate groups{found} kept together (pairs at centred cosine >= {copies:g})"
    if index.config.whiten_copies and index.copy_pairs:
        how += ", synthetic copies as matching pairs"
    return f"PCA-whitening learned on {on} with {how}, {dims}"


def _mean_summary(index: Any) -> str:
    if index.mean is None:
        return "none (pooling is not hew)" if index.config.pooling != "hew" else "none yet (no images)"
    on = f"{index.mean_images} images" if index.mean_images else "the first images indexed"
    return f"learned on the local features of {on} ({index.mean.shape[0]} channels)"


# -- index ---------------------------------------------------------------------------------
def _check_extraction(args: argparse.Namespace) -> Tuple[str, Optional[str], int]:
    from ..aggregate import POOLINGS
    from ..vision.backbones import BACKBONES, available_layers

    _validate.choice(args.pooling, "--pooling", tuple(POOLINGS))
    _validate.choice(args.backbone, "--backbone", BACKBONES)
    if args.layer is not None:
        _validate.choice(args.layer, "--layer", available_layers(args.backbone))
    max_size = _validate.integer_text(args.max_size, "--max-size", minimum=16, maximum=16384)
    return args.backbone, args.layer, max_size


def cmd_index(args: argparse.Namespace) -> int:
    from ..whitening import PCAWhitening
    from .index import DEFAULT_SCALES, Index, IndexConfig
    from .scan import scan_folder
    from .storage import check_target

    # Every argument first: nothing is extracted before all of them are known to be good.
    _validate.existing_folder(args.folder, "FOLDER")
    check_target(args.output)  # an index, an empty folder or a new one: nothing else
    backbone, layer, max_size = _check_extraction(args)
    if args.whiten and args.no_whiten:
        raise InvalidInputError("--whiten FILE and --no-whiten contradict each other: pass one")
    if args.no_copies and (args.whiten or args.no_whiten):
        raise InvalidInputError("--no-copies changes the whitening the index learns: it has no effect with "
                                f"{'--whiten FILE' if args.whiten else '--no-whiten'}")
    whitening = None
    if args.whiten:
        _validate.existing_file(args.whiten, "--whiten")
        whitening = PCAWhitening.load(args.whiten)
    config = IndexConfig(
        backbone=backbone,
        layer=layer,
        max_size=max_size,
        pooling=args.pooling,
        scales=(1.0,) if args.single_scale else DEFAULT_SCALES,
        whiten="none" if args.no_whiten else "auto",
        whiten_copies=not args.no_copies,
        storage_dtype="float16" if args.float16 else "float32",
        ann=None if args.ann == "none" else args.ann,
    )
    workers = None
    if args.workers is not None:
        if args.ray is None:
            raise InvalidInputError("--workers sizes the Ray cluster's extractor pool: it needs --ray")
        workers = _validate.integer_text(args.workers, "--workers", minimum=1, maximum=MAX_RAY_WORKERS)
    if args.ray is not None:
        from ..distributed import _ray

        _ray()  # MissingDependencyError (pip install "heatsearch[ray]") before anything is read
    folder = os.path.abspath(args.folder)
    scan = scan_folder(folder, recursive=not args.no_recursive)
    if not scan.images:
        _list_skipped("index", scan.skipped)
        from ..vision.images import SUPPORTED_EXTENSIONS

        raise InvalidInputError(
            f"{args.folder} holds no image files ({', '.join(SUPPORTED_EXTENSIONS)})"
            f"{'' if args.no_recursive else ', in any of its folders'}: nothing to index"
        )
    if args.ray is not None:
        from ..distributed import build_index

        t = time.perf_counter()
        # Saved by build_index itself: its parts (what a rerun resumes from) go only after that.
        index = build_index(scan.images, config, output=args.output, address=args.ray or None,
                            num_workers=workers, whitening=whitening, root=folder, runtime=args.runtime,
                            progress=not args.quiet)
        elapsed = time.perf_counter() - t
    else:
        # The network's weights are loaded (and checked) before the first image.
        extractor = _with_progress(Index(config=config, runtime=args.runtime), len(scan.images), not args.quiet)
        t = time.perf_counter()
        try:
            index = Index.build(folder, config, whitening=whitening, extractor=extractor,
                                recursive=not args.no_recursive, runtime=args.runtime)
        finally:
            extractor.close()
        elapsed = time.perf_counter() - t
    skipped = sorted(scan.skipped + list(index.skipped))
    _list_skipped("index", skipped)
    args._listed = [p for p, _ in skipped]
    if not len(index):
        raise InvalidInputError(
            f"none of the {len(scan.images)} image files under {args.folder} could be read: no index written"
        )
    if args.ray is None:
        index.save(args.output)
    learned = []
    if index.mean is not None:
        learned.append(f"HeW centering mean from {index.mean_images} images")
    learned.append(_whitening_summary(index, args.whiten))
    _say(f"indexed {len(index)} images in {elapsed:.1f} s -> {args.output}")
    _say(f"  {'; '.join(learned)}; descriptors of dimension {index.dim}")
    return 0


# -- add, remove, info ---------------------------------------------------------------------
def cmd_add(args: argparse.Namespace) -> int:
    index = _load_index(args.index, args, mmap=False)
    images, skipped = _image_files("add", args.paths, recursive=not args.no_recursive)
    known = set(os.path.abspath(p) for p in index.paths)
    new = [p for p in images if p not in known]
    if len(new) < len(images):
        _say(f"{len(images) - len(new)} of the {len(images)} images are already in the index (left as they are)")
    if not new:
        _list_skipped("add", skipped)
        _say(f"nothing to add: {args.index} is unchanged ({len(index)} images)")
        return 0
    whitening = index.whitening  # learned by add at 64 images, again when the index has doubled
    extractor = _with_progress(index, len(new), not args.quiet)
    t = time.perf_counter()
    try:
        failed = index.add(new)
    finally:
        extractor.close()
    skipped = sorted(skipped + list(failed))
    _list_skipped("add", skipped)
    args._listed = [p for p, _ in skipped]
    added = len(new) - len(failed)
    if added:
        index.extractor = None
        index.save(args.index)
    _say(f"added {added} images in {time.perf_counter() - t:.1f} s ({len(index)} in all) -> {args.index}"
          if added else f"no image could be added: {args.index} is unchanged")
    if added and index.whitening is not whitening:
        _say(f"  {_whitening_summary(index)}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    index = _load_index(args.index, args, mmap=False)
    absolute = {os.path.abspath(p): p for p in index.paths}
    drop: List[str] = []
    unknown: List[str] = []
    for item in args.paths:
        path = os.path.abspath(item)
        if path in absolute:
            drop.append(absolute[path])
            continue
        inside = [p for a, p in absolute.items() if a.startswith(path.rstrip(os.sep) + os.sep)]
        if inside:
            drop.extend(inside)
        else:
            unknown.append(item)
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise InvalidInputError(
            f"not in the index (no image at or under it): {', '.join(unknown[:3])}{more}; nothing was removed"
        )
    removed = index.remove(list(dict.fromkeys(drop)))
    index.save(args.index)
    _say(f"removed {removed} images ({len(index)} left) -> {args.index}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    index = _load_index(args.index, args, mmap=False)
    if index.root is None:
        raise InvalidInputError(
            f"{args.index} records no collection folder (an index of heatsearch 0.1/0.2): "
            "give it with --root FOLDER"
        )
    if not os.path.isdir(index.root):
        raise InvalidInputError(
            f"the collection folder of {args.index}, {index.root}, is not a folder any more: "
            "if it moved, give its new place with --root FOLDER"
        )
    from .scan import scan_folder

    scan = scan_folder(index.root, recursive=not args.no_recursive)
    known = set(index.paths)
    extractor = _with_progress(index, sum(p not in known for p in scan.images), not args.quiet)
    t = time.perf_counter()
    whitening = index.whitening  # learned by add at 64 images, again when the index has doubled
    try:
        result = index.sync(recursive=not args.no_recursive)
    finally:
        extractor.close()
    skipped = sorted(scan.skipped + list(result.skipped))
    _list_skipped("sync", skipped)
    args._listed = [p for p, _ in skipped]
    moved = args.root is not None
    if result.added or result.removed or moved:
        index.extractor = None
        index.save(args.index)
    changes = f"added {len(result.added)}, removed {len(result.removed)} images"
    if result.added or result.removed:
        _say(f"{changes} in {time.perf_counter() - t:.1f} s ({len(index)} in all) -> {args.index}")
    else:
        _say(f"{args.index} is up to date with {index.root} ({len(index)} images)"
             + (": its new collection folder is recorded" if moved else ""))
    if result.added and index.whitening is not whitening:
        _say(f"  {_whitening_summary(index)}")
    return 0


def _disk_size(folder: str) -> int:
    total = 0
    for top, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def cmd_info(args: argparse.Namespace) -> int:
    from ..vision.backbones import DEFAULT_LAYERS

    index = _load_index(args.index, args)
    cfg = index.config
    dim = index.dim if len(index) else 0
    post = "signed square root + L2" if cfg.power == 0.5 else (f"signed power {cfg.power:g} + L2" if cfg.power else "L2")
    rows = [
        ("index", os.path.abspath(args.index)),
        ("images", str(len(index))),
        ("dimension", str(dim)),
        ("backbone", cfg.backbone),
        ("layer", cfg.layer or f"{DEFAULT_LAYERS.get(cfg.backbone, '?')} (the backbone's default)"),
        ("pooling", cfg.pooling),
        ("scales", ", ".join(f"{s:.3g}" for s in cfg.scales)),
        ("max size", f"longer side at most {cfg.max_size} px" if cfg.max_size else "images as stored"),
        ("HeW mean", _mean_summary(index)),
        ("post-process", post + (", then the whitening" if index.whitening is not None else "")),
        ("whitening", _whitening_summary(index, None if index.whitening_learned or index.whitening is None
                                         else "a file given at index time")),
        ("root", index.root or "not recorded (an index of heatsearch 0.1/0.2: paths are taken from "
         "the current folder, or --root)"),
        ("disk size", _human(_disk_size(args.index))),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        _say(f"{key:<{width}}  {value}")
    return 0


# -- search --------------------------------------------------------------------------------
def cmd_search(args: argparse.Namespace) -> int:
    k = _validate.integer_text(args.k, "-k", minimum=1)
    bbox = _validate.reals_text(args.bbox, "--bbox", 4, "x1,y1,x2,y2") if args.bbox is not None else None
    index = _load_index(args.index, args)
    for query in args.queries:
        _validate.existing_file(query, "each query")
    if args.html:
        _validate.output_file(args.html, "--html")
    if not len(index):
        raise InvalidInputError(f"{args.index} holds no images: add some with `heatsearch add {args.index} PATH...`")
    results = []
    rerank = None if args.rerank == "none" else args.rerank
    base, spatial = split_rerank(rerank)
    _say("score: cosine similarity of the final descriptors, -1 to 1 (1: the same image)"
         + (f"; then the {base} re-ranker's own score, which orders the hits" if base else "")
         + ("; then the inliers of the verified hits, which come first" if spatial else ""))
    for query in args.queries:
        t = time.perf_counter()
        hits = index.search(query, k=k, rerank=rerank, bbox=bbox)
        _say(f"{query}  ({1000 * (time.perf_counter() - t):.0f} ms)")
        for r, hit in enumerate(hits, 1):
            own = "" if hit.rerank_score is None else f"  {hit.rerank_score:10.4g}"
            verified = "" if hit.inliers is None else f"  {hit.inliers:4d} inliers"
            _say(f"  {r:3d}  {hit.score:7.4f}{own}{verified}  {hit.path}")
        results.append((query, hits))
    if args.html:
        from .gallery import write_gallery

        write_gallery(args.html, results, title=f"heatsearch: {len(results)} queries in {args.index}")
        _say(f"wrote {args.html} ({len(results)} queries)")
    return 0


# -- duplicates ----------------------------------------------------------------------------
def cmd_duplicates(args: argparse.Namespace) -> int:
    threshold = None
    if args.threshold is not None:
        number = _validate.real_text(args.threshold, "--threshold", "a cosine similarity in [-1, 1]")
        threshold = _validate.cosine(number, "--threshold")
    index = _load_index(args.index, args)
    if not len(index):
        raise InvalidInputError(f"{args.index} holds no images: add some with `heatsearch add {args.index} PATH...`")
    if threshold is None:
        threshold = index.duplicate_threshold
    t = time.perf_counter()
    groups = index.duplicates(threshold)
    elapsed = time.perf_counter() - t
    grouped = sum(len(g) for g in groups)
    how = f"cosine >= {threshold:g} of the {index.duplicate_descriptors} descriptors, {elapsed:.1f} s"
    if not groups:
        _say(f"no near-duplicates among the {len(index)} images ({how})")
        return 0
    _say(f"{len(groups)} group(s) of near-duplicates: {grouped} of the {len(index)} images ({how})")
    _say("each image with its highest cosine to another image of its group")
    for n, g in enumerate(groups, 1):
        pairs = len(g) * (len(g) - 1) // 2
        chain = "" if g.complete else ": a chain, its ends may differ more"
        _say(f"group {n}: {len(g)} images, {g.pairs.shape[0]} of {pairs} pairs linked "
             f"(cosine {g.min_score:.4f} to {g.max_score:.4f}){chain}")
        for path, best in zip(g.paths, g.nearest):
            _say(f"  {best:7.4f}  {path}")
    return 0


# -- explain -------------------------------------------------------------------------------
def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain_image

    _validate.existing_file(args.image, "IMAGE")
    _validate.output_file(args.output, "-o/--output")
    scale = None
    if args.range is not None:
        lo, hi = _validate.reals_text(args.range, "--range", 2, "LOW,HIGH")
        if not lo < hi:
            raise InvalidInputError(f"--range must be LOW,HIGH with LOW < HIGH, got {args.range!r}")
        scale = (lo, hi)
    mean, extractor = None, None
    if args.index:
        if args.backbone or args.layer:
            raise InvalidInputError("--index brings its own backbone and layer: drop --backbone/--layer")
        index = _load_index(args.index, args)
        mean, extractor = index.mean, index._get_extractor()
    elif args.backbone or args.layer:
        from ..vision.backbones import BACKBONES, DEFAULT_BACKBONE, available_layers
        from ..vision.extract import Extractor

        backbone = _validate.choice(args.backbone or DEFAULT_BACKBONE, "--backbone", BACKBONES)
        if args.layer is not None:
            _validate.choice(args.layer, "--layer", available_layers(backbone))
        extractor = Extractor(backbone=backbone, layer=args.layer, runtime=args.runtime)
    w = explain_image(args.image, args.output, extractor=extractor, mean=mean, scale=scale)
    lo, hi = scale if scale else (float(w.min()), float(w.max()))
    _say(f"wrote {args.output}: HeW weights on a {w.shape[0]} x {w.shape[1]} grid, from "
         f"{float(w.min()):.3g} to {float(w.max()):.3g}")
    _say(f"  colour scale {lo:.3g} (dark: bursty, repeated features, down-weighted) to "
         f"{hi:.3g} (bright: distinctive features, kept)")
    return 0


# -- serve ---------------------------------------------------------------------------------
#: --workers takes 1 to this many processes.
MAX_WORKERS = 64
#: index --ray --workers takes 1 to this many extractor actors (a cluster of 100 nodes of 64 CPUs).
MAX_RAY_WORKERS = 6400


def _loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another name: it may resolve to any interface
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import TOKEN_ENV, create_app, environment_config

    _validate.existing_folder(args.index, "INDEX")
    port = _validate.integer_text(args.port, "--port", minimum=0, maximum=65535)
    workers = _validate.integer_text(args.workers, "--workers", minimum=1, maximum=MAX_WORKERS)
    max_mb = _validate.real_text(args.max_upload_mb, "--max-upload-mb", "a size in MB, > 0")
    if max_mb <= 0:
        raise InvalidInputError(f"--max-upload-mb must be a size in MB, > 0, got {args.max_upload_mb}")
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    if token is not None and not token.strip():
        raise InvalidInputError("--token must not be empty")
    if not _loopback(args.host) and token is None and not args.insecure:
        raise InvalidInputError(
            f"--host {args.host} is reachable from other machines: protect it with --token T (or "
            f"${TOKEN_ENV}), or pass --insecure to serve it to anyone who can connect"
        )
    try:
        import uvicorn
    except ImportError:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("the server needs uvicorn and FastAPI: pip install 'heatsearch[serve]'") from None
    # NumPy's BLAS threads would spin on the cores the network needs (heatsearch.threads).
    limit_blas_threads(1)
    settings = dict(index_path=os.path.abspath(args.index), token=token,
                    max_upload_bytes=int(max_mb * 1024 * 1024), runtime=args.runtime,
                    root=None if args.root is None else os.path.abspath(args.root), warmup=not args.no_warmup)
    if workers == 1:
        app: Any = create_app(**settings)  # loads and checks the index: a bad one is one line here
        n = len(app.state.served.index)
        kwargs: Dict[str, Any] = {}
    else:
        _load_index(args.index, args)  # checked once here, then by each worker
        os.environ.update(environment_config(**settings))
        app, n, kwargs = "heatsearch.app.server:app_from_environment", None, {"factory": True, "workers": workers}
    held = "" if n is None else f"{n} images, "
    _note("serve", f"serving {args.index} ({held}{workers} worker(s)) at http://{args.host}:{port}/"
                   + ("" if token is None else " (token required)"))
    uvicorn.run(app, host=args.host, port=port, log_level="warning" if args.quiet else "info", **kwargs)
    return 0


# -- evaluate ------------------------------------------------------------------------------
def _postprocess(X: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    from ..postprocess import l2_normalize, power_normalize

    for step in steps:
        if step == "sqrt":
            X = power_normalize(X, p=0.5)
        elif step == "l2":
            X = l2_normalize(X)
    return X


def _index_descriptors(args: argparse.Namespace, gt: Any) -> Tuple[np.ndarray, np.ndarray, str]:
    """Database and query descriptors of an index directory, in the ground truth's order."""
    from ..eval.ground_truth import locate

    if args.postprocess is not None or args.whiten:
        raise InvalidInputError(
            "--postprocess and --whiten apply to descriptor files: an index's descriptors are "
            "final (post-processed and whitened as the index was built)"
        )
    index = _load_index(args.db, args)
    paths = list(index.paths)
    X_all = np.asarray(index.descriptors) if len(index) else np.empty((0, 0), np.float32)
    rows = locate([gt.image_path(n) for n in gt.images], paths, "database images of the ground truth")
    X = np.ascontiguousarray(X_all[rows])
    extra = len(index) - len(set(rows.tolist()))
    if args.queries:
        Q = _query_file(args, gt, X)
    elif gt.query_indices is not None:
        Q = X[gt.query_indices]
    else:
        qrows = locate([gt.image_path(n) for n in gt.queries], paths,
                       "query images of the ground truth (add them to the index, or pass --queries)")
        Q = np.ascontiguousarray(X_all[qrows])
        extra -= len(set(qrows.tolist()) - set(rows.tolist()))
        _warn_if_equidistant(X, Q, rows, qrows)
    note = f"index {args.db} (descriptors as stored)"
    if extra > 0:
        note += f"; {extra} of its images are not in the ground truth and are left out"
    return X, Q, note


def _warn_if_equidistant(X: np.ndarray, Q: np.ndarray, rows: np.ndarray, qrows: np.ndarray) -> None:
    """A PCA-whitening learned on n indexed images with n - 1 dimensions (the index's "auto"
    whitening on a small collection) makes those images exactly equally similar to each
    other, so queries taken from the index cannot rank the database: say so."""
    from .index import equidistant

    S = np.asarray(Q, np.float64) @ np.asarray(X, np.float64).T
    S[qrows[:, None] == rows[None, :]] = np.nan  # a query found as itself says nothing
    if len(rows) > 2 and equidistant(S):
        warnings.warn(
            "the index's images are all equally similar to each other (its whitening was learned on "
            "them, queries included, without shrinkage: an index of heatsearch 0.2), so queries taken "
            "from the index cannot rank them: index them again (the whitening is now shrunk)"
        )


def _query_file(args: argparse.Namespace, gt: Any, X: np.ndarray) -> np.ndarray:
    from ..eval import load_descriptors

    _validate.existing_file(args.queries, "--queries")
    Q = load_descriptors(args.queries, expected_count=len(gt.gnd))
    if Q.shape[0] != len(gt.gnd) or Q.shape[1] != X.shape[1]:
        raise InvalidInputError(
            f"{args.queries}: expected {len(gt.gnd)} query descriptors of dimension {X.shape[1]}, got {Q.shape}"
        )
    return Q


def _file_descriptors(args: argparse.Namespace, gt: Any) -> Tuple[np.ndarray, np.ndarray, str]:
    from ..eval import load_descriptors
    from ..postprocess import l2_normalize

    steps = [s.strip() for s in (args.postprocess or "sqrt,l2").split(",") if s.strip()]
    for step in steps:
        _validate.choice(step, "each --postprocess step", ("sqrt", "l2", "none"))
    whitening = None
    if args.whiten:
        from ..whitening import PCAWhitening

        _validate.existing_file(args.whiten, "--whiten")
        whitening = PCAWhitening.load(args.whiten)
    X = load_descriptors(args.db, expected_count=len(gt.images))
    if X.shape[0] != len(gt.images):
        raise InvalidInputError(f"{args.db}: {X.shape[0]} descriptors, but {args.gnd} lists {len(gt.images)} database images")
    if args.queries:
        Q = _query_file(args, gt, X)
    elif gt.query_indices is not None:
        Q = X[gt.query_indices]
    else:
        raise InvalidInputError(f"{args.gnd} has separate query images: pass their descriptors with --queries")
    X, Q = _postprocess(X, steps), _postprocess(Q, steps)
    if whitening is not None:
        X, Q = l2_normalize(whitening.transform(X)), l2_normalize(whitening.transform(Q))
    steps = [s for s in steps if s != "none"]
    return X, Q, f"post-processing: {','.join(steps) or 'none'}{' + whitening' if whitening else ''}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..eval import compute_map, load_ground_truth
    from ..pipeline import rank

    methods = [m.strip() for m in args.methods.split(",")] if args.methods else list(EVAL_METHODS)
    for m in methods:
        _validate.choice(m, "each --methods entry", tuple(EVAL_METHODS))
    _validate.existing_file(args.gnd, "--gnd")
    if args.root is not None and not os.path.isdir(args.db):
        raise InvalidInputError("--root applies to an index given as --db, not to descriptor files")
    gt = load_ground_truth(args.gnd)
    if os.path.isdir(args.db):
        X, Q, how = _index_descriptors(args, gt)
    else:
        _validate.existing_file(args.db, "--db")
        X, Q, how = _file_descriptors(args, gt)
    protocols = list(gt.protocols)
    _say(f"{X.shape[0]} database, {Q.shape[0]} queries, d = {X.shape[1]}, {how}")
    name_w = max(len("method"), *(len(m) for m in methods)) + 2
    widths = [max(9, len(p) + 2) for p in protocols]
    _say(f"{'method':<{name_w}}" + "".join(f"{p:>{w}}" for p, w in zip(protocols, widths)) + f"{'time':>9}")
    graph = None
    for name in methods:
        t = time.perf_counter()
        if EVAL_METHODS[name] == "diffusion" and graph is None:
            from ..knn import knn_graph

            graph = knn_graph(X)
        ranks, _ = rank(X, Q, rerank=EVAL_METHODS[name], graph=graph)
        elapsed = time.perf_counter() - t
        maps = "".join(f"{100 * compute_map(ranks, gt.protocol(p)).map:{w}.2f}" for p, w in zip(protocols, widths))
        _say(f"{name:<{name_w}}{maps}{elapsed:8.2f}s")
    return 0


# -- demo ----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import PHOTOS, run_demo

    n = _validate.integer_text(args.photos, "--photos", minimum=0, maximum=len(PHOTOS))
    max_size = _validate.integer_text(args.max_size, "--max-size", minimum=16, maximum=16384)
    seed = _validate.integer_text(args.seed, "--seed", minimum=0)
    photos = PHOTOS[:n] if n else PHOTOS
    run_demo(photos=photos, max_size=max_size, seed=seed, progress=not args.quiet)
    return 0


def _add_threads(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--threads", default=default, metavar="N",
                   help="threads of heatsearch's kernels (search, HeW, HeR): 1-1024, or 0 for every "
                   "core; default: $HEATSEARCH_NUM_THREADS, else every core")


def build_parser() -> argparse.ArgumentParser:
    from ..duplicates import DEFAULT_THRESHOLD, WHITENED_THRESHOLD

    p = _Parser(
        prog="heatsearch",
        description="Image retrieval with heat diffusion (HeW aggregation, HeR re-ranking).",
        epilog="Start with `heatsearch demo`. Feature extraction needs the onnx extra (pip install "
        "'heatsearch[onnx]', no torch) or the torch extra (pip install 'heatsearch[torch]').",
        formatter_class=_HelpFormatter,
    )
    _add_threads(p, None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=description)
        _add_threads(c, argparse.SUPPRESS)  # also after the command; the global one otherwise
        return c

    d = command("demo", "offline copy-detection benchmark: SPoC, MAC, GeM, CroW, HeW, each +/- HeR",
                "Builds a small copy-detection benchmark from the photographs shipped with "
                "scikit-image (crops, rotations, scaling, JPEG, colour, blur, occlusion), extracts features "
                "with the default backbone and prints mAP for each pooling with and without HeR re-ranking.")
    d.add_argument("--photos", default="0", help="use only the first N photos (default: all 17)")
    d.add_argument("--max-size", default="512", help="longer image side for extraction, 16-16384 (default 512)")
    d.add_argument("--seed", default="0", help="seed of the edits (default 0)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    i = command("index", "index a folder of images",
                "Extracts, pools and post-processes every image under FOLDER (jpg, jpeg, png, webp, bmp, "
                "tif, tiff; recursive) and saves an index folder. All arguments are checked before the first "
                "image is read. Files that cannot be indexed (unreadable images, broken or looping symbolic "
                "links, links to folders, which are not followed) are listed with the reason and skipped; "
                "an empty folder is an error. Prints what the index learned: the HeW centering mean and the "
                "PCA-whitening.")
    i.add_argument("folder", metavar="FOLDER")
    i.add_argument("-o", "--output", required=True, metavar="INDEX",
                   help="index folder to write: a new folder, or an existing index, which is replaced "
                   "atomically (any other existing folder or file is refused)")
    i.add_argument("--backbone", default="efficientnet_lite0",
                   help="efficientnet_lite0 (default, installs offline), vgg16, resnet50, resnet101 (local weight files)")
    i.add_argument("--layer", default=None, help="backbone layer (default: the backbone's default, e.g. head)")
    i.add_argument("--max-size", default="1024", help="longer image side, 16-16384, never upscaled (default 1024, the paper's)")
    i.add_argument("--pooling", default="hew", help="hew (default), spoc, mac, gem, rmac, crow")
    i.add_argument("--whiten", metavar="FILE", help="a PCAWhitening .npz fitted on a separate image set (default: "
                   "learned on the indexed images themselves once there are 64 of them)")
    i.add_argument("--no-whiten", action="store_true", help="no whitening at all")
    i.add_argument("--no-copies", action="store_true", help="the learned whitening without a synthetic copy of "
                   "each image (indexing 30-40%% faster, less accurate: README, Retrieval quality)")
    i.add_argument("--single-scale", action="store_true", help="one scale instead of 1, 1/sqrt(2), 1/2 (faster)")
    i.add_argument("--no-recursive", action="store_true", help="only the folder itself, not its subfolders")
    i.add_argument("--ann", default="none", choices=["none", "auto", "hnsw", "ivfpq"],
                   help="approximate search on FAISS (pip install 'heatsearch[ann]'): none (default: exact), auto "
                   "(hnsw from 300k images on), hnsw or ivfpq; built when the index is saved (README, Scale)")
    i.add_argument("--float16", action="store_true", help="store the final descriptors as float16 (half the disk; "
                   "README, Descriptor store)")
    i.add_argument("--quiet", action="store_true", help="no progress bar")
    i.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="extract on a Ray cluster (pip install 'heatsearch[ray]'): a running one at ADDRESS "
                   "(e.g. auto, ray://head:10001), or without ADDRESS a local one on 127.0.0.1. Same index and "
                   "report; a rerun after an interruption resumes from the finished parts")
    i.add_argument("--workers", default=None, help=f"with --ray: extractor workers, 1-{MAX_RAY_WORKERS} (default: "
                   "the cluster's CPUs, one worker each)")
    _add_runtime(i)
    i.set_defaults(func=cmd_index)

    a = command("add", "add images to an index",
                "Adds image files, and the images under folders (walked like `index`), to INDEX: extracted "
                "with the index's own settings, described with its HeW mean and whitening, saved atomically. "
                "Images already in the index are left as they are.")
    a.add_argument("index", metavar="INDEX")
    a.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    a.add_argument("--no-recursive", action="store_true", help="only the folders themselves, not their subfolders")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_root(a, saves=True)
    _add_runtime(a)
    a.set_defaults(func=cmd_add)

    r = command("remove", "remove images from an index",
                "Removes images from INDEX by path (a folder removes every indexed image under it; the "
                "files need not exist any more) and saves it atomically. A path that is not in the index "
                "is an error and nothing is removed.")
    r.add_argument("index", metavar="INDEX")
    r.add_argument("paths", nargs="+", metavar="PATH", help="image paths or folders")
    _add_root(r, saves=True)
    r.set_defaults(func=cmd_remove)

    n = command("info", "what an index holds and how it was built",
                "Prints the number of images, the descriptor dimension, backbone, layer, pooling, scales, "
                "the HeW centering mean, the post-processing and whitening, and the size on disk.")
    n.add_argument("index", metavar="INDEX")
    _add_root(n)
    n.set_defaults(func=cmd_info)

    y = command("sync", "bring an index up to date with its collection folder",
                "Indexes the image files under the index's collection folder (the FOLDER it was built "
                "from, or --root) that it does not hold yet, and drops the images whose file is gone; "
                "saves it atomically. Files changed in place are not re-indexed (remove and add them).")
    y.add_argument("index", metavar="INDEX")
    _add_root(y, saves=True)
    y.add_argument("--no-recursive", action="store_true", help="only the folder itself, not its subfolders")
    y.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_runtime(y)
    y.set_defaults(func=cmd_sync)

    s = command("search", "search an index with query images",
                "Prints the best matches of each query image, optionally re-ranked; --html writes one page "
                "with every query and its matches.")
    s.add_argument("index", metavar="INDEX")
    s.add_argument("queries", nargs="+", metavar="QUERY", help="query image file(s)")
    s.add_argument("-k", default="10", help="results per query, >= 1 (default 10)")
    s.add_argument("--rerank", choices=RERANK_CHOICES, default="none", metavar="RERANK",
                   help=f"re-ranking: one of {', '.join(RERANK_CHOICES)}; default none (plain search). auto (HeR "
                   "over the top 20, the best match kept first) helps collections with several photos of each "
                   "place or object and costs copy detection a point (README, 'Retrieval quality'). 'spatial' verifies the top 100 by SIFT local features and RANSAC "
                   "(needs opencv-python-headless: pip install \"heatsearch[spatial]\"); 'R+spatial' verifies "
                   "the top of re-ranker R's order")
    s.add_argument("--bbox", metavar="X1,Y1,X2,Y2",
                   help="crop the queries to this box first (pixels of the original image; may be negative)")
    s.add_argument("--html", metavar="FILE", help="also write one HTML page with every query and its matches: "
                   "thumbnails linking to the original images")
    _add_root(s)
    _add_runtime(s)
    s.set_defaults(func=cmd_search)

    u = command("duplicates", "groups of near-duplicate images in an index",
                "Finds every pair of images of INDEX whose descriptors have a cosine similarity of at "
                "least --threshold, and prints the groups they link, largest first (a group is linked "
                "through chains of pairs, so its two ends may be less alike). From 64 images the "
                "descriptors are whitened by a whitening learned for the purpose on all the index's images "
                "with their near-duplicate groups (it tells copies from look-alike photos), else they are "
                "the unwhitened ones (signed square root + L2 of the pooled ones). All pairs are compared "
                "exactly, in blocks, without an n x n matrix.")
    u.add_argument("index", metavar="INDEX")
    u.add_argument("--threshold", metavar="T",
                   help=f"cosine similarity from -1 to 1 (default {WHITENED_THRESHOLD:g} for the whitened "
                   f"descriptors, {DEFAULT_THRESHOLD:g} for the unwhitened ones, calibrated on edited copies of "
                   "real photos: README, Near-duplicates); higher finds fewer, closer copies")
    _add_root(u)
    u.set_defaults(func=cmd_duplicates)

    e = command("explain", "draw HeW's weight map over an image",
                "Writes a PNG of IMAGE with its HeW weights on top and a colour bar below: dark (black, "
                "purple) regions are bursty, repeated features that HeW down-weights, bright (orange, "
                "yellow) ones distinctive features it keeps. The colour bar shows the scale (the image's "
                "lowest to highest weight, or --range) and the command prints it too.")
    e.add_argument("image", metavar="IMAGE")
    e.add_argument("-o", "--output", required=True, metavar="PNG", help="PNG to write")
    e.add_argument("--index", help="use this index's backbone, layer and HeW centering mean")
    e.add_argument("--backbone", help="backbone when no index is given (default efficientnet_lite0)")
    e.add_argument("--layer", help="layer when no index is given")
    e.add_argument("--range", metavar="LOW,HIGH",
                   help="weights drawn darkest and brightest (default: the image's own lowest and highest): "
                   "the same range gives several pictures the same colour scale")
    _add_runtime(e)
    e.set_defaults(func=cmd_explain)

    w = command("serve", "serve an index over HTTP: search API, adds and removes, a search page",
                "Serves INDEX with FastAPI on uvicorn: POST /search (an image upload or a descriptor), "
                "POST /search/batch, POST and DELETE /images (saved atomically), GET /images/{row}/thumbnail, "
                "/health, /stats, /metrics (Prometheus) and a search page at /. Binds 127.0.0.1 by default; "
                "another host needs --token (or $HEATSEARCH_TOKEN) or --insecure. See the README, Serving.")
    w.add_argument("index", metavar="INDEX")
    w.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    w.add_argument("--port", default="8000", help="port, 0-65535 (default 8000; 0: any free port)")
    w.add_argument("--workers", default="1", help=f"server processes, 1-{MAX_WORKERS} (default 1; each loads the "
                   "index and its network, and reloads the index when another saved a change)")
    w.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every endpoint but /health and the "
                   "page (default: $HEATSEARCH_TOKEN, else none)")
    w.add_argument("--insecure", action="store_true", help="allow a host other than loopback without a token")
    w.add_argument("--max-upload-mb", default="32", help="largest request body in MB (default 32; larger: 413)")
    w.add_argument("--no-warmup", action="store_true", help="do not run the network once before serving")
    w.add_argument("--quiet", action="store_true", help="no access log")
    _add_root(w)
    _add_runtime(w)
    w.set_defaults(func=cmd_serve)

    v = command("evaluate", "mAP of descriptors or of an index on a benchmark, plain and re-ranked",
                "Loads descriptors (an index folder, .npy rows, or MATLAB .mat) and ground truth (revisitop .pkl, "
                "the authors' .mat, heatsearch JSON) and prints mAP (E/M/H for the revisited datasets) of "
                "plain search, +AQE, +alpha-QE, +HeR, +AQE+HeR and +diffusion, with timings. With an index, "
                "the ground truth's images are found among the index's by path (JSON names are paths "
                "relative to the JSON file), and so are separate query images unless --queries is given.")
    v.add_argument("--db", required=True, help="an index folder, or database descriptors (.npy or .mat)")
    v.add_argument("--gnd", required=True, help="ground truth (.pkl, .mat or .json)")
    v.add_argument("--queries", help="query descriptors (default: the ground truth's query images, from the "
                   "database or the index)")
    v.add_argument("--postprocess", help="descriptor files only: comma-separated steps sqrt, l2, none "
                   "(default sqrt,l2); an index's descriptors are final")
    v.add_argument("--whiten", help="descriptor files only: a PCAWhitening .npz (learned on another dataset), "
                   "applied last, then L2")
    v.add_argument("--methods", help=f"comma-separated subset of {','.join(EVAL_METHODS)}")
    _add_root(v, "with an index as --db: ")
    v.set_defaults(func=cmd_evaluate)
    return p


def _add_runtime(p: argparse.ArgumentParser) -> None:
    from ..vision.extract import RUNTIMES

    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="what runs the network: onnx (ONNX Runtime, efficientnet_lite0 on the CPU, no torch: "
                   "pip install 'heatsearch[onnx]'), torch, or auto (default: onnx where installed and able, "
                   "it measured about 4x faster; else torch). Not recorded in the index: any runtime "
                   "searches an index built with another")


def _add_root(p: argparse.ArgumentParser, when: str = "", *, saves: bool = False) -> None:
    p.add_argument("--root", metavar="FOLDER",
                   help=f"{when}where the indexed collection is now, if it moved with its index (default: the "
                   "folder the index records)" + ("; the saved index records it" if saves else ""))


def _argv_with_number_lists(argv: Sequence[str]) -> List[str]:
    """``--bbox -10,0,50,50`` as ``--bbox=-10,0,50,50`` (argparse would take the value for
    an option: it starts with "-" and is not one plain negative number)."""
    out: List[str] = []
    it = iter(range(len(argv)))
    for i in it:
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if arg in _NUMBER_LIST_OPTIONS and re.match(r"^-[0-9.]", nxt):
            out.append(f"{arg}={nxt}")
            next(it, None)
        else:
            out.append(arg)
    return out


def _os_message(e: OSError) -> str:
    """An operating-system error as the user sees it: what failed and on which of THEIR
    paths (the temporary file or folder of an atomic write is replaced by its folder)."""
    name = e.filename
    what = e.strerror or _one_line(e)
    if name is None:
        return what
    from .storage import is_internal_name

    parts = Path(str(name)).parts
    for i, part in enumerate(parts):
        if is_internal_name(part):
            return f"cannot write in {os.path.abspath(Path(*parts[:i]) if i else '.')}: {what}"
    return f"{name}: {what}"


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader is gone: ``poll`` reports an error on
    its write end (Linux, macOS); where it cannot be asked (no ``poll``, stdout not a file),
    a broken pipe is taken to be stdout's, the one pipe every command writes to."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
    except (AttributeError, OSError, ValueError):
        return True
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_argv_with_number_lists(sys.argv[1:] if argv is None else list(argv)))
    command = args.command
    status, error = 2, ""
    with warnings.catch_warnings(record=True) as caught:
        try:
            if args.threads is not None:
                from ..threads import set_num_threads

                set_num_threads(_threads(args.threads))
            status = int(args.func(args))
            sys.stdout.flush()  # a closed pipe shows here, not at exit
        except HeatsearchError as e:
            error = f"error: {_one_line(e)}"
        except BrokenPipeError as e:
            if not _stdout_closed():  # another pipe (a socket, a file system): an error as any
                error = f"error: {_one_line(_os_message(e))}"
            else:
                # The reader stopped (`heatsearch search ... | head`): what it read was
                # written; nothing to report, and stdout must not be flushed again at exit
                # (Python's advice).
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 141  # as a shell reports a process ended by SIGPIPE
        except OSError as e:
            error = f"error: {_one_line(_os_message(e))}"
        except MemoryError:
            error = "error: out of memory (try fewer or smaller images, or --max-size)"
        except KeyboardInterrupt:
            error, status = "interrupted", 130
        except Exception as e:  # a bug: said in one line, with where to report it
            error = (f"error: internal error ({type(e).__name__}: {_one_line(e)}); "
                     f"please report it with the command at {ISSUES_URL}")
    listed = getattr(args, "_listed", [])
    seen = set()
    for w in caught:
        text = _one_line(w.message)
        if text in seen or any(p in text for p in listed):  # said once, or listed already
            continue
        seen.add(text)
        _note(command, f"warning: {text}")
    if error:
        _note(command, error)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
