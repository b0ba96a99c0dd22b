"""Calibrates the default thresholds of ``heatsearch duplicates`` on copies of real photos.

    python tools/calibrate_duplicates.py [--photos DIR ...] [--cache DIR] [--thresholds 0.20:0.95:0.01]

The images (:func:`heatsearch.app.demo.build_copy_detection_set`): every photo shipped with
scikit-image and one copy of it per edit (crop, rotation, scaling, JPEG, colour, blur,
occlusion), 17 x 8 = 136 images; with ``--photos``, every image of those folders too, with the
same seven edits. Photos of the same place or object taken by different people (phototourism's
landmarks, a painting's reference and its phone photo in smvs_paintings) are the hard
negatives: they are not copies of one another, and only the copies of one photo count as its
duplicates. They are written as PNG files to a temporary folder and indexed with the DEFAULT
:class:`heatsearch.IndexConfig` (as ``heatsearch index`` would); the index is saved to
``--cache`` (a folder under the temporary directory by default) so a re-run skips the
extraction (a few minutes on 2 cores). A cached index re-learns its whitening with the current
code (:meth:`Index.refit_whitening`), so a new whitening default is measured without
extracting again.

A pair of images is a true duplicate when both come from the same photo. Collections differ in
how many copies they hold and in how alike their photos are, so the thresholds are chosen on
several COLLECTIONS drawn from the indexed images (each image keeps the pooled descriptor the
index extracted; each collection learns its own whitening, as an index of those images would):

* ``demo``: the demo's 17 photos with all their copies (136 images);
* with ``--photos``: ``all`` (every image); ``sparse`` (every photo, one copy of 10% of them),
  ``bursts`` (every photo, three copies of 30% of them) and, per folder of at least 64 photos,
  its photos with two copies of 20% of them: three random draws each; ``small`` (40 photos,
  two copies of 4 of them: under 64 images, so no whitening), three draws; ``originals`` (every
  photo once: no true pair, so the tables count its wrongly grouped pairs instead).

Three descriptors are measured, the two :meth:`Index.duplicates` may compare and a candidate:

* ``whitened``: whitened by the default whitening learned on the collection (shrinkage 0.5,
  its near-duplicate groups at 0.8), as :meth:`Index.duplicates` learns it (collections of at
  least 64 images);
* ``whitened+copies``: the same whitening with a synthetic copy of each of the collection's
  images as matching pairs (:func:`heatsearch.vision.copies.synthetic_copy`, as the index's
  own whitening learns it: ``IndexConfig.whiten_copies``); the copies' pooled rows are
  extracted once and cached beside the index (``CACHE.copies.npy``);
* ``unwhitened``: signed square root + L2 of :attr:`Index.pooled` (every collection: what an
  index of fewer than 64 images compares).

For every threshold of the sweep and every collection the script prints the precision and
recall of the pairs put in one group (connected components: what a user sees, chaining
included) and picks each descriptor's default by one rule: **the threshold whose lowest F1 over
the collections (every draw counted; ``originals``, which has no true pair, only printed) is
the highest**; ties: the highest mean F1, then the lowest threshold. The defaults come from
the run with the three ``--photos`` folders of the README; the demo's set alone is too easy
to choose them (any whitened threshold from 0.2 to 0.5 is perfect there, so the rule picks
the lowest of the sweep, and says so).
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
from typing import Dict, Iterator, List, Optional, Tuple

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
    """The index of every image (cached in ``cache``) and the pooled rows ``(n, C)`` float32
    of a synthetic copy of each (``cache.copies.npy``; NaN rows for a copy that failed)."""
    from heatsearch import Index, IndexConfig
    from heatsearch.app.demo import build_copy_detection_set

    copies_file = cache.rstrip(os.sep) + ".copies.npy"
    if os.path.isfile(os.path.join(cache, "index.json")) and os.path.isfile(copies_file):
        index = Index.load(cache, mmap=False)
        today = IndexConfig()
        if replace(index.config, shrinkage=today.shrinkage, whiten_duplicates=today.whiten_duplicates) == today:
            index.config = today  # the extraction is today's: the whitening is learned again below
            if index.whitening_learned:  # learned again by today's code
                index.refit_whitening()
            return index, np.load(copies_file)
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
        # The copies again, one row each (the index keeps only their sum): the same copies,
        # seeded by the path, for each collection's own whitening.
        sources, rows = index._pooled_copies(index.paths, True)
        copies = np.full((len(index), rows.shape[1] if rows.size else np.shape(index.pooled)[1]), np.nan, np.float32)
        copies[sources] = rows
        np.save(copies_file, copies)
    return index, copies


def _pair_truth(index) -> np.ndarray:
    """``(n, n)`` bool: both images come from the same photo (the folder ``photo/edit.png``)."""
    photo = np.array([os.path.basename(os.path.dirname(p)) for p in index.paths])
    return photo[:, None] == photo[None, :]


def _grouped(X: np.ndarray, truth: np.ndarray, t: float) -> Tuple[float, float, int]:
    """Precision, recall and number of wrong pairs of the pairs put in one group at ``t``
    (precision 1 when nothing is grouped, recall 1 when there is nothing to find)."""
    from heatsearch import duplicate_groups

    n = X.shape[0]
    grouped = np.zeros((n, n), bool)
    for g in duplicate_groups(X, t):
        grouped[np.ix_(g.rows, g.rows)] = True
    upper = np.triu(np.ones((n, n), bool), k=1)
    chosen, positives = grouped & upper, truth & upper
    hits = int((chosen & truth).sum())
    precision = hits / chosen.sum() if chosen.any() else 1.0
    recall = hits / positives.sum() if positives.any() else 1.0
    return precision, recall, int(chosen.sum()) - hits


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


DRAWS = 3  # random draws of each collection but demo, all and originals


def _collections(names: List[str], seed: int, photos: bool) -> Dict[str, List[np.ndarray]]:
    """Each collection's draws: rows of the index (ascending)."""
    from heatsearch.app.index import AUTO_WHITENING_MIN_IMAGES

    photo = np.array([name.split("/")[0] for name in names])
    original = np.array([name.endswith("/original") for name in names])
    every = np.unique(photo)
    demo = np.array(["-" not in p for p in every])

    def draw(chosen: np.ndarray, fraction: float, copies: int, rng: np.random.Generator) -> np.ndarray:
        edited = set(rng.choice(chosen, max(1, round(fraction * chosen.size)), replace=False).tolist())
        rows = []
        for p in chosen:
            mine = np.flatnonzero(photo == p)
            rows += mine[original[mine]].tolist()
            if p in edited:
                rows += rng.choice(mine[~original[mine]], copies, replace=False).tolist()
        return np.sort(np.array(rows))

    out = {"demo": [np.flatnonzero(np.isin(photo, every[demo]))]}
    if not photos:
        return out
    rng = np.random.default_rng(seed)
    out["all"] = [np.arange(len(names))]
    out["sparse"] = [draw(every, 0.1, 1, rng) for _ in range(DRAWS)]
    out["bursts"] = [draw(every, 0.3, 3, rng) for _ in range(DRAWS)]
    for tag in sorted({p.split("-")[0] for p in every[~demo]}):
        mine = every[np.char.startswith(every.astype(str), tag + "-")]
        if mine.size >= AUTO_WHITENING_MIN_IMAGES:
            out[tag] = [draw(mine, 0.2, 2, rng) for _ in range(DRAWS)]
    out["small"] = [draw(rng.choice(every, 40, replace=False), 0.1, 2, rng) for _ in range(DRAWS)]
    out["originals"] = [np.flatnonzero(original)]
    return out


def _learned(pooled: np.ndarray, power: Optional[float], copies: Optional[np.ndarray] = None):
    """The :class:`PostProcess` whose whitening :meth:`Index.duplicates` learns on ``pooled``
    rows (the default shrinkage and near-duplicate groups; there in blocks, here at once), and
    with ``copies`` (their synthetic copies' pooled rows, NaN where none) as matching pairs."""
    from heatsearch import PostProcess
    from heatsearch.app.index import DEFAULT_SHRINKAGE, WHITEN_DUPLICATES

    pairs = None
    if copies is not None:
        ok = np.isfinite(copies).all(axis=1)
        pairs = (pooled[ok], copies[ok].astype(np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PostProcess.fit(pooled, power=power, shrinkage=DEFAULT_SHRINKAGE, duplicates=WHITEN_DUPLICATES,
                               pairs=pairs)


def _spaces(index, rows: np.ndarray, copies: np.ndarray) -> Dict[str, np.ndarray]:
    """The descriptors of ``rows`` as an index of those images alone would compare them."""
    from heatsearch import PostProcess
    from heatsearch.app.index import AUTO_WHITENING_MIN_IMAGES

    pooled = np.asarray(index.pooled, np.float64)[rows]
    out = {"unwhitened": PostProcess(None, power=index.config.power)(pooled).astype(np.float32)}
    if rows.size >= AUTO_WHITENING_MIN_IMAGES:
        out["whitened"] = _learned(pooled, index.config.power)(pooled).astype(np.float32)
        out["whitened+copies"] = _learned(pooled, index.config.power, copies[rows])(pooled).astype(np.float32)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--cache", help="index folder: read if it holds an index of the default "
                        "configuration, else built and written (default: heatsearch-dup-index-seedN in "
                        "the temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="the demo set's seed and the draws' (default 0)")
    parser.add_argument("--photos", nargs="*", default=[], metavar="DIR",
                        help="folders of real photos added to the set, each with the seven edits")
    parser.add_argument("--thresholds", default="0.20:0.95:0.01",
                        help="sweep as START:STOP:STEP, both ends included (default %(default)s)")
    parser.add_argument("--whitened-at", type=float, default=None, metavar="T",
                        help="the threshold of the whitened descriptors' last tables (per edit, same subject, "
                        "stale whitening; default: each one's choice by the rule), e.g. the library's default")
    parser.add_argument("--show", type=float, default=0.05,
                        help="print every threshold of the sweep that is a multiple of this, and the chosen "
                        "ones (default %(default)s)")
    args = parser.parse_args(argv)
    start, stop, step = (float(v) for v in args.thresholds.split(":"))
    sweep = np.round(np.arange(start, stop + step / 2, step), 6)
    tag = "".join(f"-{t}" for t in _tags(args.photos))
    cache = args.cache or os.path.join(tempfile.gettempdir(), f"heatsearch-dup-index-seed{args.seed}{tag}")
    with warnings.catch_warnings():  # the temporary image folder is gone: descriptors suffice
        warnings.simplefilter("ignore")
        index, copies = _load_or_build(cache, args.seed, args.photos)
    truth = _pair_truth(index)
    pooled = np.asarray(index.pooled, np.float64)
    described = {"whitened": _learned(pooled, index.config.power)(pooled).astype(np.float32),
                 "whitened+copies": _learned(pooled, index.config.power, copies)(pooled).astype(np.float32),
                 "unwhitened": index.unwhitened()}
    print(f"{len(index)} images ({(truth.sum() - len(index)) // 2} same-photo pairs), default IndexConfig, "
          f"whitening: {'learned, ' + str(index.whitening.dim_) + ' dims' if index.whitening is not None else 'none'}; "
          f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print()
    print("| descriptors (all images) | pair AP | same-photo pairs: mean cosine | other pairs: mean | other pairs: max |")
    print("|---|---:|---:|---:|---:|")
    for name, X in described.items():
        print(_separation(name, X, truth))

    names = _names(index)
    collections = _collections(names, args.seed, bool(args.photos))
    # measured[space][collection] = (draws, thresholds, 3): precision, recall, wrong pairs
    measured: Dict[str, Dict[str, np.ndarray]] = {"whitened": {}, "whitened+copies": {}, "unwhitened": {}}
    for label, draws in collections.items():
        for rows in draws:
            sub = truth[np.ix_(rows, rows)]
            for space, X in _spaces(index, rows, copies).items():
                cells = np.array([_grouped(X, sub, float(t)) for t in sweep])
                measured[space].setdefault(label, []).append(cells)
    chosen = {}
    for space, per in measured.items():
        stacked = {label: np.stack(cells) for label, cells in per.items()}
        scored = [label for label in stacked if label != "originals"]
        f1 = np.concatenate([_f1(stacked[label][..., 0], stacked[label][..., 1]) for label in scored])
        lowest, mean = f1.min(axis=0), f1.mean(axis=0)
        best = int(np.lexsort((sweep, -mean, -lowest))[0])
        chosen[space] = float(sweep[best])
        print()
        print(f"{space} descriptors: grouped pairs' precision / recall per collection (mean of its draws; "
              f"`originals`: wrongly grouped pairs), the lowest and mean F1 over every draw")
        print()
        print("| threshold | " + " | ".join(f"{label} ({stacked[label].shape[0]}x{collections[label][0].size})"
                                            for label in stacked) + " | lowest F1 | mean F1 |")
        print("|---:|" + "---:|" * (len(stacked) + 2))
        for i, t in enumerate(sweep):
            if i != best and not np.isclose(t / args.show, round(t / args.show), atol=1e-6):
                continue
            cells = []
            for label, s in stacked.items():
                if label == "originals":
                    cells.append(f"{int(s[:, i, 2].sum())} wrong")
                else:
                    cells.append(f"{s[:, i, 0].mean():.2f} / {s[:, i, 1].mean():.2f}")
            mark = "**" if i == best else ""
            print(f"| {mark}{t:g}{mark} | " + " | ".join(cells) + f" | {lowest[i]:.2f} | {mean[i]:.2f} |")
        print()
        print(f"rule (the highest lowest F1; ties: the highest mean F1): {space} {chosen[space]:g} "
              f"(lowest F1 {lowest[best]:.3f}, mean {mean[best]:.3f})")
        if best in (0, sweep.size - 1):
            print(f"(at an end of the sweep: the {space} threshold is not determined by these collections)")
    if args.whitened_at is not None:
        chosen.update((space, args.whitened_at) for space in chosen if space.startswith("whitened"))
    if "bursts" in collections:
        _stale(index, truth, collections["bursts"], chosen["whitened"])
    for space, X in described.items():
        _per_edit(index, X, chosen[space], space)
        _same_subject(index, X, chosen[space], space)
    _copy_detection(index, truth, args.seed, described)
    return 0


def _stale(index, truth: np.ndarray, draws: List[np.ndarray], t: float) -> None:
    """Why a whitening is learned on the collection as it is (by :meth:`Index.duplicates` at
    each call, and by an "auto" index each time it doubles): the ``bursts`` draws whitened by
    a whitening learned on all their images, or on part of them only (an index's own, learned
    on as few as half its images; before the doubling rule, on its first 64 for ever), then
    their duplicates' F1 at ``t`` and their copy search (every copy a query for the other
    copies of its photo, mAP %)."""
    from heatsearch import PostProcess, compute_map
    from heatsearch.app.index import AUTO_WHITENING_MIN_IMAGES
    from heatsearch.pipeline import rank

    names = _names(index)
    pooled = np.asarray(index.pooled, np.float64)
    parts = {"all of them": lambda rows: rows,
             "their first half": lambda rows: rows[: rows.size // 2],
             f"their first {AUTO_WHITENING_MIN_IMAGES}": lambda rows: rows[:AUTO_WHITENING_MIN_IMAGES],
             "their originals (the copies added later)": lambda rows: rows[[names[r].endswith("/original") for r in rows]],
             "none (unwhitened)": None}
    print()
    print(f"the `bursts` draws whitened by a whitening learned on part of them: duplicates' F1 at {t:g} / copy "
          "search mAP (%)")
    print()
    print("| learned on | " + " | ".join(f"draw {i + 1}" for i in range(len(draws))) + " |")
    print("|---|" + "---:|" * len(draws))
    for label, part in parts.items():
        cells = []
        for rows in draws:
            if part is None:
                X = PostProcess(None, power=index.config.power)(pooled[rows])
                f1 = "-"
            else:
                X = _learned(pooled[part(rows)], index.config.power)(pooled[rows])
                p, r, _ = _grouped(X.astype(np.float32), truth[np.ix_(rows, rows)], t)
                f1 = f"{float(_f1(p, r)):.2f}"
            sub = truth[np.ix_(rows, rows)]
            queries = [q for q in range(rows.size) if sub[q].sum() > 1]
            gnd = [{"ok": np.flatnonzero(sub[q] & (np.arange(rows.size) != q)), "junk": np.array([q])} for q in queries]
            ranks, _ = rank(X, X[queries])
            cells.append(f"{f1} / {100 * compute_map(ranks, gnd).map:.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


def _f1(p, r):
    p, r = np.asarray(p, float), np.asarray(r, float)
    return np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)


def _copy_detection(index, truth: np.ndarray, seed: int, described: Dict[str, np.ndarray]) -> None:
    """Copy detection (mAP, %) in the whole set, for the index's whitening choices (the
    ``described`` descriptors, and the whitening of the covariance alone): the
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
        "none": described["unwhitened"],
        f"covariance alone (shrinkage {today.shrinkage:g})": covariance_alone(pooled).astype(np.float32),
        f"+ near-duplicate groups at {today.whiten_duplicates:g} (the default before the copies)": described["whitened"],
        "+ a synthetic copy of every image (the index's default)": described["whitened+copies"],
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


def _same_subject(index, X: np.ndarray, t: float, space: str) -> None:
    """The hard negatives: originals of different photos of the same place or object."""
    names = _names(index)
    originals = [(i, name.split("/")[0]) for i, name in enumerate(names) if name.endswith("/original")]
    pairs = [(a, b) for (a, sa), (b, sb) in itertools.combinations(originals, 2) if _subject(sa) == _subject(sb)]
    if not pairs:
        return
    cos = np.array([float(X[a] @ X[b]) for a, b in pairs])
    worst = max(range(len(pairs)), key=lambda p: cos[p])
    print()
    print(f"{space}: different photos of the same place or object: {len(pairs)} pairs of originals, cosine mean "
          f"{cos.mean():.3f}, max {cos.max():.3f} ({names[pairs[worst][0]]} / {names[pairs[worst][1]]}); "
          f"linked at {t:.3f}: {(cos >= t).sum()}")


def _per_edit(index, X: np.ndarray, t: float, space: str) -> None:
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
    print(f"| edit ({space}, all images, at {t:g}) | linked to its original | grouped with it | lowest cosine to it |")
    print("|---|---:|---:|---:|")
    for edit in edits:
        pairs = [(row[f"{p}/original"], row[f"{p}/{edit}"]) for p in photos]
        cos = np.array([float(X[a] @ X[b]) for a, b in pairs])
        grouped = sum(group[a] == group[b] for a, b in pairs)
        print(f"| {edit} | {(cos >= t).sum()}/{len(pairs)} | {grouped}/{len(pairs)} | {cos.min():.3f} |")


if __name__ == "__main__":
    sys.exit(main())
