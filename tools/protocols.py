"""Retrieval quality of heatsearch's index on the four protocols a user cares about, one table.

    python tools/protocols.py [--data ../shared/data] [--cache ~/.cache/heatsearch-protocols]
                              [--candidates default,none,s0.1,...] [--rerankers none,heat,auto]
                              [--holidays]

Protocols (data: ``../shared/data``, see its README; the demo's photos ship with scikit-image):

(a) ``smvs q->db``: the 91 ``smvs_paintings`` references are the index, the 91 phone photos
    query it (one positive each).
(b) ``smvs in-collection``: the 182 images indexed together; every image queries the index
    (itself junk) and finds its pair (one positive).
(c) ``copy detection``: the demo's set (``heatsearch.app.demo``: scikit-image photos and their
    crops, rotations, scalings, JPEG, colour, blur and occlusion edits) indexed together; its
    queries find the other copies of their photo (several positives).
(d) ``phototourism``: 13 photos of 4 landmarks indexed together, every photo a query.

With ``--holidays``, a second table: INRIA Holidays (``holidays/`` of the data: the paper
authors' 1491 HeW descriptors of VGG16, 500 queries, each in the collection) for the candidates
that only change the whitening, learned on the 1491 descriptors as an index learns it on its
images (signed square root + L2, then the candidate's whitening): a larger collection of
several photos per place, whose descriptors come from another network.

Every candidate is an :class:`heatsearch.IndexConfig` (plus, for the variants of HeW, pooling
arguments); the index is built exactly as ``Index.add`` builds it (HeW mean, whitening learned
on the database when it has enough images), then every query is ranked with each re-ranker
and scored by mAP (revisitop's ``compute_map``, in percent). Candidates that learn a whitening
with ``whiten_copies`` (the default) also extract a synthetic copy of every database image, as
``Index.add`` does. Feature maps (of images and of their copies) are extracted once per image
and extractor setting and cached under ``--cache``; the first run takes about ten minutes on
2 cores, later ones seconds per candidate.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import heatsearch as hs
from heatsearch.app.index import Index, IndexConfig
from heatsearch.pipeline import rank

Protocol = Tuple[List[str], List[str], List[Dict[str, np.ndarray]]]

#: Candidates by name: IndexConfig changes from the default, and HeW pooling arguments. "full",
#: "sS" and "lw" learn the whitening on the covariance alone (heatsearch before the
#: near-duplicate groups); "default", "dupT" and "sS+dup" add the scatter of the groups that
#: the pairs at centred cosine >= T (0.8 by default: IndexConfig.whiten_duplicates) and the
#: neighbours' rule form, "sS+dup" with shrinkage S.
CANDIDATES: Dict[str, Tuple[Dict[str, Any], Dict[str, Any]]] = {
    "default": ({}, {}),
    # heatsearch's defaults before the synthetic copies (shrinkage 0.5, pairs at 0.8).
    "no-copies": ({"whiten_copies": False}, {}),
    "full": ({"shrinkage": 0.0, "whiten_duplicates": None, "whiten_copies": False}, {}),
    "none": ({"whiten": "none"}, {}),
    **{f"s{s}": ({"shrinkage": s, "whiten_duplicates": None, "whiten_copies": False}, {})
       for s in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)},
    "lw": ({"shrinkage": "ledoit-wolf", "whiten_duplicates": None, "whiten_copies": False}, {}),
    **{f"dup{t}": ({"whiten_duplicates": t, "whiten_copies": False}, {}) for t in (0.6, 0.65, 0.7, 0.75, 0.85, 0.9)},
    **{f"s{s}+dup": ({"shrinkage": s, "whiten_copies": False}, {}) for s in (0.1, 0.2, 0.3, 0.4, 0.6, 0.7)},
    # The default (with copies) at other shrinkages, and without the near-duplicate groups.
    **{f"copies-s{s}": ({"shrinkage": s}, {}) for s in (0.1, 0.2, 0.3, 0.4, 0.6, 0.7)},
    "copies-nodup": ({"whiten_duplicates": None}, {}),
    "hew-t0.1": ({}, {"threshold": 0.1}),
    "gem": ({"pooling": "gem"}, {}),
    "rmac": ({"pooling": "rmac"}, {}),
    "spoc": ({"pooling": "spoc"}, {}),
    # One scale (heatsearch index --single-scale), database and queries: the latency option.
    "1scale": ({"scales": (1.0,)}, {}),
}


class _CachedExtractor:
    """An :class:`~heatsearch.vision.extract.Extractor` whose feature maps are kept on disk,
    keyed by the image file (path, size, mtime) and the extractor's settings."""

    def __init__(self, config: IndexConfig, cache: Path) -> None:
        from heatsearch.vision.extract import Extractor

        # Built at once (no network run yet): its runtime (ONNX Runtime where installed, else
        # torch; maps agree within 1e-5) is part of the cache key.
        self._inner = Extractor(backbone=config.backbone, layer=config.layer, max_size=config.max_size, scales=config.scales)
        self.runtime = self._inner.runtime
        self.scales = tuple(config.scales)
        self._settings = f"{config.backbone}|{config.layer}|{config.max_size}|{config.scales}|{self.runtime}"
        self._cache = cache
        self._memory: Dict[str, List[np.ndarray]] = {}
        cache.mkdir(parents=True, exist_ok=True)

    def feature_map(self, image: Any, bbox: Any = None) -> List[np.ndarray]:
        assert bbox is None, "the protocols crop nothing"
        if isinstance(image, np.ndarray):  # a synthetic copy: keyed by its pixels
            digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
            key = hashlib.sha1(f"{self._settings}|{image.shape}|{digest}".encode()).hexdigest()
        else:
            path = os.fspath(image)
            st = os.stat(path)
            key = hashlib.sha1(f"{self._settings}|{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        if key in self._memory:
            return self._memory[key]
        file = self._cache / f"{key}.npz"
        if file.exists():
            with np.load(file) as npz:
                maps = [npz[f"arr_{i}"] for i in range(len(npz.files))]
        else:
            out = self._inner.feature_map(image)
            maps = [out] if isinstance(out, np.ndarray) else list(out)
            tmp = file.with_suffix(".tmp.npz")
            np.savez(tmp, *maps)
            os.replace(tmp, file)
        self._memory[key] = maps
        return maps


class _AtScales:
    """A :class:`_CachedExtractor`'s maps at some of its scales only (cached once for all)."""

    def __init__(self, inner: _CachedExtractor, scales: Sequence[float]) -> None:
        missing = [s for s in scales if s not in inner.scales]
        assert not missing, f"scales {missing} are not among the cached ones {inner.scales}"
        self._inner, self.runtime = inner, inner.runtime
        self._keep = [i for i, s in enumerate(inner.scales) if s in scales]

    def feature_map(self, image: Any, bbox: Any = None) -> List[np.ndarray]:
        maps = self._inner.feature_map(image, bbox)
        return [maps[i] for i in self._keep]


class _VariantIndex(Index):
    """An Index whose HeW pooling takes extra arguments (e.g. the paper's threshold 0.1)."""

    pool_kwargs: Dict[str, Any] = {}

    def _pool_arguments(self) -> Dict[str, Any]:
        base = super()._pool_arguments()
        return {**base, **self.pool_kwargs} if self.config.pooling == "hew" else base


def smvs_query_to_database(data: Path) -> Protocol:
    refs = sorted(str(p) for p in (data / "smvs_paintings" / "Reference").glob("*.jpg"))
    names = [Path(p).name for p in refs]
    queries = sorted(str(p) for p in (data / "smvs_paintings" / "Query").glob("*.jpg"))
    gnd = [{"ok": np.array([names.index(Path(q).name)]), "junk": np.array([], int)} for q in queries]
    return refs, queries, gnd


def smvs_in_collection(data: Path) -> Protocol:
    refs, queries, _ = smvs_query_to_database(data)
    images = refs + queries
    n = len(refs)
    gnd = [{"ok": np.array([(i + n) % (2 * n)]), "junk": np.array([i])} for i in range(2 * n)]
    return images, images, gnd


def copy_detection(cache: Path) -> Protocol:
    from PIL import Image

    from heatsearch.app.demo import build_copy_detection_set

    folder = cache / "demo-images"
    data = build_copy_detection_set()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (img, name) in enumerate(zip(data.images, data.names)):
        path = folder / f"{i:03d}-{name.replace('/', '-')}.png"
        if not path.exists():
            Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths, [paths[r] for r in data.query_rows], data.gnd


def phototourism(data: Path) -> Protocol:
    photos = sorted(str(p) for p in (data / "phototourism").glob("*.jpg"))
    landmark = ["_".join(Path(p).stem.split("_")[:-2]) for p in photos]
    gnd = [
        {"ok": np.array([j for j, other in enumerate(landmark) if other == lm and j != i]), "junk": np.array([i])}
        for i, lm in enumerate(landmark)
    ]
    return photos, photos, gnd


PROTOCOLS: Dict[str, Callable[[Path, Path], Protocol]] = {
    "(a) smvs q->db": lambda data, cache: smvs_query_to_database(data),
    "(b) smvs in-collection": lambda data, cache: smvs_in_collection(data),
    "(c) copy detection": lambda data, cache: copy_detection(cache),
    "(d) phototourism": lambda data, cache: phototourism(data),
}


def evaluate(
    protocol: Protocol, config: IndexConfig, pool_kwargs: Dict[str, Any], extractor: _CachedExtractor,
    rerankers: Sequence[Optional[str]],
) -> Dict[Optional[str], float]:
    """mAP (percent) of every re-ranker on one protocol with one candidate configuration."""
    import warnings

    db, queries, gnd = protocol
    view = extractor if tuple(config.scales) == extractor.scales else _AtScales(extractor, config.scales)
    index = _VariantIndex(config=config, extractor=view)
    index.pool_kwargs = pool_kwargs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index.add(db)
    X = np.asarray(index.descriptors)
    row = {p: i for i, p in enumerate(index.paths)}
    Q = np.stack([X[row[q]] if q in row else index.describe(q) for q in queries])
    return _map_per_reranker(X, Q, gnd, rerankers)


def _map_per_reranker(
    X: np.ndarray, Q: np.ndarray, gnd: List[Dict[str, np.ndarray]], rerankers: Sequence[Optional[str]]
) -> Dict[Optional[str], float]:
    """mAP (percent) of the final descriptors ``X`` queried by ``Q`` with each re-ranker (their
    warnings, e.g. a re-ranker that cannot change a collapsed index, silenced)."""
    import warnings

    out = {}
    for r in rerankers:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranks, _ = rank(X, Q, rerank=r)
        out[r] = 100 * hs.compute_map(ranks, gnd).map
    return out


#: IndexConfig fields a candidate may change and still be measured on Holidays' descriptors.
_WHITENING_FIELDS = {"whiten", "shrinkage", "whiten_duplicates", "whiten_copies"}


def holidays(data: Path) -> Tuple[np.ndarray, np.ndarray, List[Dict[str, np.ndarray]]]:
    """The paper authors' Holidays descriptors ``(1491, 512)`` in float64 (stored as float32),
    the 500 query rows and their ground truth (0-based; the query itself is junk)."""
    gt = hs.load_ground_truth(data / "holidays" / "gnd_holidays.mat")
    X = hs.load_descriptors(data / "holidays" / "vecs_ho.mat", expected_count=gt.n_images)
    return X.astype(np.float64), np.asarray(gt.query_indices), gt.protocol("classic")


def evaluate_holidays(
    X: np.ndarray, qidx: np.ndarray, gnd: List[Dict[str, np.ndarray]], config: IndexConfig,
    rerankers: Sequence[Optional[str]],
) -> Dict[Optional[str], float]:
    """mAP (percent) of every re-ranker on Holidays with the candidate's whitening learned on the
    1491 descriptors (as :meth:`Index.refit_whitening` learns it)."""
    if config.whiten == "none":
        post = hs.PostProcess(None, power=config.power)
    else:
        post = hs.PostProcess.fit(X, power=config.power, shrinkage=config.shrinkage, duplicates=config.whiten_duplicates)
    Y = post(X).astype(np.float32)
    return _map_per_reranker(Y, Y[qidx], gnd, rerankers)


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("HEATSEARCH_SHARED_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "heatsearch-protocols"))
    ap.add_argument("--candidates", default="full,none,s0.1,s0.3,lw,s0.5,s0.7,s0.9,dup0.7,dup0.75,no-copies,dup0.85,s0.3+dup,default,copies-s0.3,copies-s0.7,copies-nodup,hew-t0.1,gem,rmac", help=f"of {', '.join(CANDIDATES)}")
    ap.add_argument("--rerankers", default="none,heat,auto", help="of none, " + ", ".join(r for r in hs.RERANKERS if r))
    ap.add_argument("--holidays", action="store_true", help="also the table on INRIA Holidays (authors' descriptors)")
    args = ap.parse_args(argv)
    data, cache = Path(args.data), Path(args.cache)
    rerankers = [None if r == "none" else r for r in args.rerankers.split(",")]
    protocols = {name: make(data, cache) for name, make in PROTOCOLS.items()}
    extractor = _CachedExtractor(IndexConfig(), cache / "maps")
    print(f"<!-- feature maps: {extractor.runtime} runtime -->")
    head = [f"{p} {r or 'plain'}" for p in protocols for r in rerankers]
    print("| candidate | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(head))
    for name in args.candidates.split(","):
        changes, pool_kwargs = CANDIDATES[name]
        config = replace(IndexConfig(), **changes)
        t = time.perf_counter()
        cells = []
        for protocol in protocols.values():
            scores = evaluate(protocol, config, pool_kwargs, extractor, rerankers)
            cells += [f"{scores[r]:.1f}" for r in rerankers]
        print(f"| {name} | " + " | ".join(cells) + f" |  <!-- {time.perf_counter() - t:.0f} s -->", flush=True)
    if args.holidays:
        X, qidx, gnd = holidays(data)
        print()
        print("| candidate | " + " | ".join(f"Holidays {r or 'plain'}" for r in rerankers) + " |")
        print("|---|" + "---|" * len(rerankers))
        for name in args.candidates.split(","):
            changes, pool_kwargs = CANDIDATES[name]
            config = replace(IndexConfig(), **changes)
            if pool_kwargs or not set(changes) <= _WHITENING_FIELDS or (config.whiten == "auto" and config.whiten_copies):
                continue  # Holidays has descriptors only: no image to extract, edit or copy
            scores = evaluate_holidays(X, qidx, gnd, config, rerankers)
            print(f"| {name} | " + " | ".join(f"{scores[r]:.1f}" for r in rerankers) + " |", flush=True)


if __name__ == "__main__":
    main()
