"""EfficientNet-Lite0 as an ONNX graph, built from its state dict with ``onnx.helper`` (no torch).

The graph computes exactly what :class:`.efficientnet_lite.LayerOutput` computes for one layer,
in float32, for any input size:

* input ``"image"``: ``(N, H, W, 3)`` float32, ImageNet-normalised RGB, channels-last (the
  arrays :func:`heatsearch.vision.images.normalize` returns, stacked); ``N``, ``H`` and ``W``
  are dynamic;
* output ``"features"``: ``(N, H', W', C)`` float32, channels-last, the layer's map
  (``H' = ceil(H / stride)``), laid out as the torch path's ``(H', W', C)`` maps.

How each torch operation is written (the numbers are those of :mod:`.efficientnet_lite_layout`):

* conv + batch norm: ONE ``Conv`` with the BN folded in, computed in float64 and rounded to
  float32 once: ``w' = w * g / sqrt(v + eps)``, ``b' = beta - m * g / sqrt(v + eps)`` (BN's
  ``eps = 1e-3``, the TensorFlow original's);
* ReLU6: ``Clip(0, 6)``; the ReLU heatsearch adds after a ``block<i>`` output: ``Relu``;
* depthwise convs: ``Conv`` with ``group`` = channels;
* TensorFlow "same" padding: stride-2 convs use ``auto_pad="SAME_UPPER"``, which pads
  ``max((ceil(n / s) - 1) * s + k - n, 0)`` in all, the extra pixel after (right/bottom), the
  rule of :func:`.efficientnet_lite._same_pad` for every size ``n`` (odd ones included; tested
  against the torch network); stride-1 convs with odd kernels pad ``k // 2`` on each side, as
  the torch module does;
* the NCHW network between two ``Transpose`` nodes (NHWC in and out).

Opset 17 and IR version 8, so that ONNX Runtime 1.14 and later load the model.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from ...errors import InvalidWeightsError
from .efficientnet_lite_layout import BLOCKS, BN_EPS, HEAD_CHANNELS, LAYERS, STEM_CHANNELS

__all__ = ["build_model", "expected_shapes", "OPSET", "INPUT", "OUTPUT"]

#: The ONNX operator set the graph uses (Conv, Clip with min/max inputs, Relu, Add, Transpose).
OPSET = 17
#: IR version 8: what opset 17 shipped with (onnx 1.12), loadable by ONNX Runtime >= 1.14.
_IR_VERSION = 8
#: Names of the graph's input and output.
INPUT = "image"
OUTPUT = "features"
_NUM_CLASSES = 1000
_BN_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def expected_shapes() -> Dict[str, Tuple[int, ...]]:
    """Every entry of an EfficientNet-Lite0 state dict and its shape (the module names of
    ``efficientnet-lite0-57934424.pth``; what strict loading of the torch network expects)."""
    out: Dict[str, Tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for part in _BN_PARTS:
            out[f"{prefix}.{part}"] = () if part == "num_batches_tracked" else (c,)

    out["_conv_stem.weight"] = (STEM_CHANNELS, 3, 3, 3)
    bn("_bn0", STEM_CHANNELS)
    for i, (k, _, expand, cin, cout) in enumerate(BLOCKS):
        p, mid = f"_blocks.{i}", cin * expand
        if expand != 1:
            out[f"{p}._expand_conv.weight"] = (mid, cin, 1, 1)
            bn(f"{p}._bn0", mid)
        out[f"{p}._depthwise_conv.weight"] = (mid, 1, k, k)
        bn(f"{p}._bn1", mid)
        out[f"{p}._project_conv.weight"] = (cout, mid, 1, 1)
        bn(f"{p}._bn2", cout)
    out["_conv_head.weight"] = (HEAD_CHANNELS, BLOCKS[-1][4], 1, 1)
    bn("_bn1", HEAD_CHANNELS)
    out["_fc.weight"] = (_NUM_CLASSES, HEAD_CHANNELS)
    out["_fc.bias"] = (_NUM_CLASSES,)
    return out


def _checked(state_dict: Mapping[str, Any], source: str) -> Dict[str, np.ndarray]:
    """The state dict's arrays, checked as strict loading checks them (no missing or unexpected
    entry, every shape right)."""
    shapes = expected_shapes()
    missing = [k for k in shapes if k not in state_dict]
    unexpected = [k for k in state_dict if k not in shapes]
    if missing or unexpected:
        raise InvalidWeightsError(
            f"the weights from {source} do not fit efficientnet_lite0 (strict loading): "
            + (f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}" if unexpected else "")
        )
    out = {}
    for key, shape in shapes.items():
        try:
            a = np.asarray(state_dict[key])
        except (TypeError, ValueError, RuntimeError) as e:
            raise InvalidWeightsError(f"the weights from {source}: {key} is not an array ({e})") from None
        if a.shape != shape:
            raise InvalidWeightsError(
                f"the weights from {source} do not fit efficientnet_lite0: {key} has shape "
                f"{a.shape}, expected {shape}"
            )
        if a.dtype.kind != "f" and not key.endswith("num_batches_tracked"):
            raise InvalidWeightsError(f"the weights from {source}: {key} has dtype {a.dtype}, expected float")
        out[key] = a
    return out


class _Graph:
    """Collects nodes and initializers; names values ``v0``, ``v1``, ..."""

    def __init__(self, sd: Dict[str, np.ndarray]) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.sd = sd
        self.nodes: List[Any] = []
        self.inits: List[Any] = []
        self._n = 0
        self.zero = self.const("zero", np.float32(0))
        self.six = self.const("six", np.float32(6))

    def name(self) -> str:
        self._n += 1
        return f"v{self._n}"

    def const(self, name: str, value: Any) -> str:
        self.inits.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: List[str], **attrs: Any) -> str:
        out = self.name()
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=f"{op}_{out}", **attrs))
        return out

    def conv_bn(self, x: str, conv: str, bn: str, kernel: int, stride: int, groups: int = 1) -> str:
        """``bn(conv(x))`` as one Conv: the BN folded into the weights (float64, then float32)."""
        w = self.sd[f"{conv}.weight"].astype(np.float64)
        g, beta = self.sd[f"{bn}.weight"].astype(np.float64), self.sd[f"{bn}.bias"].astype(np.float64)
        m, v = self.sd[f"{bn}.running_mean"].astype(np.float64), self.sd[f"{bn}.running_var"].astype(np.float64)
        scale = g / np.sqrt(v + BN_EPS)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (beta - m * scale).astype(np.float32)
        wn = self.const(f"{conv}.weight_folded", wf)
        bname = self.const(f"{conv}.bias_folded", bf)
        attrs: Dict[str, Any] = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "group": groups}
        if stride == 1 and kernel % 2 == 1:
            attrs["pads"] = [kernel // 2] * 4  # symmetric: TF "same" for stride 1, odd kernels
        else:
            attrs["auto_pad"] = "SAME_UPPER"  # TF "same": the extra pixel at the end
        return self.node("Conv", [x, wn, bname], **attrs)

    def relu6(self, x: str) -> str:
        return self.node("Clip", [x, self.zero, self.six])


def build_model(state_dict: Mapping[str, Any], layer: str, source: str = "state dict") -> Any:
    """The ONNX model of EfficientNet-Lite0 truncated at ``layer`` (see the module docstring).

    Args:
        state_dict: ``{name: array}`` of the torch network (NumPy arrays, e.g. from
            :func:`heatsearch.vision.pth.read_state_dict`, or anything ``np.asarray`` takes);
            checked as strict loading checks it.
        layer: a canonical layer name of :data:`.efficientnet_lite_layout.LAYERS`.
        source: where the weights came from, for error messages.

    Returns:
        An ``onnx.ModelProto`` (checked with ``onnx.checker``), about 19 MB serialised for
        ``"head"`` (the weights are float32 initializers).

    Raises:
        InvalidWeightsError: the state dict does not fit the network.
        KeyError: ``layer`` is not a canonical layer name (callers resolve aliases first).
    """
    import onnx
    from onnx import TensorProto, helper

    if layer not in LAYERS:
        raise KeyError(layer)
    g = _Graph(_checked(state_dict, source))
    x = g.node("Transpose", [INPUT], perm=[0, 3, 1, 2])
    x = g.relu6(g.conv_bn(x, "_conv_stem", "_bn0", 3, 2))
    if layer != "stem":
        for i, (k, s, expand, cin, cout) in enumerate(BLOCKS):
            p = f"_blocks.{i}"
            y = x
            if expand != 1:
                y = g.relu6(g.conv_bn(y, f"{p}._expand_conv", f"{p}._bn0", 1, 1))
            y = g.relu6(g.conv_bn(y, f"{p}._depthwise_conv", f"{p}._bn1", k, s, groups=cin * expand))
            y = g.conv_bn(y, f"{p}._project_conv", f"{p}._bn2", 1, 1)
            if s == 1 and cin == cout:
                y = g.node("Add", [y, x])
            x = y
            if layer == f"block{i}":
                x = g.node("Relu", [x])  # heatsearch's ReLU after a linear block output
                break
        else:
            x = g.relu6(g.conv_bn(x, "_conv_head", "_bn1", 1, 1))
    g.nodes.append(helper.make_node("Transpose", [x], [OUTPUT], name="Transpose_out", perm=[0, 2, 3, 1]))
    channels = LAYERS[layer][0]
    graph = helper.make_graph(
        g.nodes,
        f"efficientnet_lite0_{layer}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", "H_out", "W_out", channels])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="heatsearch",
        doc_string=f"EfficientNet-Lite0 up to {layer}, from {source}",
    )
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model
