"""torchvision's VGG16 and ResNet-50/101, truncated at a named layer, with offline weights.

The architectures come from torchvision built with ``weights=None`` (random initialisation);
the ImageNet weights are loaded by heatsearch from a local file, never downloaded:

* ``weights=None``: the torch hub cache, ``torch.hub.get_dir()/checkpoints/<file>`` (the
  folder torchvision downloads to, ``$TORCH_HOME/hub/checkpoints``, by default
  ``~/.cache/torch/hub/checkpoints``), with torchvision's file names, tried in this order:

  =========  ==========================================================================
  vgg16      ``vgg16-397923af.pth`` (IMAGENET1K_V1)
  resnet50   ``resnet50-0676ba61.pth`` (IMAGENET1K_V1), ``resnet50-11ad3fa6.pth`` (V2)
  resnet101  ``resnet101-63fe2227.pth`` (IMAGENET1K_V1), ``resnet101-cd907fc2.pth`` (V2)
  =========  ==========================================================================

  V1 first: those are the classic ImageNet models, the closest to the MatConvNet/Caffe models
  of the paper; V2 (torchvision's longer training recipe) is used when only it is present.
* ``weights="IMAGENET1K_V1"`` / ``"IMAGENET1K_V2"``: only that file of the cache.
* ``weights="path/to/file.pth"``: a local state dict (also ``{"state_dict": ...}``),
  loaded with ``strict=True``.
* ``weights="random"``: keep torchvision's random initialisation (tests, speed measurements).

Layers (maps after their ReLU, hence non-negative; sizes for an ``H x W`` input):

* vgg16: ``"pool5"`` (512 channels, ``floor(H / 32) x floor(W / 32)``: the paper's layer,
  "VGG16 up to pool5") and ``"conv5_3"`` (the ReLU after conv5_3, 512 channels, stride 16,
  ``floor(H / 16) x floor(W / 16)``). VGG pools with 2x2/2 windows and no padding, so the
  sizes are floored and an input needs at least 32 (pool5) or 16 (conv5_3) pixels per side.
* resnet50 / resnet101: ``"layer4"`` (the output of the last bottleneck block, after its ReLU,
  2048 channels, ``ceil(H / 32) x ceil(W / 32)``: the paper's "last conv block output") and
  ``"layer3"`` (1024 channels, stride 16, ``ceil(H / 16) x ceil(W / 16)``).

All expect RGB in [0, 1] normalised with the ImageNet mean/std (torchvision's convention).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

__all__ = [
    "CHECKPOINTS",
    "LAYERS",
    "build_torchvision",
    "hub_checkpoint_dir",
    "find_hub_checkpoint",
    "load_state_dict_file",
    "load_into_meta",
]

#: Backbone -> ((torchvision weights name, file name in the hub cache), ...), preferred first.
CHECKPOINTS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "vgg16": (("IMAGENET1K_V1", "vgg16-397923af.pth"),),
    "resnet50": (
        ("IMAGENET1K_V1", "resnet50-0676ba61.pth"),
        ("IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
    ),
    "resnet101": (
        ("IMAGENET1K_V1", "resnet101-63fe2227.pth"),
        ("IMAGENET1K_V2", "resnet101-cd907fc2.pth"),
    ),
}

#: Backbone -> layer -> (channels, stride, minimum input side in pixels).
LAYERS: Dict[str, Dict[str, Tuple[int, int, int]]] = {
    "vgg16": {"pool5": (512, 32, 32), "conv5_3": (512, 16, 16)},
    "resnet50": {"layer4": (2048, 32, 1), "layer3": (1024, 16, 1)},
    "resnet101": {"layer4": (2048, 32, 1), "layer3": (1024, 16, 1)},
}

# Index one past the last module of ``vgg16().features`` to keep: 29 is the ReLU after conv5_3,
# 30 the fifth max-pool.
_VGG_CUT = {"conv5_3": 30, "pool5": 31}


def hub_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``: where torchvision keeps downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_hub_checkpoint(
    backbone: str, tag: Optional[str] = None
) -> Tuple[Optional[Path], Tuple[Path, ...]]:
    """The first checkpoint of ``backbone`` (optionally only weights ``tag``) in the hub cache.

    Returns ``(path or None, every path that was tried)``.
    """
    folder = hub_checkpoint_dir()
    tried = []
    for name, filename in CHECKPOINTS[backbone]:
        if tag is not None and name != tag:
            continue
        path = folder / filename
        tried.append(path)
        if path.is_file():
            return path, tuple(tried)
    return None, tuple(tried)


def load_state_dict_file(path: Union[str, "os.PathLike[str]"]) -> Mapping[str, Any]:
    """Read a state dict with ``torch.load(..., weights_only=True)`` (no code runs on load).

    A checkpoint dict holding the state dict under ``"state_dict"`` or ``"model"`` is unwrapped.
    """
    from ..pth import unwrap_checkpoint

    sd: Mapping[str, Any] = unwrap_checkpoint(torch.load(os.fspath(path), map_location="cpu", weights_only=True))
    return sd


def load_into_meta(build: Any, state_dict: Mapping[str, Any]) -> nn.Module:
    """``build()`` on the meta device, then its parameters taken from ``state_dict``.

    The same as building and ``load_state_dict(strict=True)``, without computing a random
    initialisation first (about a second for VGG16's 124M-parameter classifier). The result is
    float32 whatever the file's dtype.
    """
    with torch.device("meta"):
        net = build()
    net.load_state_dict(state_dict, strict=True, assign=True)
    left = [n for n, t in list(net.named_parameters()) + list(net.named_buffers()) if t.is_meta]
    if left:  # pragma: no cover - strict loading fills every parameter and persistent buffer
        raise RuntimeError(f"not in the state dict: {', '.join(left)}")
    return net.float()


def _resnet_trunk(net: Any, layer: str) -> nn.Module:
    parts = [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3]
    if layer == "layer4":
        parts.append(net.layer4)
    return nn.Sequential(*parts)


def build_torchvision(
    backbone: str, layer: str, state_dict: Optional[Mapping[str, Any]] = None
) -> nn.Module:
    """``backbone`` truncated at ``layer``: maps ``(N, 3, H, W)`` to ``(N, C, H', W')``.

    ``state_dict`` (a full torchvision state dict, classifier included) is loaded into the
    whole network with ``strict=True``, so a checkpoint of another architecture is refused even
    if the kept layers would fit; ``None`` keeps torchvision's random initialisation. Only the
    trunk is returned: VGG16's classifier (124M of its 138M parameters) is freed.
    """
    try:
        import torchvision  # type: ignore[import-untyped]
    except ImportError as e:
        from ...errors import MissingDependencyError

        raise MissingDependencyError(
            f'{backbone} needs torchvision: pip install torchvision (or pip install '
            f'"heatsearch[torch]")'
        ) from e

    if backbone not in LAYERS:  # pragma: no cover - the caller checks the name
        raise KeyError(backbone)
    build = getattr(torchvision.models, backbone)
    if state_dict is None:
        full = build(weights=None)
    else:
        full = load_into_meta(lambda: build(weights=None), state_dict)
    if backbone == "vgg16":
        return full.features[: _VGG_CUT[layer]]
    return _resnet_trunk(full, layer)
