"""The layout of EfficientNet-Lite0: its blocks, layer names, widths and strides (no torch).

Shared by the torch network (:mod:`.efficientnet_lite`) and the ONNX graph
(:mod:`.efficientnet_lite_onnx`), and read by :func:`heatsearch.vision.backbones.layer_info`
without importing torch. See :mod:`.efficientnet_lite` for where each number comes from.
"""

from __future__ import annotations

from typing import Dict, Tuple

__all__ = ["BLOCKS", "LAYERS", "ALIASES", "BN_EPS", "STEM_CHANNELS", "HEAD_CHANNELS"]

#: Batch-norm epsilon of the TensorFlow original.
BN_EPS = 1e-3
#: Stem and head widths, fixed in the lite variants.
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

#: Per block: (kernel, stride, expand ratio, input channels, output channels).
BLOCKS: Tuple[Tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 32, 16),
    (3, 2, 6, 16, 24),
    (3, 1, 6, 24, 24),
    (5, 2, 6, 24, 40),
    (5, 1, 6, 40, 40),
    (3, 2, 6, 40, 80),
    (3, 1, 6, 80, 80),
    (3, 1, 6, 80, 80),
    (5, 1, 6, 80, 112),
    (5, 1, 6, 112, 112),
    (5, 1, 6, 112, 112),
    (5, 2, 6, 112, 192),
    (5, 1, 6, 192, 192),
    (5, 1, 6, 192, 192),
    (5, 1, 6, 192, 192),
    (3, 1, 6, 192, 320),
)


def _layers() -> Dict[str, Tuple[int, int]]:
    out = {"stem": (STEM_CHANNELS, 2)}
    stride = 2
    for i, (_, s, _, _, cout) in enumerate(BLOCKS):
        stride *= s
        out[f"block{i}"] = (cout, stride)
    out["head"] = (HEAD_CHANNELS, stride)
    return out


#: Layer name -> (channels, total stride). ``stem`` and ``head`` are after BN + ReLU6;
#: ``block<i>`` is the output of block i (projection + BN, plus the skip connection) followed
#: by a ReLU added by heatsearch (the network itself has no activation there).
LAYERS: Dict[str, Tuple[int, int]] = _layers()

#: Friendlier names: the last block of each stage, and the last block of the network.
ALIASES: Dict[str, str] = {
    "stage1": "block0",
    "stage2": "block2",
    "stage3": "block4",
    "stage4": "block7",
    "stage5": "block10",
    "stage6": "block14",
    "stage7": "block15",
    "last_block": "block15",
}
