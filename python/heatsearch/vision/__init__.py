"""Computer vision: images in, channels-last CNN feature maps out (needs the ``torch`` extra).

* :mod:`~heatsearch.vision.images`: loading (EXIF orientation, RGB), cropping, resizing,
  ImageNet normalisation.
* :mod:`~heatsearch.vision.backbones`: the networks (EfficientNet-Lite0, VGG16, ResNets),
  their layers and offline weights.
* :mod:`~heatsearch.vision.extract`: :class:`Extractor`, a network cut at one layer.

Importing this package does not import torch; building an :class:`Extractor` does.
"""

from .extract import Extractor

__all__ = ["Extractor"]
