"""Computer vision: images in, channels-last CNN feature maps out (needs the ``onnx`` or the
``torch`` extra).

* :mod:`~heatsearch.vision.images`: loading (EXIF orientation, RGB), cropping, resizing,
  ImageNet normalisation.
* :mod:`~heatsearch.vision.backbones`: the networks (EfficientNet-Lite0, VGG16, ResNets),
  their layers and offline weights.
* :mod:`~heatsearch.vision.extract`: :class:`Extractor`, a network cut at one layer, run by
  ONNX Runtime (:mod:`~heatsearch.vision.onnx_backbone`) or torch.
* :mod:`~heatsearch.vision.pth`: PyTorch state dict files read as NumPy arrays, without torch.
* :mod:`~heatsearch.vision.spatial`: :class:`SpatialVerifier`, local features matched with
  RANSAC (``rerank="spatial"``; needs the ``spatial`` extra, OpenCV).
* :mod:`~heatsearch.vision.copies`: :func:`~heatsearch.vision.copies.synthetic_copy`, the
  edited copy of an image an index learns its whitening with (Pillow).

Importing this package imports neither torch, onnxruntime nor OpenCV; building an
:class:`Extractor` imports its runtime's, building a :class:`SpatialVerifier` OpenCV.
"""

from .extract import Extractor
from .spatial import SpatialVerifier

__all__ = ["Extractor", "SpatialVerifier"]
