"""Distributed indexing on Ray Data (heatsearch.distributed): on a local 2-CPU Ray cluster, the
index equals Index.build's, unreadable images are reported, a rerun resumes from the finished
parts, a killed worker's part is retried, and ``heatsearch index --ray`` writes the same index."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import skip_without_extraction, write_copies, write_images

skip_without_extraction()  # the workers extract features (ONNX Runtime or torch)
pytest.importorskip("PIL.Image")
ray = pytest.importorskip("ray", reason="distributed indexing needs Ray Data: pip install 'heatsearch[ray]'")
pytest.importorskip("ray.data", reason="distributed indexing needs Ray Data: pip install 'heatsearch[ray]'")

from heatsearch import distributed  # noqa: E402
from heatsearch.app.cli import main  # noqa: E402
from heatsearch.app.index import AUTO_WHITENING_MIN_IMAGES, Index, IndexConfig, find_images  # noqa: E402
from heatsearch.app.storage import PARTS_DIR  # noqa: E402
from heatsearch.errors import IndexFileError, InvalidDTypeError, InvalidInputError  # noqa: E402
from heatsearch.vision.extract import Extractor  # noqa: E402

# Small images and a small mean sample (every 4th image), so that the sample rule, the row
# order and the learned whitening (at least AUTO_WHITENING_MIN_IMAGES images) are all exercised.
CONFIG = IndexConfig(max_size=96, mean_sample=16)
NOISE = 60


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (Ray takes seconds to start), on 127.0.0.1; the
    workers unpickle this module's extractor factories by value (they cannot import tests/)."""
    if ray.is_initialized():
        pytest.skip("this process is already in a Ray cluster")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Real photos and their edited copies, random-noise images and an unreadable file."""
    root = tmp_path_factory.mktemp("photos")
    write_copies(root)
    write_images(root / "noise", [f"n{i:02d}.png" for i in range(NOISE)], size=48, seed=3)
    (root / "noise" / "broken.jpg").write_bytes(b"this is not a JPEG")
    assert len(find_images(root)) - 1 >= AUTO_WHITENING_MIN_IMAGES
    return root


@pytest.fixture(scope="module")
def local(folder):
    with pytest.warns(UserWarning, match="could not be read"):
        return Index.build(folder, CONFIG, extractor=Extractor(max_size=CONFIG.max_size, scales=CONFIG.scales))


def assert_same_index(got: Index, want: Index, *, loaded: bool = False) -> None:
    """Same rows in the same order, descriptors within 1e-6 (and, for an index just built,
    the same skipped images: a saved index does not keep them)."""
    assert got.paths == want.paths
    assert got.skipped == ([] if loaded else want.skipped)
    assert got.mean_images == want.mean_images and got.whitening_learned == want.whitening_learned
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(got.pooled), np.asarray(want.pooled), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got.descriptors), np.asarray(want.descriptors), atol=1e-6)
    # The synthetic copies' pairs: made by the workers, summed part by part (Index.add: at once).
    assert got.copy_pairs == want.copy_pairs > 0
    np.testing.assert_allclose(got.copy_scatter, want.copy_scatter, rtol=1e-5, atol=1e-6 * np.abs(want.copy_scatter).max())


def test_equals_the_local_index_and_reports_the_unreadable_image(cluster, folder, local, tmp_path):
    out = tmp_path / "photos.index"
    with pytest.warns(UserWarning, match="could not be read"):
        index = distributed.build_index(find_images(folder), CONFIG, output=out, root=folder, batch_size=8)
    assert [Path(p).name for p, _ in index.skipped] == ["broken.jpg"]
    assert index.skipped[0][1].startswith("ImageReadError: ")
    assert_same_index(index, local)
    loaded = Index.load(out)
    assert_same_index(loaded, local, loaded=True)
    assert not (out / PARTS_DIR).exists()  # removed once the index was saved
    query = str(folder / "coffee" / "original.jpg")
    assert [h.path for h in loaded.search(query, k=4)] == [h.path for h in local.search(query, k=4)]


def test_a_rerun_resumes_from_the_finished_parts(cluster, folder, local, tmp_path):
    """A run killed after one part: the rerun keeps that part (its rows, altered here, are
    not recomputed) and extracts the others."""
    out = tmp_path / "resumed.index"
    paths = find_images(folder)
    settings = distributed._Settings(CONFIG.to_dict(), "auto", 1, str(out / PARTS_DIR), None, copies=True)
    distributed._write_parts(ray, paths, CONFIG, settings, 2, 8, limit=1)
    (part,) = sorted((out / PARTS_DIR).glob("part-*.npz"))
    with np.load(part) as z:
        kept = {k: z[k] for k in z.files}
    assert len(kept["paths"]) == 8
    kept["pooled"] = kept["pooled"] * 2  # what the rerun must take as it is
    np.savez(part, **kept)
    with pytest.warns(UserWarning, match="could not be read"):
        index = distributed.build_index(paths, CONFIG, output=out, root=folder, batch_size=8)
    assert index.paths == local.paths
    rows = [index.paths.index(str(p)) for p in kept["paths"]]
    np.testing.assert_allclose(np.asarray(index.pooled)[rows], 2 * np.asarray(local.pooled)[rows], rtol=1e-5, atol=1e-6)
    others = [r for r in range(len(index)) if r not in rows]
    np.testing.assert_allclose(np.asarray(index.pooled)[others], np.asarray(local.pooled)[others], rtol=1e-5, atol=1e-6)


def test_parts_of_another_configuration_are_refused_not_mixed(cluster, folder, tmp_path):
    out = tmp_path / "other.index"
    paths = find_images(folder)
    settings = distributed._Settings(CONFIG.to_dict(), "auto", 1, str(out / PARTS_DIR), None, copies=True)
    distributed._write_parts(ray, paths, CONFIG, settings, 2, 8, limit=0)
    before = sorted(p.name for p in (out / PARTS_DIR).iterdir())
    with pytest.raises(InvalidInputError, match="another configuration or image list"):
        distributed.build_index(paths, IndexConfig(max_size=64, mean_sample=16), output=out)
    assert sorted(p.name for p in (out / PARTS_DIR).iterdir()) == before  # nothing deleted


def test_parts_without_synthetic_copies_are_not_resumed_by_a_build_that_makes_them(cluster, folder, tmp_path):
    """A build killed while it learned no whitening (no copies in its parts), rerun with the
    default: its parts would give the whitening no pairs, so they are refused, not mixed."""
    out = tmp_path / "nocopies.index"
    paths = find_images(folder)
    off = replace(CONFIG, whiten="none")
    settings = distributed._Settings(off.to_dict(), "auto", 1, str(out / PARTS_DIR), None, copies=False)
    distributed._write_parts(ray, paths, off, settings, 2, 8, limit=1)
    before = sorted(p.name for p in (out / PARTS_DIR).iterdir())
    with pytest.raises(InvalidInputError, match="whether synthetic copies are made differ"):
        distributed.build_index(paths, CONFIG, output=out)
    assert sorted(p.name for p in (out / PARTS_DIR).iterdir()) == before  # nothing deleted


def test_parts_are_resumed_when_only_stage_3_settings_change(cluster, folder, tmp_path):
    """The parts hold pooled rows, which the whitening, its shrinkage and pairs, the storage
    dtype and the ANN do not change: a rerun with other values of those resumes them."""
    out = tmp_path / "resumed.index"
    paths = find_images(folder)
    settings = distributed._Settings(CONFIG.to_dict(), "auto", 1, str(out / PARTS_DIR), None, copies=True)
    first = distributed._write_parts(ray, paths, CONFIG, settings, 2, 8, limit=0)
    other = replace(CONFIG, shrinkage=0.3, whiten_duplicates=None, storage_dtype="float16")
    again = distributed._write_parts(ray, paths, other, settings, 2, 8, limit=0)
    np.testing.assert_array_equal(first[0], again[0])  # the kept HeW mean, not learned again


class CrashOnce:
    """An extractor factory whose extractors kill their worker process (``os._exit``) at their
    first forward pass while ``marker`` does not exist (creating it first): one crash in all."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, config, runtime, threads):
        extractor = Extractor(max_size=config.max_size, scales=config.scales, runtime=runtime, num_threads=threads)
        forward, marker = extractor.forward_prepared, self.marker

        def crash_once(arrays):
            if not os.path.exists(marker):
                Path(marker).touch()
                os._exit(1)
            return forward(arrays)

        extractor.forward_prepared = crash_once
        return extractor


def test_a_killed_worker_s_part_is_retried(cluster, folder, local, tmp_path):
    marker = tmp_path / "crashed"
    with pytest.warns(UserWarning, match="could not be read"):
        index = distributed.build_index(find_images(folder), CONFIG, output=tmp_path / "retried.index",
                                        root=folder, batch_size=8, extractor_factory=CrashOnce(str(marker)))
    assert marker.exists()  # a worker did die
    assert_same_index(index, local)


class CrashOnWidth:
    """Kills its worker at every image whose input is ``width`` pixels wide (a poison image)."""

    def __init__(self, width: int) -> None:
        self.width = width

    def __call__(self, config, runtime, threads):
        extractor = Extractor(max_size=config.max_size, scales=config.scales, runtime=runtime, num_threads=threads)
        forward, width = extractor.forward_prepared, self.width

        def crash_on_width(arrays):
            if arrays[0].shape[1] == width:
                os._exit(1)
            return forward(arrays)

        extractor.forward_prepared = crash_on_width
        return extractor


def test_an_image_that_kills_every_worker_is_reported_not_fatal(cluster, tmp_path):
    """Its part is retried (Ray restarts the worker) a bounded number of times, then its image
    is skipped with the reason and the other parts make the index."""
    good = write_images(tmp_path / "photos", [f"g{i}.png" for i in range(3)], size=40)
    (poison,) = write_images(tmp_path / "photos", ["poison.png"], size=57)  # 57 x 60 pixels
    paths = sorted(good + [poison])
    config = IndexConfig(max_size=96, scales=(1.0,), whiten="none", mean_sample=2)
    with pytest.warns(UserWarning, match="could not be read"):
        index = distributed.build_index(paths, config, output=tmp_path / "p.index", batch_size=1,
                                        extractor_factory=CrashOnWidth(60))
    assert index.skipped == [(poison, distributed.FAILED_PART)]
    assert sorted(index.paths) == sorted(good)


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(InvalidInputError, match="nothing to index"):
        distributed.build_index([], output=tmp_path / "x")
    with pytest.raises(InvalidDTypeError, match="single str"):
        distributed.build_index("a.jpg", output=tmp_path / "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="twice"):
        distributed.build_index(["a.jpg", "a.jpg"], output=tmp_path / "x")
    with pytest.raises(InvalidInputError, match="batch_size"):
        distributed.build_index(["a.jpg"], output=tmp_path / "x", batch_size=0)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(IndexFileError, match="refusing"):
        distributed.build_index(["a.jpg"], output=tmp_path / "taken")
    assert not (tmp_path / "x").exists() and (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_cli_index_ray_writes_the_same_index(cluster, folder, local, tmp_path, capsys):
    out = tmp_path / "cli.index"
    code = main(["index", str(folder), "-o", str(out), "--ray", "--max-size", "96", "--quiet"])
    assert code == 0
    said = capsys.readouterr()
    assert "skipped 1 file(s)" in said.err and "broken.jpg: cannot read image" in said.err
    assert f"indexed {len(local)} images" in said.out
    # The command line's configuration: the default mean sample (256: every image here).
    with pytest.warns(UserWarning, match="could not be read"):
        want = Index.build(folder, IndexConfig(max_size=96), extractor=Extractor(max_size=96, scales=CONFIG.scales))
    assert_same_index(Index.load(out), want, loaded=True)


def test_cli_without_ray_says_what_to_install(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["index", str(folder), "-o", str(tmp_path / "x"), "--ray", "--quiet"]) == 2
    assert 'pip install "heatsearch[ray]"' in capsys.readouterr().err
    assert main(["index", str(folder), "-o", str(tmp_path / "x"), "--workers", "2", "--quiet"]) == 2
    assert "--workers" in capsys.readouterr().err and not (tmp_path / "x").exists()
