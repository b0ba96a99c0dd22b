"""Distributed indexing on Ray Data: the same index as :meth:`heatsearch.app.Index.build`,
its images extracted by a pool of workers on a Ray cluster.

>>> from heatsearch.distributed import build_index
>>> index = build_index(paths, output="photos.index")              # a local cluster
>>> index = build_index(paths, output="photos.index", address="auto")  # a running one

or ``heatsearch index PHOTOS/ -o photos.index --ray [ADDRESS]``. Needs Ray Data
(``pip install "heatsearch[ray]"``).

The build, in three stages (docs/DISTRIBUTED.md has the design, its measurements and where
it stops scaling):

1. **The HeW centering mean** (HeW pooling only): the images :func:`~heatsearch.app.index.mean_sample`
   picks (``IndexConfig.mean_sample``, the rule :meth:`Index.add` follows) go through the
   pipeline below; each worker returns the float64 sum of its maps' cells and their count, the
   driver adds them up (the mean of every cell, as :func:`heatsearch.hew.local_mean`). Those
   images are extracted again in stage 2: the mean must be known before anything is pooled,
   and keeping their maps (megabytes each) would cost more than ``mean_sample`` (256) extra
   images on a cluster.
2. **Extraction and pooling**: the remaining paths, in parts of ``batch_size`` images, flow
   through a Ray Data pipeline: read the part's paths -> decode and resize (tasks, Pillow via
   :mod:`heatsearch.vision.images`, :data:`DECODE_CPUS` each) -> an actor pool of extractors
   (``ActorPoolStrategy``; one :class:`~heatsearch.vision.extract.Extractor` per actor, built
   once, on ONNX Runtime where installed; :data:`WORKER_CPUS` each) which runs the network,
   pools each map with the mean exactly as :meth:`Index.add` does (and, when the index learns
   its whitening with ``IndexConfig.whiten_copies``, extracts and pools a synthetic copy of
   each image, as :meth:`Index.add` does), and writes the part:
   ``OUTPUT/.heatsearch-parts/part-<hash of its paths>.npz`` (paths, pooled rows, the copies'
   pooled rows and the ``(path, reason)`` of images it could not use), atomically (temp file, fsync,
   ``os.replace``: :mod:`heatsearch._atomic`). A rerun after a crash or a kill skips every
   path already in a finished part (resumable).
3. **On the driver**, without holding every row (see ``_assemble``): the parts' paths are put
   in :meth:`Index.add`'s order (the mean's sample first, then the others in the order
   given), their rows copied part by part into a shard file in the parts folder, the
   whitening learned on all of them as :meth:`Index.add` learns it but from float64 block
   sums (:meth:`PostProcess._fit_blocks`) and the copies' difference scatter summed part by
   part (:func:`~heatsearch.app.index.pair_scatter`), the final descriptors written beside them a block
   at a time, the index saved (:meth:`Index.save`, atomic; it hard-links that shard) and only
   then are the parts removed. Memory: one part, :data:`ASSEMBLY_ROWS` rows, two ``C x C``
   float64 matrices, the whitening's sample of rows searched for near-duplicate pairs (at
   most :data:`~heatsearch.whitening.DUPLICATE_SAMPLE`) and the paths (docs/DISTRIBUTED.md
   measures it).

Failures: an image that cannot be read, decoded or gives a map with NaN is reported in
``Index.skipped`` with the local path's reason (and warned about), never failing the job. A
worker that dies (killed, out of memory, a crash in native code) is restarted by Ray and its
part retried (:data:`MAX_RESTARTS`, :data:`MAX_TASK_RETRIES`: bounded, so that an image that
crashes every worker ends the retries); a part that still fails is reported, its images
skipped with the reason, and the rest of the job goes on (Ray Data's ``max_errored_blocks``).

The result equals :meth:`Index.build`'s on the same images (same rows in the same order,
descriptors within float32 rounding: tests/test_distributed.py checks 1e-6).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _validate
from ._atomic import atomic_write
from .app import storage
from .app.index import Index, IndexConfig, learns_whitening, mean_sample, pair_scatter
from .app.storage import PARTS_DIR, check_target
from .errors import InvalidDTypeError, InvalidInputError, MissingDependencyError
from .postprocess import PostProcess
from .whitening import PCAWhitening

__all__ = ["build_index", "DEFAULT_BATCH_SIZE", "PARTS_DIR", "PIP_RAY"]

PathLike = Union[str, "os.PathLike[str]"]

PIP_RAY = 'pip install "heatsearch[ray]"'
#: Images per part (one call of a worker, one file, the unit of resuming and of retries).
#: Each decoded image travels to its worker as about 4 MB of resized inputs (1024 x 768 at the
#: three default scales), so a part of 16 is a block of about 64 MB, half of Ray Data's target
#: block size; a worker's part takes ~3 s at the measured ~5 images/s per worker.
DEFAULT_BATCH_SIZE = 16
#: Ray's logical CPUs a decoding task and an extractor actor reserve. Each CPU of the cluster
#: holds one of each by default (``num_workers`` = the cluster's CPUs): decoding and resizing
#: a photo costs about a quarter of its extraction (measured: docs/DISTRIBUTED.md), and a
#: pool of whole-CPU actors would leave no CPU to decode on (the pipeline then stalls: seen on
#: a 2-CPU cluster with two 1-CPU actors).
DECODE_CPUS = 0.25
WORKER_CPUS = 0.75
#: Restarts of a dead worker and retries of the part it held (Ray's defaults for an actor pool
#: are unbounded: an image that crashes the decoder would be retried forever).
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3
#: The reason given for the images of a part that failed on every try.
FAILED_PART = "its part failed on every try on the Ray cluster (a worker crashed or was killed; see the Ray logs)"

#: Rows stage 3 post-processes at a time on the driver (learning the whitening, computing the
#: final descriptors): 10 MB of float64 at EfficientNet's C = 1280, of which post-processing
#: makes a few copies (about 50 MB at most), whatever the number of images; large enough for
#: the C x C covariance product to run at BLAS speed.
ASSEMBLY_ROWS = 1024
# IndexConfig fields that only stage 3 uses (post-processing, whitening, storage, ANN): parts
# written under other values of these are resumed, since their pooled rows are the same.
_ASSEMBLY_FIELDS = frozenset({"power", "whiten", "shrinkage", "whiten_duplicates", "storage_dtype", "ann", "ann_params"})

_STATE = "state.json"
_MEAN = "mean.npy"


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(f"distributed indexing needs Ray Data: {PIP_RAY}") from e
    return ray


@dataclass(frozen=True)
class _Settings:
    """What every worker needs (pickled to the cluster)."""

    config: Dict[str, Any]
    runtime: str
    threads: int
    parts: str
    factory: Optional[Callable[[IndexConfig, str, int], Any]]
    #: Whether the workers also pool a synthetic copy of each image (Index._makes_copies).
    copies: bool = False


def build_index(
    paths: Sequence[PathLike],
    config: Optional[IndexConfig] = None,
    *,
    output: PathLike,
    address: Optional[str] = None,
    num_workers: Optional[int] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    worker_threads: int = 1,
    whitening: Optional[PCAWhitening] = None,
    root: Optional[PathLike] = None,
    runtime: str = "auto",
    progress: bool = False,
    extractor_factory: Optional[Callable[[IndexConfig, str, int], Any]] = None,
) -> Index:
    """Indexes ``paths`` on a Ray cluster and saves the index to ``output`` (see the module
    docstring); returns it (:meth:`Index.load` opens ``output``).

    Args:
        paths: image files (absolute, or relative to the current directory), each once.
        config: :class:`IndexConfig` (default: its defaults), as :meth:`Index.build`.
        output: the index folder: new, empty, an index (replaced atomically), or what an
            interrupted build to it left (resumed). Checked before anything runs.
        address: a running Ray cluster (``"auto"``, ``"ray://host:10001"``, ...); None: the
            cluster this process already joined, else a new local one (on 127.0.0.1, sized
            ``num_workers`` CPUs, default the machine's), shut down at the end.
        num_workers: extractor actors (default: the cluster's CPUs, so each CPU holds one
            worker and one decoding task: :data:`WORKER_CPUS`, :data:`DECODE_CPUS`).
        batch_size: images per part (:data:`DEFAULT_BATCH_SIZE`).
        worker_threads: ONNX Runtime / torch and heatsearch threads of each worker (default 1:
            one worker per CPU).
        whitening: a PCAWhitening fitted elsewhere (as :meth:`Index.build`); default: learned
            on the index's own images as :meth:`Index.add` does.
        root: the collection's folder (:attr:`Index.root`; default: the deepest folder holding
            every image, as :meth:`Index.save` records).
        runtime: the workers' network runtime (:attr:`Index.runtime`: "auto", "onnx", "torch").
        progress: Ray Data's progress bars.
        extractor_factory: for tests and other networks: ``factory(config, runtime, threads)``
            is called once in each worker (so it must pickle) and returns the extractor,
            which needs ``forward_prepared`` (:class:`~heatsearch.vision.extract.Extractor`'s).

    Raises:
        MissingDependencyError: Ray Data is not installed (``pip install "heatsearch[ray]"``).
        InvalidInputError / InvalidDTypeError: a bad argument, a path twice, no paths, parts
            in ``output`` left by a build of another configuration or image list.
        IndexFileError: ``output`` may not be written (see :func:`~heatsearch.app.storage.check_target`).
    """
    config = config if config is not None else IndexConfig()
    if not isinstance(config, IndexConfig):
        raise InvalidDTypeError(f"config must be an IndexConfig, got {type(config).__name__}")
    new = _paths(paths)
    batch = _validate.integer(batch_size, "batch_size", minimum=1)
    threads = _validate.integer(worker_threads, "worker_threads", minimum=1)
    workers = _validate.optional_integer(num_workers, "num_workers", minimum=1)
    from .vision.extract import RUNTIMES

    _validate.choice(runtime, "runtime", RUNTIMES)
    if address is not None:
        _validate.text(address, "address")
    if root is not None:
        root = _validate.directory(root, "root")
    check_target(output)
    ray = _ray()
    parts = Path(output) / PARTS_DIR
    copies = Index(config=config, whitening=whitening)._makes_copies()
    settings = _Settings(config.to_dict(), runtime, threads, os.path.abspath(parts), extractor_factory, copies)
    with _cluster(ray, address, workers, progress) as cpus:
        size = workers if workers is not None else max(1, int(cpus))
        mean, mean_images, sample_skipped = _write_parts(ray, new, config, settings, size, batch)
    index = _assemble(new, config, settings, mean, mean_images, sample_skipped, whitening, root, runtime)
    if not len(index):
        path, why = index.skipped[0]
        raise InvalidInputError(
            f"none of the {len(new)} images could be read (e.g. {path}: {why}): no index written"
        )
    index.save(output)
    shutil.rmtree(parts, ignore_errors=True)  # only once the index is safely saved
    return index


def _paths(paths: Any) -> List[str]:
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise InvalidDTypeError(f"paths must be a list of paths, got a single {type(paths).__name__}")
    new = [_absolute(p, i) for i, p in enumerate(paths)]
    if not new:
        raise InvalidInputError("paths holds no image: nothing to index")
    if len(set(new)) != len(new):
        seen: set = set()
        twice = sorted({p for p in new if p in seen or seen.add(p)})  # type: ignore[func-returns-value]
        raise InvalidInputError(f"paths lists the same image twice: {twice[:3]}")
    return new


def _absolute(path: Any, i: int) -> str:
    from .app.index import _absolute as absolute

    return absolute(path, f"paths[{i}]")


@contextlib.contextmanager
def _cluster(ray: Any, address: Optional[str], workers: Optional[int], progress: bool) -> Iterator[float]:
    """Joins ``address`` or starts a local cluster unless this process is in one already;
    yields the cluster's CPUs; shuts down what it started. Ray Data's log lines below ERROR are
    silenced (and its progress bars, unless ``progress``) while the build runs."""
    with warnings.catch_warnings():
        # Ray's own deprecation notices about its internals (Ray 2.60 warns when it copies its
        # DataContext, and on the actor options below): nothing a heatsearch user can act on.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray(\.|$)")
        with _joined(ray, address, workers, progress) as cpus:
            yield cpus


@contextlib.contextmanager
def _joined(ray: Any, address: Optional[str], workers: Optional[int], progress: bool) -> Iterator[float]:
    started = False
    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(
                num_cpus=workers if workers is not None else (os.cpu_count() or 1),
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        started = True
    context = ray.data.DataContext.get_current()
    saved = (context.enable_progress_bars, context.max_errored_blocks)
    logger = logging.getLogger("ray.data")
    level = logger.level
    context.enable_progress_bars = progress
    context.max_errored_blocks = -1  # a part that fails on every try is reported, not fatal
    logger.setLevel(logging.ERROR)  # its INFO lines and tuning hints ("Progress bars disabled")
    try:
        yield float(ray.cluster_resources().get("CPU", 1.0))
    finally:
        context.enable_progress_bars, context.max_errored_blocks = saved
        logger.setLevel(level)
        if started:
            ray.shutdown()


# -- stages 1 and 2 ---------------------------------------------------------------------------
def _write_parts(
    ray: Any, new: List[str], config: IndexConfig, settings: _Settings, workers: int, batch: int,
    *, limit: Optional[int] = None,
) -> Tuple[Optional[np.ndarray], Optional[int], List[Tuple[str, str]]]:
    """Stages 1 and 2: the HeW mean (kept in the parts folder, or read from there on a rerun)
    and a finished part for every path of ``new`` not in one yet. ``limit``: write at most
    that many parts (what a run killed after them leaves; for tests). Returns the mean, the
    images it came from and the ``(path, reason)`` of the sample images that failed."""
    parts = Path(settings.parts)
    parts.mkdir(parents=True, exist_ok=True)
    sample = mean_sample(new, config.mean_sample) if config.pooling == "hew" else []
    extraction = {k: v for k, v in config.to_dict().items() if k not in _ASSEMBLY_FIELDS}
    # Whether the workers make synthetic copies is part of what the parts hold: a build that
    # makes them does not resume parts without (and the other way round).
    key = {"config": extraction, "sample": hashlib.sha1("\n".join(sample).encode()).hexdigest(),
           "copies": settings.copies}
    state = _read_state(parts, key)
    mean: Optional[np.ndarray] = None
    mean_images: Optional[int] = None
    sample_skipped: List[Tuple[str, str]] = []
    if state is None:
        if sample:
            mean, mean_images, sample_skipped = _learn_mean(ray, sample, settings, workers, batch)
        _write_state(parts, key, mean, mean_images, sample_skipped)
    else:
        mean, mean_images, sample_skipped = state
    failed = {p for p, _ in sample_skipped}
    done = set(_finished_paths(parts))
    todo = [p for p in new if p not in failed and p not in done]
    chunks = [todo[i : i + batch] for i in range(0, len(todo), batch)]
    if limit is not None:
        chunks = chunks[:limit]
    if chunks:
        rows = [{"part": _part_name(c), "paths": c} for c in chunks]
        _run(ray, rows, settings, "pool", mean, workers)
    return mean, mean_images, sample_skipped


def _learn_mean(
    ray: Any, sample: List[str], settings: _Settings, workers: int, batch: int
) -> Tuple[Optional[np.ndarray], Optional[int], List[Tuple[str, str]]]:
    chunks = [sample[i : i + batch] for i in range(0, len(sample), batch)]
    rows = [{"part": f"mean-{i}", "paths": c} for i, c in enumerate(chunks)]
    total: Optional[np.ndarray] = None
    cells = images = 0
    reasons: Dict[str, str] = {}
    done: set = set()
    for out in _run(ray, rows, settings, "mean", None, workers):
        done.update(out["paths"])
        reasons.update(zip(out["skipped_paths"], out["skipped_reasons"]))
        if int(out["cells"]):
            s = np.asarray(out["sum"], np.float64)
            total = s if total is None else total + s
            cells += int(out["cells"])
            images += int(out["images"])
    skipped = [(p, reasons.get(p, FAILED_PART)) for p in sample if p in reasons or p not in done]
    if total is None:
        return None, None, skipped
    # local_mean's rule: the sum of every cell of every map over the number of cells, in float64,
    # returned in the maps' dtype (float32).
    return (total / cells).astype(np.float32), images, skipped


def _run(ray: Any, rows: List[Dict[str, Any]], settings: _Settings, mode: str, mean: Optional[np.ndarray],
         workers: int) -> List[Dict[str, Any]]:
    """One Ray Data pass over ``rows`` (one per part): decode tasks, then the actor pool."""
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map(_Decoder(settings), num_cpus=DECODE_CPUS)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates passing actor options through map_batches' **kwargs but names no
        # parameter for max_restarts / max_task_retries yet; they are still honoured.
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated", category=DeprecationWarning)
        ds = ds.map_batches(
            _Worker,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))),
            fn_constructor_args=(settings, mode, mean),
            num_cpus=WORKER_CPUS,
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_TASK_RETRIES,
        )
    return [dict(r) for r in ds.take_all()]


class _Decoder:
    """Ray Data task: a part's paths -> their resized network inputs (pickled, one blob per
    part) and the reason of each image that cannot be decoded, in the local path's words."""

    def __init__(self, settings: _Settings) -> None:
        self.settings = settings

    def __call__(self, row: Dict[str, Any]) -> Dict[str, Any]:
        import pickle

        from .vision.backbones import layer_info
        from .vision.extract import _prepare

        config = IndexConfig.from_dict(self.settings.config)
        info = layer_info(config.backbone, config.layer)
        inputs: List[Any] = []
        errors: List[str] = []
        for path in row["paths"]:
            try:
                inputs.append(_prepare(str(path), None, info, config.scales, config.max_size, True))
                errors.append("")
            except (OSError, ValueError) as e:  # as Index._checked_maps reports them
                inputs.append(None)
                errors.append(f"{type(e).__name__}: {e}")
        return {"part": row["part"], "paths": [str(p) for p in row["paths"]], "errors": errors,
                "inputs": pickle.dumps(inputs, protocol=pickle.HIGHEST_PROTOCOL)}


class _Worker:
    """Ray Data actor: one extractor, built once; per part, the network and then either the
    mean's sums (``mode="mean"``) or the pooled rows written as a finished part (``"pool"``)."""

    def __init__(self, settings: _Settings, mode: str, mean: Optional[np.ndarray]) -> None:
        from .threads import set_num_threads

        set_num_threads(settings.threads)  # heatsearch's pool (HeW): one worker per CPU
        self.settings, self.mode = settings, mode
        config = IndexConfig.from_dict(settings.config)
        if settings.factory is not None:
            extractor = settings.factory(config, settings.runtime, settings.threads)
        else:
            from .vision.extract import Extractor

            extractor = Extractor(backbone=config.backbone, layer=config.layer, max_size=config.max_size,
                                  scales=config.scales, runtime=settings.runtime, num_threads=settings.threads)
        # Pooling exactly as Index.add pools (Index._pool, Index._checked_maps).
        self.index = Index(config=config, mean=mean, extractor=extractor, runtime=settings.runtime)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, Any]:
        import pickle

        out: Dict[str, List[Any]] = {}
        for part, paths, errors, blob in zip(batch["part"], batch["paths"], batch["errors"], batch["inputs"]):
            result = self._part(str(part), [str(p) for p in paths], [str(e) for e in errors], pickle.loads(blob))
            for k, v in result.items():
                out.setdefault(k, []).append(v)
        return {k: _column(v) for k, v in out.items()}

    def _part(self, part: str, paths: List[str], errors: List[str], inputs: List[Any]) -> Dict[str, Any]:
        extractor = self.index._get_extractor()

        def checked() -> Iterator[Tuple[str, Optional[Any], str]]:
            for path, arrays, error in zip(paths, inputs, errors):
                if arrays is None:  # the decoder's reason, already in Index._checked_maps' words
                    yield path, None, error
                else:
                    yield from Index._checked_maps([(path, functools.partial(extractor.forward_prepared, arrays))])

        maps = checked()
        skipped: List[Tuple[str, str]] = []
        if self.mode == "mean":
            total, cells, images = None, 0, 0
            for path, fmap, why in maps:
                if fmap is None:
                    skipped.append((path, why))
                    continue
                for m in [fmap] if isinstance(fmap, np.ndarray) else fmap:
                    flat = np.asarray(m, np.float64).reshape(-1, m.shape[-1])
                    s = flat.sum(axis=0)
                    total = s if total is None else total + s
                    cells += flat.shape[0]
                images += 1
            return {"paths": paths, "sum": total if total is not None else np.zeros(0), "cells": cells,
                    "images": images, "skipped_paths": [p for p, _ in skipped],
                    "skipped_reasons": [r for _, r in skipped]}
        done, rows = [], []
        for path, fmap, why in maps:
            if fmap is None:
                skipped.append((path, why))
            else:
                rows.append(self.index._pool(fmap))
                done.append(path)
        pooled = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
        copy_of, copies = self.index._pooled_copies(done, False) if self.settings.copies and done else (None, None)
        _write_part(Path(self.settings.parts) / part, done, pooled, skipped, copy_of, copies)
        return {"part": part, "rows": len(done), "skipped": len(skipped)}


def _column(values: List[Any]) -> Any:
    if values and isinstance(values[0], np.ndarray):
        return values  # one array per row (a list column)
    return np.array(values, dtype=object) if values and isinstance(values[0], list) else np.array(values)


# -- the parts on disk ------------------------------------------------------------------------
def _part_name(paths: Sequence[str]) -> str:
    """A part is named after its paths, so a rerun over another split finds it by content."""
    return f"part-{hashlib.sha1(chr(10).join(paths).encode()).hexdigest()[:20]}.npz"


def _write_part(path: Path, paths: List[str], pooled: np.ndarray, skipped: List[Tuple[str, str]],
                copy_of: Optional[np.ndarray] = None, copies: Optional[np.ndarray] = None) -> None:
    """One finished part, atomically (a retried part is written again, the same). ``copies``
    ``(m, C)``: the pooled rows of the synthetic copies of the images at positions ``copy_of``
    ``(m,)`` of ``paths`` (None: no copies)."""
    if copy_of is None or copies is None:
        copy_of, copies = np.zeros(0, np.int64), np.zeros((0, pooled.shape[1] if pooled.ndim == 2 else 0), np.float32)
    with atomic_write(path) as f:
        np.savez(
            f,
            paths=np.array(paths, dtype=str),
            pooled=pooled,
            copy_of=np.asarray(copy_of, np.int64),
            copies=np.asarray(copies, np.float32),
            skipped_paths=np.array([p for p, _ in skipped], dtype=str),
            skipped_reasons=np.array([r for _, r in skipped], dtype=str),
        )


def _read_part(path: Path, *, rows: bool = True) -> Optional[Tuple[List[str], np.ndarray, List[Tuple[str, str]]]]:
    """A finished part; None (with a warning) if it cannot be read: its images are done again.
    ``rows=False``: its pooled rows are not read (an empty ``(len(paths), 0)`` array instead)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            paths = [str(p) for p in z["paths"]]
            pooled = np.asarray(z["pooled"], np.float32) if rows else np.zeros((len(paths), 0), np.float32)
            skipped = list(zip((str(p) for p in z["skipped_paths"]), (str(r) for r in z["skipped_reasons"])))
    except (OSError, ValueError, KeyError) as e:
        warnings.warn(f"{path}: a part that cannot be read ({e}) is ignored: its images are extracted again")
        return None
    if pooled.shape[0] != len(paths) or (paths and pooled.ndim != 2):
        warnings.warn(f"{path}: {len(paths)} paths but pooled rows of shape {pooled.shape}: ignored")
        return None
    return paths, pooled, skipped


def _part_copies(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """A finished part's synthetic copies: positions ``(m,)`` in its paths and pooled rows
    ``(m, C)``; none for a part written without them (by a build that made none, or an
    earlier heatsearch), or whose copies cannot be read (warned: fewer pairs, same rows)."""
    none = np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "copy_of" not in z.files:
                return none
            copy_of, copies = np.asarray(z["copy_of"], np.int64), np.asarray(z["copies"], np.float32)
    except (OSError, ValueError, KeyError) as e:
        warnings.warn(f"{path}: its synthetic copies cannot be read ({e}): its images give the whitening no pairs")
        return none
    if copies.ndim != 2 or copy_of.shape != (copies.shape[0],) or not np.isfinite(copies).all():
        warnings.warn(f"{path}: {copy_of.shape} copy positions and copies of shape {copies.shape} (or not finite): ignored")
        return none
    return copy_of, copies


def _finished_paths(parts: Path) -> Iterator[str]:
    for _, paths, skipped in _part_lists(parts):
        yield from paths
        yield from (p for p, _ in skipped)


def _read_state(
    parts: Path, key: Dict[str, Any]
) -> Optional[Tuple[Optional[np.ndarray], Optional[int], List[Tuple[str, str]]]]:
    """Stage 1's result kept by an earlier run (None: none yet). Parts of another
    configuration or image list are refused, never mixed in nor deleted."""
    try:
        state = json.loads((parts / _STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{parts / _STATE} cannot be read ({e}): remove the folder {parts} to start again") from None
    if not isinstance(state, dict) or state.get("key") != json.loads(json.dumps(key)):
        raise InvalidInputError(
            f"{parts} holds the parts of a build of another configuration or image list (the extraction "
            "settings, the HeW mean's sample or whether synthetic copies are made differ): they cannot be "
            "resumed; remove that folder to start again, or write to another output"
        )
    mean = np.load(parts / _MEAN, allow_pickle=False) if state["has_mean"] else None
    return mean, state["mean_images"], [(str(p), str(r)) for p, r in state["sample_skipped"]]


def _write_state(parts: Path, key: Dict[str, Any], mean: Optional[np.ndarray], mean_images: Optional[int],
                 sample_skipped: List[Tuple[str, str]]) -> None:
    if mean is not None:
        with atomic_write(parts / _MEAN) as f:
            np.save(f, mean)
    with atomic_write(parts / _STATE, "w") as f:  # written last: it says stage 1 is complete
        json.dump({"key": key, "has_mean": mean is not None, "mean_images": mean_images,
                   "sample_skipped": [list(s) for s in sample_skipped]}, f)


# -- stage 3 ---------------------------------------------------------------------------------
def _assemble(
    new: List[str], config: IndexConfig, settings: _Settings, mean: Optional[np.ndarray],
    mean_images: Optional[int], sample_skipped: List[Tuple[str, str]], whitening: Optional[PCAWhitening],
    root: Optional[str], runtime: str,
) -> Index:
    """The index of the finished parts, rows in :meth:`Index.add`'s order, built without
    holding every row: the pooled rows are copied part by part into a shard file in the parts
    folder (:func:`~heatsearch.app.storage.write_shard_column`), the whitening (when the
    configuration learns one: :func:`~heatsearch.app.index.learns_whitening`) is learned on
    all of them as :meth:`Index.refit_whitening` learns it, but from the file a window at a
    time (:meth:`PostProcess._fit_blocks`: the mean, then the ``C x C`` covariance summed in
    float64), and the final descriptors are written beside them the same way. The driver
    holds one part, a block of :data:`ASSEMBLY_ROWS` rows, two ``C x C`` float64 matrices and
    the whitening's bounded sample of rows searched for near-duplicate pairs
    (:data:`~heatsearch.whitening.DUPLICATE_SAMPLE`), plus the paths (as every index does). :meth:`Index.save` then links
    those files into the index (no copy)."""
    parts = Path(settings.parts)
    wanted = set(new)
    where: Dict[str, Tuple[Path, int]] = {}
    reasons: Dict[str, str] = {}
    for file, paths, skipped in _part_lists(parts):
        for r, p in enumerate(paths):
            if p in wanted:
                where[p] = (file, r)
        reasons.update((p, why) for p, why in skipped if p in wanted)
    failed = {p for p, _ in sample_skipped}
    sample = [p for p in (mean_sample(new, config.mean_sample) if config.pooling == "hew" else []) if p not in failed]
    in_sample = set(sample)
    order = sample + [p for p in new if p not in in_sample and p not in failed]
    skipped = list(sample_skipped)
    added: List[str] = []
    for p in order:
        if p in where:
            added.append(p)
        else:
            skipped.append((p, reasons.get(p, FAILED_PART)))
    if not added:
        return Index._from_pooled(config, [], np.zeros((0, 0), np.float32), mean=mean, mean_images=mean_images,
                                  skipped=skipped, whitening=whitening, root=root, runtime=runtime)
    if config.pooling == "hew" and mean is None:
        raise InvalidInputError("a HeW index needs its centering mean, but the parts hold none")
    n = len(added)
    channels = _part_rows(where[added[0]][0]).shape[1]
    shard = storage.new_shard_id()
    pooled = storage.write_shard_column(parts, shard, "pooled", np.float32, (n, channels),
                                        _ordered_rows([where[p] for p in added], channels))
    step = ASSEMBLY_ROWS

    def windows() -> Iterator[np.ndarray]:
        for lo in range(0, n, step):
            yield np.asarray(pooled.window(lo, lo + step), np.float64)

    shard_row = {where[p]: i for i, p in enumerate(added)}
    scatter, pairs = _copy_pairs(shard_row, pooled, config, channels) if settings.copies else (None, 0)
    learned = learns_whitening(config, whitening, n)
    if learned:
        with warnings.catch_warnings():  # as Index.refit_whitening
            warnings.filterwarnings("ignore", message=".*dimension is capped.*")
            whitening = PostProcess._fit_blocks(windows, power=config.power, shrinkage=config.shrinkage,
                                                duplicates=config.whiten_duplicates,
                                                pair_scatter=None if scatter is None else (scatter, pairs)).whitening
    post = PostProcess(whitening, power=config.power)
    dim = whitening.dim_ if whitening is not None else channels
    assert dim is not None
    # As Index.add: float64 -> storage dtype, or float64 -> float32 -> storage dtype when the
    # whitening was just learned (Index.refit_whitening sets float32 descriptors).
    via = np.float32 if learned else config.storage_dtype
    storage.write_shard_column(parts, shard, "desc", config.storage_dtype, (n, dim),
                               (post(w).astype(via).astype(config.storage_dtype) for w in windows()))
    segment = storage.open_shard(parts, shard, pooled=True)
    return Index._from_segment(config, added, segment, mean=mean, mean_images=mean_images, whitening=whitening,
                               whitening_learned=learned, skipped=skipped, root=root, runtime=runtime,
                               copy_scatter=scatter, copy_pairs=pairs)


def _copy_pairs(shard_row: Dict[Tuple[Path, int], int], pooled: Any, config: IndexConfig,
                channels: int) -> Tuple[Optional[np.ndarray], int]:
    """The difference scatter ``(C, C)`` and count of the synthetic copies' pairs of the
    indexed images, one part's copies at a time, as :meth:`Index.add` sums them
    (:func:`~heatsearch.app.index.pair_scatter`): ``shard_row`` maps each indexed image's
    (part file, row) to its row of the shard ``pooled`` (its pooled rows, already copied
    there: not read from the part again)."""
    files = sorted({file for file, _ in shard_row})
    scatter: Optional[np.ndarray] = None
    pairs = 0
    for file in files:
        copy_of, copies = _part_copies(file)
        rows = np.array([shard_row.get((file, int(r)), -1) for r in copy_of], np.int64)
        keep = rows >= 0
        if not keep.any():
            continue
        if copies.shape[1] != channels:
            raise InvalidInputError(f"{file}: copies' pooled rows of width {copies.shape[1]}, the images' are {channels}")
        term, m = pair_scatter(config, pooled.take(rows[keep], ASSEMBLY_ROWS), copies[keep])
        scatter = term if scatter is None else scatter + term
        pairs += m
    return scatter, pairs


def _part_lists(parts: Path) -> Iterator[Tuple[Path, List[str], List[Tuple[str, str]]]]:
    """Each finished part's file, paths and skipped ``(path, reason)``, without its rows (an
    ``.npz`` member is read only when asked for)."""
    for file in sorted(parts.glob("part-*.npz")):
        part = _read_part(file, rows=False)
        if part is not None:
            yield file, part[0], part[2]


def _ordered_rows(locations: List[Tuple[Path, int]], channels: int) -> Iterator[np.ndarray]:
    """The pooled rows at ``locations`` ((part file, row), in order) as blocks of consecutive
    rows of one part, checked (finite, ``channels`` wide); one part read at a time."""
    current: Optional[Path] = None
    rows = np.zeros((0, channels), np.float32)
    i = 0
    while i < len(locations):
        file, r = locations[i]
        if file != current:
            rows, current = _part_rows(file), file
            if rows.shape[1] != channels:
                raise InvalidInputError(f"{file}: pooled rows of width {rows.shape[1]}, the other parts' are {channels}")
            _validate.finite(rows, f"the pooled rows of {file}")
        j = i + 1
        while j < len(locations) and locations[j][0] == file and locations[j][1] == locations[j - 1][1] + 1:
            j += 1
        yield rows[r : r + (j - i)]
        i = j


def _part_rows(file: Path) -> np.ndarray:
    """The pooled rows of a part listed earlier in this stage (InvalidInputError if it can no
    longer be read: the rerun extracts its images again)."""
    part = _read_part(file)
    if part is None:
        raise InvalidInputError(f"{file}: a finished part could no longer be read; rerun to extract its images again")
    return part[1]
