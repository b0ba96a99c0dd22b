"""The index's quality defaults: the shrunk whitening it learns on itself, ``rerank="auto"``,
and the warning when a re-ranker cannot change anything (no torch: in-memory indexes)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from heatsearch.app.index import DEFAULT_SHRINKAGE, WHITEN_DUPLICATES, Index, IndexConfig
from heatsearch.errors import InvalidDTypeError, InvalidInputError
from heatsearch.pipeline import AUTO_DEPTH, rank
from heatsearch.postprocess import PostProcess

from helpers import skip_without_extraction, small_index


def _clustered(n_groups=20, per_group=4, d=96, seed=0):
    """Pooled-like non-negative rows in groups of near-duplicates: fewer rows than dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(n_groups, d)))
    return np.repeat(centres, per_group, axis=0) + 0.15 * np.abs(rng.normal(size=(n_groups * per_group, d)))


def _learned(tmp_path, pooled, **config):
    index = small_index(tmp_path, n=len(pooled), channels=pooled.shape[1])
    index.config = IndexConfig(**config)
    index.pooled = pooled.astype(np.float32)
    index.refit_whitening()
    return index


def test_the_learned_whitening_is_shrunk_by_default(tmp_path):
    index = _learned(tmp_path, _clustered())
    assert index.config.shrinkage == DEFAULT_SHRINKAGE == 0.5
    assert index.whitening.shrinkage_ == 0.5
    assert index.whitening.dim_ == 96  # full dimension: 80 rows no longer cap it at 79
    assert index.config.whiten_duplicates == WHITEN_DUPLICATES == 0.8
    expected = PostProcess.fit(_clustered().astype(np.float32).astype(np.float64), shrinkage=0.5, duplicates=0.8)
    np.testing.assert_allclose(index.whitening.projection_, expected.whitening.projection_, rtol=1e-9, atol=1e-12)
    # Every row is in a group: 20 groups of 4 near-duplicates.
    assert index.whitening.duplicate_images_ == expected.whitening.duplicate_images_ == 80


def test_the_pairs_are_a_choice_of_the_configuration(tmp_path):
    index = _learned(tmp_path, _clustered(), whiten_duplicates=None)
    assert index.whitening.duplicate_images_ is None
    expected = PostProcess.fit(_clustered().astype(np.float32).astype(np.float64), shrinkage=0.5)
    np.testing.assert_allclose(index.whitening.projection_, expected.whitening.projection_, rtol=1e-9, atol=1e-12)
    assert _learned(tmp_path, _clustered(), whiten_duplicates=0.999).whitening.duplicate_images_ == 0


@pytest.mark.parametrize("bad, error", [(0.0, InvalidInputError), (1.0, InvalidInputError), ("0.75", InvalidDTypeError)])
def test_bad_pair_cosine_in_the_configuration(bad, error):
    with pytest.raises(error, match="whiten_duplicates"):
        IndexConfig(whiten_duplicates=bad)


def test_a_configuration_written_before_the_pairs_means_none():
    """An index.json written before the pairs: its whitening was learned on the covariance
    alone, and a refit must learn it alike."""
    old = IndexConfig().to_dict()
    del old["whiten_duplicates"]
    assert IndexConfig.from_dict(old).whiten_duplicates is None
    assert IndexConfig.from_dict(IndexConfig(whiten_duplicates=0.6).to_dict()).whiten_duplicates == 0.6


@pytest.mark.slow
def test_the_pairs_keep_real_copies_together(tmp_path):
    """The demo's copy-detection set (17 photos of scikit-image x 8 copies; every image a
    query for its 7 copies), extracted at 256 pixels to be quick: whitened on itself with
    the covariance alone the copies drift apart; with the near-duplicate groups' scatter the
    whitening gives back most of what it took. (Measured: 97.7 unwhitened, 80.1 with the
    covariance alone, 98.2 with the groups, 129 of the 136 images; at the default size,
    README "Retrieval quality".)"""
    skip_without_extraction()
    from dataclasses import replace

    from PIL import Image

    import heatsearch as hs
    from heatsearch.app.demo import build_copy_detection_set

    data = build_copy_detection_set()
    paths = []
    for i, (image, name) in enumerate(zip(data.images, data.names)):
        paths.append(str(tmp_path / f"{i:03d}-{name.replace('/', '-')}.png"))
        Image.fromarray(image).save(paths[-1])
    index = Index(config=IndexConfig(max_size=256, whiten="none"))
    index.add(paths, progress=False)
    group = np.repeat(np.arange(17), 8)
    gnd = [{"ok": np.flatnonzero((group == group[i]) & (np.arange(136) != i)), "junk": np.array([i])} for i in range(136)]

    def copy_map():
        X = np.asarray(index.descriptors)
        return 100 * hs.compute_map(rank(X, X)[0], gnd).map

    unwhitened = copy_map()
    index.config = replace(IndexConfig(max_size=256), whiten_duplicates=None)
    index.refit_whitening()
    covariance_alone = copy_map()
    index.config = IndexConfig(max_size=256)
    index.refit_whitening()
    assert index.whitening.duplicate_images_ > 0.8 * 136  # the copies, nearly all of them
    with_pairs = copy_map()
    assert covariance_alone < unwhitened - 10, (covariance_alone, unwhitened)
    assert with_pairs - covariance_alone > 2 / 3 * (unwhitened - covariance_alone), (with_pairs, covariance_alone, unwhitened)
    assert with_pairs > unwhitened - 2, (with_pairs, unwhitened)


def test_shrinkage_keeps_the_collection_neighbourhoods(tmp_path):
    """Each row's three near-duplicates stay its nearest neighbours with the default; with the
    whitening of heatsearch 0.2 (no shrinkage, no pairs) every pair of the collection is at
    the same cosine."""
    pooled = _clustered()
    group = np.arange(len(pooled)) // 4
    for config, expect_groups in (({}, True), ({"shrinkage": 0.0, "whiten_duplicates": None}, False)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            index = _learned(tmp_path, pooled, **config)
        X = index.descriptors.astype(np.float64)
        ranks, _ = rank(X, X, k=4)
        same = (group[ranks[:, 1:]] == group[:, None]).mean()
        sims = (X @ X.T)[~np.eye(len(X), dtype=bool)]
        if expect_groups:
            assert same == 1.0
        else:
            assert np.ptp(sims) < 1e-4


def test_ledoit_wolf_shrinkage_is_a_choice(tmp_path):
    index = _learned(tmp_path, _clustered(), shrinkage="ledoit-wolf")
    assert 0 < index.whitening.shrinkage_ < 1


@pytest.mark.parametrize("bad, error", [(1.0, InvalidInputError), (-0.5, InvalidInputError), ("lw", InvalidInputError),
                                        (None, InvalidDTypeError), (True, InvalidDTypeError)])
def test_bad_shrinkage_in_the_configuration(bad, error):
    with pytest.raises(error, match="shrinkage"):
        IndexConfig(shrinkage=bad)


def test_a_configuration_written_before_shrinkage_means_none():
    """index.json of heatsearch 0.2 has no 'shrinkage': its whitening was learned without,
    so a refit must not silently change it to today's default."""
    old = IndexConfig().to_dict()
    del old["shrinkage"]
    assert IndexConfig.from_dict(old).shrinkage == 0.0
    assert IndexConfig.from_dict(IndexConfig(shrinkage=0.25).to_dict()).shrinkage == 0.25


def _reference_auto(X, Q):
    """HeR over the top AUTO_DEPTH, then the first-pass best match (after exact copies of the
    query) moved to the front, by hand."""
    plain, plain_scores = rank(X, Q)
    heat, _ = rank(X, Q, rerank="heat", depth=AUTO_DEPTH)
    out = []
    for p, s, h in zip(plain, plain_scores, heat):
        keep = list(p[: int(np.sum(s >= 1 - 1e-5)) + 1])
        out.append(keep + [r for r in h if r not in keep])
    return np.array(out)


@pytest.mark.parametrize("in_collection", [False, True])
def test_auto_is_heat_over_the_top_auto_depth_keeping_the_best_match(in_collection):
    rng = np.random.default_rng(5)
    X = PostProcess()(np.abs(rng.normal(size=(60, 24))))
    Q = X[[3, 17, 40]] if in_collection else PostProcess()(np.abs(rng.normal(size=(6, 24))))
    ranks, scores = rank(X, Q, rerank="auto")
    np.testing.assert_array_equal(ranks, _reference_auto(X, Q))
    assert (np.diff(scores, axis=1) <= 0).all()  # scores never increase along a row
    assert not np.array_equal(ranks, rank(X, Q)[0])  # HeR reordered something here
    if in_collection:
        assert (ranks[:, 0] == [3, 17, 40]).all()
    k5, s5 = rank(X, Q, k=5, rerank="auto")
    np.testing.assert_array_equal(k5, ranks[:, :5])
    np.testing.assert_array_equal(s5, scores[:, :5])


def test_auto_keeps_the_ranking_beyond_its_depth():
    rng = np.random.default_rng(6)
    X = PostProcess()(np.abs(rng.normal(size=(80, 16))))
    Q = X[:3]
    plain, _ = rank(X, Q)
    auto, _ = rank(X, Q, rerank="auto")
    assert auto.shape == plain.shape == (3, 80)
    np.testing.assert_array_equal(np.sort(auto[:, :AUTO_DEPTH], axis=1), np.sort(plain[:, :AUTO_DEPTH], axis=1))
    np.testing.assert_array_equal(auto[:, AUTO_DEPTH:], plain[:, AUTO_DEPTH:])


def test_auto_on_tiny_databases():
    X = PostProcess()(np.abs(np.random.default_rng(7).normal(size=(2, 5))))
    for n in (1, 2):
        ranks, scores = rank(X[:n], X[:1], rerank="auto")
        assert ranks.shape == (1, n) and ranks[0, 0] == 0 and np.isfinite(scores).all()


def test_a_reranker_on_a_collapsed_index_says_why(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collapsed = _learned(tmp_path, _clustered(), shrinkage=0.0, whiten_duplicates=None)  # heatsearch 0.2's
    q = collapsed.descriptors[0]
    for rerank in ("auto", "heat", "diffusion"):
        with pytest.warns(UserWarning, match=r"cannot change the ranking of this index.*equally similar"):
            collapsed.search(q, k=5, rerank=rerank)


def test_no_warning_on_a_healthy_index(tmp_path):
    index = _learned(tmp_path, _clustered())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for rerank in (None, "auto", "heat"):
            hits = index.search(index.descriptors[0], k=4, rerank=rerank)
            assert len(hits) == 4
