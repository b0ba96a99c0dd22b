"""The synthetic copies an index learns its whitening with (IndexConfig.whiten_copies): what
add extracts, the pairs' scatter, the whitening it gives, saving and loading, bad files."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from heatsearch.app import storage
from heatsearch.app.index import AUTO_WHITENING_MIN_IMAGES, WHITEN_COPIES, Index, IndexConfig, pair_scatter
from heatsearch.errors import IndexFileError, InvalidDTypeError, InvalidInputError
from heatsearch.postprocess import PostProcess
from heatsearch.whitening import PCAWhitening

from helpers import skip_without_extraction, write_images

CONFIG = IndexConfig(max_size=48, scales=(1.0,), mean_sample=16)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    skip_without_extraction()
    root = tmp_path_factory.mktemp("photos")
    return write_images(root, [f"p{i:02d}.png" for i in range(AUTO_WHITENING_MIN_IMAGES + 2)], size=40, seed=7)


@pytest.fixture(scope="module")
def built(photos):
    index = Index(config=CONFIG)
    index.add(photos)
    return index


def test_add_extracts_a_copy_of_every_image_and_whitens_with_the_pairs(built, photos):
    from heatsearch.vision.copies import synthetic_copy

    assert WHITEN_COPIES is True and CONFIG.whiten_copies
    assert built.copy_pairs == len(built) == len(photos) and built.whitening_learned
    # The copies, extracted and pooled here by hand as add does (rows in the index's order).
    ex = built._get_extractor()
    copies = np.stack([built._pool(ex.feature_map(synthetic_copy(p, max_size=CONFIG.max_size))) for p in built.paths])
    pooled = np.asarray(built.pooled)
    scatter, m = pair_scatter(CONFIG, pooled, copies.astype(np.float32))
    assert m == len(photos)
    np.testing.assert_allclose(built.copy_scatter, scatter, rtol=1e-9, atol=1e-12 * np.abs(scatter).max())
    # The whitening: PostProcess.fit with the pairs, as the protocols measured it.
    want = PostProcess.fit(pooled.astype(np.float64), shrinkage=CONFIG.shrinkage, duplicates=CONFIG.whiten_duplicates,
                           pairs=(pooled, copies.astype(np.float32)))
    np.testing.assert_allclose(np.asarray(built.descriptors), want(pooled.astype(np.float64)), atol=2e-5)
    without = PostProcess.fit(pooled.astype(np.float64), shrinkage=CONFIG.shrinkage, duplicates=CONFIG.whiten_duplicates)
    assert np.abs(np.asarray(built.descriptors) - without(pooled.astype(np.float64))).max() > 1e-3  # the pairs count


def test_no_copies_without_a_learned_whitening_or_when_turned_off(photos):
    calls = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def feature_map(self, image, bbox=None):
            calls.append(isinstance(image, np.ndarray))
            return self.inner.feature_map(image, bbox)

    from heatsearch.vision.extract import Extractor

    inner = Extractor(max_size=CONFIG.max_size, scales=CONFIG.scales)
    for config, whitening in ((replace(CONFIG, whiten_copies=False), None), (replace(CONFIG, whiten="none"), None),
                              (CONFIG, PCAWhitening().fit(np.random.default_rng(0).normal(size=(40, 1280)), shrinkage=0.5))):
        calls.clear()
        index = Index(config=config, whitening=whitening, extractor=Counting(inner))
        index.add(photos[:20])
        assert index.copy_pairs == 0 and index.copy_scatter is None
        assert not any(calls) and len(calls) == 20  # the images once each (paths), no copy (an array)
    off = Index(config=replace(CONFIG, whiten_copies=False), extractor=inner)
    off.add(photos)
    assert off.whitening_learned and off.copy_pairs == 0


def test_saved_and_loaded_with_the_index(built, tmp_path):
    built.save(tmp_path / "i")
    meta = json.loads(next((tmp_path / "i").glob("data-*/meta.json")).read_text())
    assert meta["copy_pairs"] == len(built)
    packed = np.load(next((tmp_path / "i").glob(f"data-*/{storage.COPIES}")))
    assert packed.dtype == np.float32 and packed.shape == (1280 * 1281 // 2,)
    loaded = Index.load(tmp_path / "i")
    assert loaded.config.whiten_copies and loaded.copy_pairs == built.copy_pairs
    np.testing.assert_allclose(loaded.copy_scatter, built.copy_scatter, rtol=1e-6, atol=1e-7 * np.abs(built.copy_scatter).max())
    np.testing.assert_array_equal(loaded.copy_scatter, loaded.copy_scatter.T)
    # Re-learned from the loaded pairs (stored in float32): the same whitening, within what
    # that rounding moves the weakest directions of these noise images (the pairs' own effect
    # is above 1e-3: the first test).
    loaded.refit_whitening()
    np.testing.assert_allclose(np.asarray(loaded.descriptors), np.asarray(built.descriptors), atol=5e-4)
    # Removing images keeps their pairs (still examples of what copies differ by).
    loaded.remove(loaded.paths[:3])
    assert loaded.copy_pairs == built.copy_pairs


def test_an_index_written_before_the_copies_loads_without_them(built, tmp_path):
    built.save(tmp_path / "old")
    (meta_file,) = (tmp_path / "old").glob("data-*/meta.json")
    meta = json.loads(meta_file.read_text())
    del meta["copy_pairs"]
    del meta["config"]["whiten_copies"]
    meta_file.write_text(json.dumps(meta))
    next((tmp_path / "old").glob(f"data-*/{storage.COPIES}")).unlink()
    old = Index.load(tmp_path / "old")
    assert old.copy_pairs == 0 and old.copy_scatter is None
    assert old.config.whiten_copies is False  # as it was built: the next re-learning without copies
    assert old._pair_scatter() is None


@pytest.mark.parametrize("damage, match", [
    (lambda f: f.write_bytes(b"garbage"), "not a readable .npy"),
    (lambda f: np.save(f, np.zeros(10, np.float32)), r"must be float32 of shape \(channels \(channels \+ 1\) / 2,\)"),
    (lambda f: np.save(f, np.zeros(1280 * 1281 // 2, np.float64)), "got dtype float64"),
    (lambda f: np.save(f, np.full(1280 * 1281 // 2, np.nan, np.float32)), "must be finite, got NaN"),
    (lambda f: f.unlink(), "missing file|does not exist|No such file"),
])
def test_a_damaged_copies_file_is_refused_naming_it(built, tmp_path, damage, match):
    built.save(tmp_path / "i")
    (copies,) = (tmp_path / "i").glob(f"data-*/{storage.COPIES}")
    damage(copies)
    with pytest.raises(IndexFileError, match=match) as e:
        Index.load(tmp_path / "i")
    assert storage.COPIES in str(e.value)


@pytest.mark.parametrize("value, match", [(-1, ">= 0"), ("many", "must be an int"), (1.5, "must be an int")])
def test_a_bad_pair_count_is_refused(built, tmp_path, value, match):
    built.save(tmp_path / "i")
    (meta_file,) = (tmp_path / "i").glob("data-*/meta.json")
    meta = json.loads(meta_file.read_text())
    meta["copy_pairs"] = value
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match=match):
        Index.load(tmp_path / "i")


def test_whiten_copies_must_be_a_flag():
    with pytest.raises(InvalidDTypeError, match="whiten_copies must be True or False, got str"):
        IndexConfig(whiten_copies="yes")  # type: ignore[arg-type]
    assert IndexConfig.from_dict({k: v for k, v in IndexConfig().to_dict().items() if k != "whiten_copies"}).whiten_copies is False


def test_the_pairs_scatter_weighs_as_fit_s_pairs():
    """PCAWhitening._fit_blocks(pair_scatter=(S, m)) is fit(pairs=...) when the pairs give S,
    for fewer pairs than vectors and for more (weighed as one per vector)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 12))
    for m in (20, 80):
        A, B = rng.normal(size=(m, 12)), rng.normal(size=(m, 12))
        D = A - B
        want = PCAWhitening().fit(X, shrinkage=0.3, pairs=(A, B))
        got = PCAWhitening()._fit_blocks(lambda: iter([X[:20], X[20:]]), shrinkage=0.3, pair_scatter=(D.T @ D, m))
        np.testing.assert_allclose(got.projection_, want.projection_, rtol=1e-9, atol=1e-12)
    with pytest.raises(InvalidInputError, match=r"pair_scatter must be \(12, 12\)"):
        PCAWhitening()._fit_blocks(lambda: iter([X]), pair_scatter=(np.eye(5), 3))
    # No pairs is the whitening of the covariance alone.
    plain = PCAWhitening().fit(X, shrinkage=0.3)
    none = PCAWhitening()._fit_blocks(lambda: iter([X]), shrinkage=0.3, pair_scatter=(np.zeros((12, 12)), 0))
    np.testing.assert_allclose(none.projection_, plain.projection_, rtol=1e-9, atol=1e-12)


def test_cli_no_copies(photos, tmp_path, capsys):
    from heatsearch.app.cli import main

    folder = Path(photos[0]).parent
    assert main(["index", str(folder), "-o", str(tmp_path / "i"), "--max-size", "48", "--single-scale", "--quiet",
                 "--no-copies"]) == 0
    assert "synthetic copies" not in capsys.readouterr().out
    assert Index.load(tmp_path / "i").copy_pairs == 0
    assert main(["index", str(folder), "-o", str(tmp_path / "j"), "--no-whiten", "--no-copies"]) == 2
    assert "--no-copies changes the whitening the index learns: it has no effect with --no-whiten" in capsys.readouterr().err
    assert not (tmp_path / "j").exists()


def test_a_copy_that_cannot_be_described_gives_no_pair_and_one_warning(photos):
    """An extractor that takes paths only (a stand-in, a custom network) cannot describe the
    copies (arrays): the images are indexed, the whitening learned without pairs, and a
    warning says why."""
    from heatsearch.vision.extract import Extractor

    inner = Extractor(max_size=CONFIG.max_size, scales=CONFIG.scales)

    class PathsOnly:
        def feature_map(self, image, bbox=None):
            if not isinstance(image, str):
                raise TypeError(f"a path, please, not {type(image).__name__}")
            return inner.feature_map(image, bbox)

    index = Index(config=CONFIG, extractor=PathsOnly())
    with pytest.warns(UserWarning, match=r"66 synthetic copies \(for the whitening\) could not be made or described, "
                                         r"e\.g\. of .*p00\.png: TypeError: a path, please, not ndarray"):
        assert index.add(photos) == []
    assert len(index) == len(photos) and index.whitening_learned and index.copy_pairs == 0


def test_a_copy_of_the_index_adds_its_own_pairs(built, photos):
    """Index.copy (what the server changes while the original serves) shares the scatter
    until it adds images; the original's stays as it was."""
    before = built.copy_scatter.copy()
    changed = built.copy()
    changed.remove(photos[:2])
    changed.add(photos[:2])
    assert changed.copy_pairs == built.copy_pairs + 2
    np.testing.assert_array_equal(built.copy_scatter, before)
    assert not np.array_equal(changed.copy_scatter, before)


def test_the_cli_progress_bar_counts_the_images_and_their_copies(photos, tmp_path):
    import subprocess
    import sys

    folder = Path(photos[0]).parent
    run = subprocess.run([sys.executable, "-m", "heatsearch", "index", str(folder), "-o", str(tmp_path / "i"),
                          "--max-size", "48", "--single-scale"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    totals = set(re.findall(r"extracting:[^\r\n]*?\| *(\d+)/(\d+) \[", run.stderr))
    assert (str(2 * len(photos)), str(2 * len(photos))) in totals, run.stderr  # 66 images, 66 copies


def test_a_save_links_the_unchanged_copies_file_instead_of_writing_it(built, photos, tmp_path):
    """The 3.3 MB scatter is written when it changed, and hard-linked from the version it was
    read from or last saved to otherwise (a remove, a re-save, a loaded index)."""
    index = built.copy()
    index.save(tmp_path / "i")

    def inode():
        return storage.current_file(tmp_path / "i", storage.COPIES).stat().st_ino

    first = inode()
    index.remove(photos[:1])
    index.save(tmp_path / "i")
    assert inode() == first
    loaded = Index.load(tmp_path / "i")
    loaded.remove(photos[1:2])
    loaded.save(tmp_path / "i")
    assert inode() == first
    loaded.add(photos[:1])  # a new pair: a new scatter, written
    loaded.save(tmp_path / "i")
    assert inode() != first
    again = Index.load(tmp_path / "i")
    np.testing.assert_allclose(again.copy_scatter, loaded.copy_scatter, rtol=1e-6, atol=1e-7 * np.abs(loaded.copy_scatter).max())


def test_duplicates_compare_descriptors_whitened_with_the_pairs(built):
    """Index.duplicates' whitening is the default one learned now: with the synthetic copies'
    pairs the index holds (README, Near-duplicates: recall up at equal precision)."""
    from heatsearch.app.index import DEFAULT_SHRINKAGE, WHITEN_DUPLICATES

    pooled = np.asarray(built.pooled, np.float64)

    def whitened(pairs):
        return PostProcess._fit_blocks(lambda: iter([pooled]), power=CONFIG.power, shrinkage=DEFAULT_SHRINKAGE,
                                       duplicates=WHITEN_DUPLICATES, pair_scatter=pairs)(pooled)

    got = built._duplicate_rows()
    np.testing.assert_allclose(got, whitened((built.copy_scatter, built.copy_pairs)), atol=1e-5)
    assert np.abs(got - whitened(None)).max() > 1e-3
