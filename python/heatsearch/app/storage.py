"""The on-disk format of an image index, written so that nothing a user had is ever lost.

An index is a directory::

    index.json        format name and version, configuration, paths, dimension
    descriptors.npy   (n, d) final descriptors (memory-mapped on load)
    pooled.npy        (n, C) pooled descriptors before post-processing (to re-fit whitening)
    mean.npy          (C,) HeW centering mean (HeW pooling only)
    whitening.npz     the fitted PCAWhitening (when there is one)

Saving writes a complete new directory beside the target (every file fsync-ed) and then
swaps it in, so an existing index is never half-overwritten when saving fails; a target that
exists and is not a heatsearch index is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

import numpy as np

from ..errors import IndexFileError
from ..whitening import PCAWhitening

__all__ = ["INDEX_FORMAT", "INDEX_VERSION", "StoredIndex", "write_index", "read_index"]

#: Format name and version written into ``index.json``.
INDEX_FORMAT = "heatsearch-index"
INDEX_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class StoredIndex:
    """What an index directory holds (arrays may be memory-mapped, read-only)."""

    config: Dict[str, Any]
    paths: List[str]
    descriptors: Optional[np.ndarray]
    pooled: Optional[np.ndarray]
    mean: Optional[np.ndarray]
    whitening: Optional[PCAWhitening]
    whitening_learned: bool


def write_index(directory: PathLike, index: StoredIndex) -> None:
    """Writes ``index`` to ``directory`` (created or replaced as a whole, atomically)."""
    target = Path(directory)
    parent = target.parent if str(target.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        empty = np.empty((0, 0), np.float32)
        desc = np.asarray(index.descriptors if index.descriptors is not None else empty)
        meta = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "config": index.config,
            "count": len(index.paths),
            "dim": int(desc.shape[1]) if desc.ndim == 2 else 0,
            "paths": index.paths,
            "has_mean": index.mean is not None,
            "has_whitening": index.whitening is not None,
            "whitening_learned": index.whitening_learned,
        }
        _write_npy(tmp / "descriptors.npy", desc)
        _write_npy(tmp / "pooled.npy", np.asarray(index.pooled if index.pooled is not None else empty))
        if index.mean is not None:
            _write_npy(tmp / "mean.npy", np.asarray(index.mean))
        if index.whitening is not None:
            index.whitening.save(tmp / "whitening.npz")
        with open(tmp / "index.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_index(directory: PathLike, *, mmap: bool = True) -> StoredIndex:
    """Reads an index directory written by :func:`write_index`.

    Raises:
        IndexFileError: no index there, another format or version, missing or inconsistent
            files; the message names the directory or file.
    """
    root = Path(directory)
    meta_path = root / "index.json"
    if not meta_path.is_file():
        raise IndexFileError(f"{str(root)!r} is not a heatsearch index: no index.json in it")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise IndexFileError(f"{meta_path}: corrupt index.json ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise IndexFileError(f"{meta_path}: expected format {INDEX_FORMAT!r}, got {found!r}")
    if meta.get("version") != INDEX_VERSION:
        raise IndexFileError(
            f"{meta_path}: index format version {meta.get('version')!r}, this heatsearch reads "
            f"version {INDEX_VERSION}"
        )
    mode: Optional[Literal["r"]] = "r" if mmap else None
    try:
        paths = list(meta["paths"])
        desc = np.load(root / "descriptors.npy", mmap_mode=mode, allow_pickle=False)
        pooled = np.load(root / "pooled.npy", mmap_mode=mode, allow_pickle=False)
        mean = np.load(root / "mean.npy", allow_pickle=False) if meta["has_mean"] else None
        whitening = (
            PCAWhitening.load(root / "whitening.npz") if meta["has_whitening"] else None
        )
        config = meta["config"]
    except (KeyError, TypeError, OSError, ValueError) as e:
        raise IndexFileError(
            f"{root}: incomplete or corrupt index ({type(e).__name__}: {e})"
        ) from e
    if (
        desc.ndim != 2
        or desc.shape[0] != len(paths)
        or desc.shape[0] != meta["count"]
        or (len(paths) and desc.shape[1] != meta["dim"])
        or pooled.shape[0] != desc.shape[0]
    ):
        raise IndexFileError(
            f"{root}: descriptors of shape {desc.shape} do not match the {len(paths)} paths "
            f"and dimension {meta.get('dim')} recorded in index.json"
        )
    if not isinstance(config, dict):
        raise IndexFileError(f"{meta_path}: 'config' must be an object, got {type(config).__name__}")
    return StoredIndex(
        config=config,
        paths=paths,
        descriptors=desc if len(paths) else None,
        pooled=pooled if len(paths) else None,
        mean=mean,
        whitening=whitening,
        whitening_learned=bool(meta.get("whitening_learned", False)),
    )


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _swap_in(new: Path, target: Path) -> None:
    """Replaces ``target`` by the complete directory ``new``: the old one is moved aside first
    and removed only after the new one is in place (restored if the move fails)."""
    if target.exists() and not (target / "index.json").is_file() and any(target.iterdir()):
        raise IndexFileError(
            f"{str(target)!r} exists and is not a heatsearch index: refusing to replace it"
        )
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        old.rmdir()
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
