"""One validation layer: the Rust path and the NumPy reference raise the same exception, with
the same message, for the same bad input (and the message says what was expected)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import numpy as np
import pytest

import heatsearch as hs
from heatsearch import reference
from heatsearch.errors import HeatsearchError, InvalidDTypeError, InvalidInputError

rng = np.random.default_rng(7)
X = hs.l2_normalize(rng.standard_normal((40, 8)).astype(np.float32))
Q = hs.l2_normalize(rng.standard_normal((3, 8)).astype(np.float32))
R = np.argsort(-(Q @ X.T), axis=1)[:, :20].astype(np.int64)
S = np.take_along_axis(Q @ X.T, R, axis=1)
# A short ranking (top 5): the rows it names, and a row it does not name.
R5 = np.ascontiguousarray(R[:, :5])
RANKED = sorted({int(r) for r in R5.ravel()})
UNRANKED = int(np.setdiff1d(np.arange(len(X)), R5)[0])
FMAP = np.maximum(rng.standard_normal((5, 4, 6)), 0).astype(np.float32)
G = hs.knn_graph(X, neighbors=5)


def with_nan(a: np.ndarray, index: Tuple[int, ...], value: float = np.nan) -> np.ndarray:
    b = a.copy()
    b[index] = value
    return b


def ranks_with(row: int, col: int, value: int) -> np.ndarray:
    r = R.copy()
    r[row, col] = value
    return r


# name -> (function name, args, kwargs, expected type, a fragment the message must hold)
CASES: Dict[str, Tuple[str, tuple, dict, type, str]] = {
    # search
    "search int dtype": ("search", (X.astype(np.int32), Q), {}, InvalidDTypeError, "float32 or float64"),
    "search dtype mismatch": ("search", (X, Q.astype(np.float64)), {}, InvalidDTypeError, "dtype of X"),
    "search 1-D query": ("search", (X, Q[0]), {}, InvalidInputError, "q[None, :]"),
    "search other d": ("search", (X, Q[:, :5]), {}, InvalidInputError, "dimension of X"),
    "search NaN in X": ("search", (with_nan(X, (7, 2)), Q), {}, InvalidInputError, "X must be finite, got NaN at row 7, column 2"),
    "search inf in Q": ("search", (X, with_nan(Q, (1, 3), np.inf)), {}, InvalidInputError, "Q must be finite, got inf at row 1, column 3"),
    "search NaN in both": ("search", (with_nan(X, (0, 0)), with_nan(Q, (2, 1))), {}, InvalidInputError, "Q must be finite"),
    "search k < 0": ("search", (X, Q, -1), {}, InvalidInputError, "k must be >= 0"),
    "search k float": ("search", (X, Q, 2.0), {}, InvalidDTypeError, "k must be an int"),
    "search overflow": ("search", (X * np.float32(1e20), Q * np.float32(1e20)), {}, InvalidInputError, "inner products of Q and X overflow float32"),
    # kNN graph
    "knn neighbors 0": ("knn_graph", (X,), {"neighbors": 0}, InvalidInputError, "neighbors must be >= 1"),
    "knn NaN": ("knn_graph", (with_nan(X, (39, 7)),), {}, InvalidInputError, "X must be finite, got NaN at row 39, column 7"),
    "knn 3-D": ("knn_graph", (X[None],), {}, InvalidInputError, "2-D array"),
    "knn overflow": ("knn_graph", (X * np.float32(1e20),), {}, InvalidInputError, "inner products of X with itself overflow float32"),
    # HeW
    "hew int map": ("hew_weights", (FMAP.astype(np.int64),), {}, InvalidDTypeError, "float32 or float64"),
    "hew 4-D map": ("hew_weights", (FMAP[None],), {}, InvalidInputError, "channels-last"),
    "hew empty map": ("hew_weights", (FMAP[:0],), {}, InvalidInputError, "at least one cell"),
    "hew NaN map": ("hew_weights", (with_nan(FMAP, (1, 2, 3)),), {}, InvalidInputError, "fmap must be finite, got NaN at row 6, column 3"),
    "hew pool inf map": ("hew_pool", (with_nan(FMAP, (4, 3, 5), -np.inf),), {}, InvalidInputError, "fmap must be finite, got -inf at row 19, column 5"),
    "hew mean length": ("hew_weights", (FMAP, np.zeros(5, np.float32)), {}, InvalidInputError, "mean must have shape (6,)"),
    "hew mean NaN": ("hew_pool", (FMAP, with_nan(np.zeros(6, np.float32), (4,))), {}, InvalidInputError, "mean must be finite, got NaN at index 4"),
    "hew threshold < 0": ("hew_weights", (FMAP,), {"threshold": -0.1}, InvalidInputError, "threshold must be a finite number >= 0"),
    "hew ground 0": ("hew_pool", (FMAP,), {"ground": 0}, InvalidInputError, "ground must be a finite number > 0"),
    "hew ground str": ("hew_pool", (FMAP,), {"ground": "0.1"}, InvalidDTypeError, "ground must be a real number"),
    "batch NaN in map 2": ("hew_pool_batch", ([FMAP, FMAP, with_nan(FMAP, (0, 1, 2))],), {}, InvalidInputError, "fmaps[2] must be finite, got NaN at row 1, column 2"),
    "batch mixed C": ("hew_pool_batch", ([FMAP, FMAP[..., :4]],), {}, InvalidInputError, "same number of channels"),
    "batch mixed dtype": ("hew_pool_batch", ([FMAP, FMAP.astype(np.float64)],), {}, InvalidDTypeError, "same dtype"),
    "batch empty": ("hew_pool_batch", ([],), {}, InvalidInputError, "at least one feature map"),
    "local_mean NaN": ("local_mean", ([FMAP, with_nan(FMAP, (3, 3, 0))],), {}, InvalidInputError, "fmaps[1] must be finite, got NaN at row 15, column 0"),
    # HeR
    "her ranks float": ("heat_rerank", (X, Q, R.astype(np.float32)), {}, InvalidDTypeError, "argsort"),
    "her ranks transposed": ("heat_rerank", (X, Q, R.T), {}, InvalidInputError, "ranks.T"),
    "her ranks out of range": ("heat_rerank", (X, Q, ranks_with(1, 4, 40)), {}, InvalidInputError, "got 40 at row 1, column 4"),
    "her ranks 1-based": ("heat_rerank", (X, Q, ranks_with(2, 0, 40)), {}, InvalidInputError, "1-based"),
    "her ranks negative": ("heat_rerank", (X, Q, ranks_with(0, 3, -2)), {}, InvalidInputError, "got -2 at row 0, column 3"),
    "her ranks repeat": ("heat_rerank", (X, Q, ranks_with(2, 5, int(R[2, 1]))), {}, InvalidInputError, f"got {int(R[2, 1])} again at row 2, column 5"),
    "her NaN in X": ("heat_rerank", (with_nan(X, (3, 3)), Q, R), {}, InvalidInputError, "X must be finite, got NaN at row 3, column 3"),
    "her NaN in X: the smallest ranked row": ("heat_rerank", (with_nan(with_nan(X, (RANKED[-1], 0)), (RANKED[0], 5)), Q, R5), {}, InvalidInputError, f"X must be finite, got NaN at row {RANKED[0]}, column 5"),
    "her ranks checked before X": ("heat_rerank", (with_nan(X, (3, 3)), Q, ranks_with(0, 3, -2)), {}, InvalidInputError, "got -2 at row 0, column 3"),
    "her NaN scores": ("heat_rerank", (X, Q, R), {"scores": with_nan(S, (1, 1))}, InvalidInputError, "scores must be finite"),
    "her scores shape": ("heat_rerank", (X, Q, R), {"scores": S[:, :3]}, InvalidInputError, "shape of ranks"),
    "her depth < 0": ("heat_rerank", (X, Q, R), {"depth": -1}, InvalidInputError, "depth must be >= 0"),
    "her depth bool": ("heat_rerank", (X, Q, R), {"depth": True}, InvalidDTypeError, "depth must be an int"),
    "her ground nan": ("heat_rerank", (X, Q, R), {"ground": float("nan")}, InvalidInputError, "ground must be a finite number > 0"),
    "her empty X": ("heat_rerank", (X[:0], Q, R[:, :0]), {}, InvalidInputError, "at least one row"),
    "her ground too small": ("heat_rerank", (X, Q, R), {"ground": 1e-9}, InvalidInputError, "ground must be in [1e-06, 1e+06]"),
    "her first-pass overflow": ("heat_rerank", (X * np.float32(1e20), Q * np.float32(1e20), R), {"depth": 5}, InvalidInputError, "inner products of Q and X overflow float32"),
    "hew ground too large": ("hew_weights", (FMAP,), {"ground": 1e7}, InvalidInputError, "ground must be in [1e-06, 1e+06]"),
    # diffusion
    "diffusion alpha 1": ("diffusion_rerank", (X, Q, R), {"graph": G, "alpha": 1.0}, InvalidInputError, "alpha must be a finite number in [0, 1)"),
    "diffusion gamma 0": ("diffusion_rerank", (X, Q, R), {"graph": G, "gamma": 0}, InvalidInputError, "gamma must be a finite number > 0"),
    "diffusion query_neighbors 0": ("diffusion_rerank", (X, Q, R), {"graph": G, "query_neighbors": 0}, InvalidInputError, "query_neighbors must be >= 1"),
    "diffusion truncation 0": ("diffusion_rerank", (X, Q, R), {"graph": G, "truncation": 0}, InvalidInputError, "truncation must be >= 1"),
    "diffusion tol nan": ("diffusion_rerank", (X, Q, R), {"graph": G, "tol": float("nan")}, InvalidInputError, "tol must be a finite number >= 0"),
    "diffusion graph of other n": ("diffusion_rerank", (X[:30], Q, R % 30), {"graph": G}, InvalidInputError, "one row per database item"),
    "diffusion graph type": ("diffusion_rerank", (X, Q, R), {"graph": "g"}, InvalidDTypeError, "KnnGraph"),
    "diffusion ranks repeat": ("diffusion_rerank", (X, Q, ranks_with(0, 9, int(R[0, 0]))), {"graph": G}, InvalidInputError, "again at row 0, column 9"),
    "diffusion NaN in Q": ("diffusion_rerank", (X, with_nan(Q, (0, 0)), R), {"graph": G}, InvalidInputError, "Q must be finite, got NaN at row 0, column 0"),
    "diffusion NaN in a ranked row of X": ("diffusion_rerank", (with_nan(X, (RANKED[1], 2), np.inf), Q, R5), {"graph": G}, InvalidInputError, f"X must be finite, got inf at row {RANKED[1]}, column 2"),
    "diffusion scores without ranks": ("diffusion_rerank", (X, Q), {"graph": G, "scores": S}, InvalidInputError, "without ranks"),
}


def call(impl: str, name: str, args: tuple, kwargs: dict) -> BaseException:
    module: Any = hs if impl == "rust" else reference
    func: Callable[..., Any] = getattr(module, name)
    with pytest.raises(HeatsearchError) as info:
        func(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("case", list(CASES))
def test_rust_and_reference_raise_the_same_error(case):
    name, args, kwargs, kind, fragment = CASES[case]
    rust = call("rust", name, args, kwargs)
    ref = call("reference", name, args, kwargs)
    assert type(rust) is type(ref) is kind, (type(rust), type(ref))
    assert str(rust) == str(ref)
    assert fragment in str(rust), str(rust)


@pytest.mark.parametrize("impl", ["rust", "reference"])
def test_a_mistake_has_one_wording_whichever_function_meets_it(impl):
    """The same bad X in different functions: the same sentence."""
    bad = with_nan(X, (5, 1))
    messages = {
        str(call(impl, name, args, {}))
        for name, args in [("search", (bad, Q)), ("knn_graph", (bad,)), ("heat_rerank", (bad, Q, R))]
    }
    messages.add(str(pytest.raises(InvalidInputError, hs.average_query_expansion, bad, Q, R).value))
    assert messages == {"X must be finite, got NaN at row 5, column 1"}


@pytest.mark.parametrize("impl", ["rust", "reference"])
@pytest.mark.parametrize("name", ["heat_rerank", "diffusion_rerank"])
def test_a_reranker_reads_and_checks_only_the_rows_its_ranking_names(impl, name):
    """A re-ranker reads the database rows its ranking names, and only those: a NaN or an
    infinity elsewhere changes nothing (and is not looked for: checking a million rows to
    re-rank twenty cost more than the re-ranking), in either memory order."""
    func: Callable[..., Any] = getattr(hs if impl == "rust" else reference, name)
    kwargs = {"graph": G} if name == "diffusion_rerank" else {}
    clean = func(X, Q, R5, **kwargs)
    for value in (np.nan, np.inf, -np.inf):
        for layout in (np.ascontiguousarray, np.asfortranarray):
            ranks, scores = func(layout(with_nan(X, (UNRANKED, 1), value)), Q, R5, **kwargs)
            np.testing.assert_array_equal(ranks, clean[0])
            np.testing.assert_array_equal(scores, clean[1])
    with pytest.raises(InvalidInputError, match=f"^X must be finite, got NaN at row {RANKED[0]}, column 1$"):
        func(np.asfortranarray(with_nan(X, (RANKED[0], 1))), Q, R5, **kwargs)


def test_functions_without_a_kernel_use_the_same_checks():
    with pytest.raises(InvalidInputError, match=r"^X must be finite, got inf at row 2, column 0$"):
        hs.l2_normalize(with_nan(X, (2, 0), np.inf))
    with pytest.raises(InvalidInputError, match=r"ranks must hold database indices in \[0, 40\), got 41"):
        hs.average_query_expansion(X, Q, ranks_with(0, 0, 41))
    with pytest.raises(InvalidInputError, match=r"got 3 again at row 1, column 1"):
        hs.compute_map(np.array([[1, 2], [3, 3]]), [{"ok": [1]}, {"ok": [3]}])
    with pytest.raises(InvalidInputError, match=r"indices must hold database indices in \[0, 3\)"):
        hs.KnnGraph(np.array([[1], [2], [3]]), np.ones((3, 1)))


def test_the_index_checks(tmp_path):
    """The helpers the image index uses (_validate is the one place checks are written)."""
    import io

    from heatsearch import _validate as v

    assert v.text("head", "layer") == "head" and v.text(None, "layer", none_ok=True) is None
    with pytest.raises(InvalidDTypeError, match="layer must be a string or None, got int"):
        v.text(5, "layer", none_ok=True)
    with pytest.raises(InvalidInputError, match="non-empty"):
        v.text("", "layer")
    assert v.real_sequence([1, 0.5], "scales", low=0.0, low_open=True) == (1.0, 0.5)
    assert v.real_sequence(np.array([2.0]), "scales") == (2.0,)
    for bad, error in (("1", InvalidDTypeError), ([], InvalidInputError), ([1, True], InvalidDTypeError),
                       ([1, float("nan")], InvalidInputError)):
        with pytest.raises(error, match="scales"):
            v.real_sequence(bad, "scales", low=0.0, low_open=True)
    assert v.bbox([0.4, 1, 10.6, 12]) == (0, 1, 11, 12)
    for bad in ([1, 2, 3], [0, 0, 0.2, 5], "0,0,1,1", [0, 0, np.inf, 1]):
        with pytest.raises(InvalidInputError, match="bbox must"):
            v.bbox(bad)
    assert v.directory(tmp_path, "root") == str(tmp_path)
    with pytest.raises(InvalidInputError, match="root must be an existing directory"):
        v.directory(tmp_path / "no", "root")
    with pytest.raises(InvalidDTypeError, match="root must be a path"):
        v.directory(3, "root")
    assert v.descriptor(np.ones(4, np.float32), "query", 4).shape == (4,)
    with pytest.raises(InvalidInputError, match="vector of length 4 .* got length 3"):
        v.descriptor(np.ones(3, np.float32), "query", 4)
    with pytest.raises(InvalidInputError, match="got shape \\(2, 4\\)"):
        v.descriptor(np.ones((2, 4), np.float32), "query", 4)
    for ok in ("a.jpg", tmp_path, b"\xff\xd8", bytearray(b"x"), memoryview(b"x"), io.BytesIO(), np.zeros((2, 2, 3))):
        assert v.image_source(ok, "image") is ok
    with pytest.raises(InvalidDTypeError, match="image must be an image: a path, encoded image bytes"):
        v.image_source(3.5, "image")
