"""Calibrates the default threshold of ``heatsearch duplicates`` on copies of real photos.

    python tools/calibrate_duplicates.py [--photos DIR ...] [--cache DIR] [--thresholds 0.6:0.95:0.025] [--min-precision 0.95]

The set (:func:`heatsearch.app.demo.build_copy_detection_set`): every photo shipped with
scikit-image and one copy of it per edit (crop, rotation, scaling, JPEG, colour, blur,
occlusion), 17 x 8 = 136 images; with ``--photos``, every image of those folders too, with the
same seven edits. Photos of the same place or object taken by different people (phototourism's
landmarks, a painting's reference and its phone photo in smvs_paintings) are the hard
negatives: they are not copies of one another, and only the copies of one photo count as its
duplicates. They are written as PNG files to a temporary folder and
indexed with the DEFAULT :class:`heatsearch.IndexConfig` (as ``heatsearch index`` would); the
index is saved to ``--cache`` (a folder under the temporary directory by default) so a re-run skips the extraction (a few minutes on 2 cores). A
cached index re-learns its whitening with the current code (:meth:`Index.refit_whitening`),
so a new whitening default is measured without extracting again.

A pair of images is a true duplicate when both come from the same photo. For every threshold
of the sweep the script prints, for two descriptors,

* ``plain``: the unwhitened ones (signed square root + L2 of :attr:`Index.pooled`), what
  :meth:`Index.duplicates` compares;
* ``index``: the index's final descriptors (after its learned whitening),

the precision and recall of the pairs put in the same group (connected components: what a
user sees, chaining included) and of the pairs linked directly (cosine >= threshold), and
picks the default by the rule: the lowest threshold whose grouped-pair precision on the
``plain`` descriptors reaches ``--min-precision`` (0.95), i.e. the best recall at that
precision; it also prints the threshold of the best grouped-pair F1.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import sys
import tempfile
import warnings
from dataclasses import replace
from typing import Iterator, List, Optional, Tuple

import numpy as np


def _tags(folders: List[str]) -> List[str]:
    """A short name per folder for the images' names: its base name (without '-', which
    separates it from the photo's name), numbered when two folders share one."""
    names = [os.path.basename(os.path.normpath(f)).replace("-", "_") for f in folders]
    return [f"{n}{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _photo_sets(folders: List[str], seed: int) -> Iterator[Tuple[np.ndarray, str]]:
    """``(image, name)`` for each image of ``folders`` (``tag-stem/original``) and its seven
    edited copies (``tag-stem/<edit>``), RGB uint8, one photo in memory at a time."""
    from PIL import Image

    from heatsearch.app.demo import EDITS

    rng = np.random.default_rng(seed)
    for folder, tag in zip(folders, _tags(folders)):
        for name in sorted(os.listdir(folder)):
            if not name.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            with Image.open(os.path.join(folder, name)) as im:
                original = np.asarray(im.convert("RGB"))
            stem = f"{tag}-{os.path.splitext(name)[0]}"
            yield original, f"{stem}/original"
            for edit, apply in EDITS.items():
                yield apply(original, rng), f"{stem}/{edit}"


def _load_or_build(cache: str, seed: int, folders: List[str]):
    from heatsearch import Index, IndexConfig
    from heatsearch.app.demo import build_copy_detection_set

    if os.path.isfile(os.path.join(cache, "index.json")):
        index = Index.load(cache, mmap=False)
        today = IndexConfig()
        if replace(index.config, shrinkage=today.shrinkage, whiten_duplicates=today.whiten_duplicates) == today:
            index.config = today  # the extraction is today's: the whitening is learned again below
            if index.whitening_learned:  # learned again by today's code
                index.refit_whitening()
            return index
        print(f"{cache} was built with another configuration than today's default: extracting again")
    from PIL import Image

    data = build_copy_detection_set(seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        for image, name in itertools.chain(zip(data.images, data.names), _photo_sets(folders, seed)):
            path = os.path.join(folder, name + ".png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(image).save(path)
        index = Index.build(folder, IndexConfig(), progress=True)
        index.save(cache)
    return index


def _pair_truth(index) -> np.ndarray:
    """``(n, n)`` bool: both images come from the same photo (the folder ``photo/edit.png``)."""
    photo = np.array([os.path.basename(os.path.dirname(p)) for p in index.paths])
    return photo[:, None] == photo[None, :]


def _measure(X: np.ndarray, truth: np.ndarray, t: float) -> Tuple[float, float, float, float]:
    """Precision and recall of the linked pairs (cosine >= t) and of the grouped pairs."""
    from heatsearch import duplicate_groups

    n = X.shape[0]
    linked = np.zeros((n, n), bool)
    grouped = np.zeros((n, n), bool)
    for g in duplicate_groups(X, t):
        linked[g.pairs[:, 0], g.pairs[:, 1]] = True
        grouped[np.ix_(g.rows, g.rows)] = True
    upper = np.triu(np.ones((n, n), bool), k=1)
    positives = (truth & upper).sum()
    out = []
    for chosen in (linked & upper, grouped & upper):
        hits = (chosen & truth).sum()
        out += [hits / chosen.sum() if chosen.sum() else float("nan"), hits / positives]
    return out[0], out[1], out[2], out[3]


def _separation(name: str, X: np.ndarray, truth: np.ndarray) -> str:
    """A table row: the average precision of all pairs ranked by cosine (threshold-free), and
    the cosines of same-photo and other pairs."""
    i, j = np.triu_indices(X.shape[0], k=1)
    X64 = X.astype(np.float64)
    cos = (X64 @ X64.T)[i, j]
    same = truth[i, j]
    hits = same[np.argsort(-cos, kind="stable")]
    ap = float((np.cumsum(hits) / np.arange(1, hits.size + 1))[hits].mean())
    return (f"| {name} | {ap:.3f} | {cos[same].mean():.4f} | {cos[~same].mean():.4f} | "
            f"{cos[~same].max():.4f} |")


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _cell(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:.3f}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--cache", help="index folder: read if it holds an index of the default "
                        "configuration, else built and written (default: heatsearch-dup-index-seedN in "
                        "the temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="the demo set's seed (default 0)")
    parser.add_argument("--photos", nargs="*", default=[], metavar="DIR",
                        help="folders of real photos added to the set, each with the seven edits")
    parser.add_argument("--thresholds", default="0.60:0.95:0.025",
                        help="sweep as START:STOP:STEP, both ends included (default %(default)s)")
    parser.add_argument("--min-precision", type=float, default=0.95,
                        help="the rule: the lowest threshold whose GROUPED-pair precision on the plain "
                        "descriptors reaches this (default %(default)s)")
    args = parser.parse_args(argv)
    start, stop, step = (float(v) for v in args.thresholds.split(":"))
    sweep = np.round(np.arange(start, stop + step / 2, step), 6)
    tag = "".join(f"-{t}" for t in _tags(args.photos))
    cache = args.cache or os.path.join(tempfile.gettempdir(), f"heatsearch-dup-index-seed{args.seed}{tag}")
    with warnings.catch_warnings():  # the temporary image folder is gone: descriptors suffice
        warnings.simplefilter("ignore")
        index = _load_or_build(cache, args.seed, args.photos)
    truth = _pair_truth(index)
    described = {
        "plain": index.unwhitened(),
        "index": np.asarray(index.descriptors, np.float32),
    }
    print(f"{len(index)} images ({(truth.sum() - len(index)) // 2} same-photo pairs), default IndexConfig, "
          f"whitening: {'learned, ' + str(index.whitening.dim_) + ' dims' if index.whitening is not None else 'none'}; "
          f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print()
    print("| descriptors | pair AP | same-photo pairs: mean cosine | other pairs: mean | other pairs: max |")
    print("|---|---:|---:|---:|---:|")
    for name, X in described.items():
        print(_separation(name, X, truth))
    print()
    print("| threshold | plain: group P | group R | group F1 | link P | link R | index: group P | group R |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    chosen = None
    best = (-1.0, 0.0)
    for t in sweep:
        lp, lr, gp, gr = _measure(described["plain"], truth, float(t))
        _, _, ip, ir = _measure(described["index"], truth, float(t))
        f1 = _f1(gp, gr)
        best = max(best, (f1, float(t)))
        print(f"| {t:.3f} | {_cell(gp)} | {gr:.3f} | {f1:.3f} | {_cell(lp)} | {lr:.3f} | {_cell(ip)} | {ir:.3f} |")
        if chosen is None and gp >= args.min_precision:
            chosen = (float(t), gp, gr)
    print()
    if chosen is None:
        print(f"no threshold of the sweep reaches a grouped-pair precision of {args.min_precision}")
    else:
        print(f"rule (the lowest threshold with grouped-pair precision >= {args.min_precision} on plain "
              f"descriptors): {chosen[0]:.3f} (precision {chosen[1]:.3f}, recall {chosen[2]:.3f}); "
              f"best grouped-pair F1 {best[0]:.3f} at {best[1]:.3f}")
    if chosen is not None:
        _per_edit(index, described["plain"], chosen[0])
        _same_subject(index, described["plain"], chosen[0])
    _copy_detection(index, truth, args.seed, described["plain"], described["index"])
    return 0


def _copy_detection(index, truth: np.ndarray, seed: int, unwhitened: np.ndarray, final: np.ndarray) -> None:
    """Copy detection (mAP, %) in the whole set, for the index's whitening choices (its
    ``unwhitened`` and ``final`` descriptors, and the whitening of the covariance alone): the
    demo's queries (those of ``tools/protocols.py``'s protocol (c), here among every image of
    the set) and every image as a query, each finding the other copies of its photo."""
    from heatsearch import IndexConfig, PostProcess, compute_map
    from heatsearch.app.demo import build_copy_detection_set
    from heatsearch.pipeline import rank

    names = _names(index)
    row = {name: i for i, name in enumerate(names)}
    demo = build_copy_detection_set(seed=seed)
    queries = {"the demo's queries": np.array([row[demo.names[q]] for q in demo.query_rows]),
               "every image": np.arange(len(names))}
    pooled = np.asarray(index.pooled, np.float64)
    today = IndexConfig()
    covariance_alone = PostProcess.fit(pooled, power=today.power, shrinkage=today.shrinkage)
    choices = {
        "none": unwhitened,
        f"covariance alone (shrinkage {today.shrinkage:g})": covariance_alone(pooled).astype(np.float32),
        f"default (+ near-duplicate groups at {today.whiten_duplicates:g})": final,
    }
    print()
    print(f"copy detection among the {len(names)} images (mAP, %; positives: the other copies of the query's photo)")
    print()
    print("| whitening | " + " | ".join(f"{q}: plain | auto" for q in queries) + " |")
    print("|---|" + "---:|---:|" * len(queries))
    for label, X in choices.items():
        cells = []
        for rows in queries.values():
            gnd = [{"ok": np.flatnonzero(truth[q] & (np.arange(len(names)) != q)), "junk": np.array([q])} for q in rows]
            for rerank in (None, "auto"):
                ranks, _ = rank(X, X[rows], rerank=rerank)
                cells.append(f"{100 * compute_map(ranks, gnd).map:.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


def _names(index) -> List[str]:
    """Each image's ``photo/edit`` name: its path relative to the index's root, no suffix."""
    return [os.path.splitext(os.path.relpath(p, index.root))[0].replace(os.sep, "/") for p in index.paths]


def _subject(stem: str) -> str:
    """What a photo shows: its name without the folder tag and trailing numeric ids
    (``phototourism-london_bridge_19481797_2295892421`` -> ``london_bridge``,
    ``Query-001`` and ``Reference-001`` -> ``001``)."""
    name = stem.split("-", 1)[-1]
    return re.sub(r"(_\d+)+$", "", name) or name


def _same_subject(index, X: np.ndarray, t: float) -> None:
    """The hard negatives: originals of different photos of the same place or object."""
    names = _names(index)
    originals = [(i, name.split("/")[0]) for i, name in enumerate(names) if name.endswith("/original")]
    pairs = [(a, b) for (a, sa), (b, sb) in itertools.combinations(originals, 2) if _subject(sa) == _subject(sb)]
    if not pairs:
        return
    cos = np.array([float(X[a] @ X[b]) for a, b in pairs])
    worst = max(range(len(pairs)), key=lambda p: cos[p])
    print()
    print(f"different photos of the same place or object: {len(pairs)} pairs of originals, cosine mean "
          f"{cos.mean():.3f}, max {cos.max():.3f} ({names[pairs[worst][0]]} / {names[pairs[worst][1]]}); "
          f"linked at {t:.3f}: {(cos >= t).sum()}")


def _per_edit(index, X: np.ndarray, t: float) -> None:
    """For each edit: how many copies are linked to, and grouped with, their original at ``t``."""
    from heatsearch import duplicate_groups

    names = _names(index)
    row = {name: i for i, name in enumerate(names)}
    photos = sorted({name.split("/")[0] for name in names})
    edits = [name.split("/")[1] for name in names if name.startswith(photos[0] + "/") and not name.endswith("/original")]
    group = np.arange(len(names))
    for g in duplicate_groups(X, t):
        group[g.rows] = g.rows[0]
    print()
    print(f"| edit (at {t:.3f}) | linked to its original | grouped with it | lowest cosine to it |")
    print("|---|---:|---:|---:|")
    for edit in edits:
        pairs = [(row[f"{p}/original"], row[f"{p}/{edit}"]) for p in photos]
        cos = np.array([float(X[a] @ X[b]) for a, b in pairs])
        grouped = sum(group[a] == group[b] for a, b in pairs)
        print(f"| {edit} | {(cos >= t).sum()}/{len(pairs)} | {grouped}/{len(pairs)} | {cos.min():.3f} |")


if __name__ == "__main__":
    sys.exit(main())
