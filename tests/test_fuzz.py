"""Fuzzing every public function and file loader with generated bad input.

Arrays of every ndim (zero-size axes included), dtypes heatsearch does not take, NaN, infinity,
huge and denormal values, odd strides and reversed or Fortran layouts; counts and parameters
of every wrong type and sign; rankings out of range, repeated, transposed. Each call must
either raise a HeatsearchError subclass (and nothing else: no TypeError from NumPy, no
panic, no RuntimeWarning turned into a wrong value) or return a result that is right by
construction: the right shape and dtype, finite values, and for every kernel that has a NumPy
reference, the reference's outcome (the same exception type, or a result within tolerance).

The number of examples is bounded (``MAX_EXAMPLES`` per function), so the suite runs in CI in
well under a minute.
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
from typing import Any, Callable, Dict, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import heatsearch as hs
from heatsearch import aggregate, reference
from heatsearch.errors import HeatsearchError

MAX_EXAMPLES = 200
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples in every run: CI never flakes on a new draw
)

# ---------------------------------------------------------------------------------------------
# Strategies.
# ---------------------------------------------------------------------------------------------
SPECIAL = [np.nan, np.inf, -np.inf, 1e38, -1e38, 3e38, 1e-42, -1e-42, 1e-300, 1e300, 0.0, -0.0]
DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64]


@st.composite
def arrays(draw: Any, ndim: Any = None, dtypes: Any = None, max_side: int = 7) -> np.ndarray:
    """An array of any (or the given) ndim and dtype, values from random to special, in a
    random memory layout (C, Fortran, reversed, strided, odd byte strides)."""
    nd = draw(st.integers(0, 4)) if ndim is None else draw(st.sampled_from(ndim))
    shape = tuple(draw(st.lists(st.integers(0, max_side), min_size=nd, max_size=nd)))
    dtype = np.dtype(draw(st.sampled_from(dtypes or DTYPES)))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1e-3, 1e3, 1e20, 1e-20]))
    if base.size and draw(st.booleans()):
        flat = base.reshape(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[rng.integers(0, flat.size)] = draw(st.sampled_from(SPECIAL))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype.kind == "b":
            a = base > 0
        elif dtype.kind in "iu":
            a = np.nan_to_num(base, posinf=7, neginf=-7).clip(-50, 50).astype(dtype)
        else:
            a = base.astype(dtype)
    layout = draw(st.sampled_from(["C", "F", "reversed", "strided", "odd"]))
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "reversed" and a.ndim:
        a = a[::-1]
    elif layout == "strided" and a.ndim:
        big = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
        big[::2] = a
        a = big[::2]
    elif layout == "odd" and dtype != np.dtype(np.bool_):
        rec = np.zeros(a.shape, dtype=[("tag", "i1"), ("v", a.dtype)])
        rec["v"] = a
        a = rec["v"]
    return a


def floats(ndim: Tuple[int, ...] = (2,)) -> Any:
    """Mostly float32/float64 arrays of the given ndims (sometimes anything else)."""
    return st.one_of(arrays(ndim=ndim, dtypes=[np.float32, np.float64]), arrays(ndim=ndim), arrays())


COUNTS = st.sampled_from([None, -1, 0, 1, 2, 3, 7, 2.5, True, "2", 2**70, np.int64(3), np.uint8(2), [3]])
REALS = st.sampled_from([0, 0.1, 1.0, -1.0, 0.5, 0.99, 1.0 + 1e-12, np.nan, np.inf, 1e308, 1e-308, "1", None, True, np.float32(0.3)])


@st.composite
def rankings(draw: Any, nq: int, n: int) -> Any:
    """A first-pass ranking for nq queries of n items: valid, out of range, repeated,
    transposed, float, 1-D or of a foreign dtype."""
    kind = draw(st.sampled_from(["valid", "range", "repeat", "transposed", "float", "1d", "u64", "empty"]))
    m = draw(st.integers(0, max(n, 0)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    r = np.stack([rng.permutation(max(n, 1))[:m] for _ in range(nq)]) if nq else np.zeros((0, m), np.int64)
    if kind == "range" and r.size:
        r.flat[rng.integers(0, r.size)] = draw(st.sampled_from([-1, n, n + 5, 2**40]))
    elif kind == "repeat" and r.shape[1] > 1:
        r[:, 1] = r[:, 0]
    elif kind == "transposed":
        r = r.T
    elif kind == "float":
        r = r.astype(np.float64)
    elif kind == "1d":
        r = r.reshape(-1)
    elif kind == "u64":
        r = r.astype(np.uint64)
    elif kind == "empty":
        r = r[:, :0]
    return r


# ---------------------------------------------------------------------------------------------
# The oracle.
# ---------------------------------------------------------------------------------------------
def outcome(call: Callable[[], Any]) -> Any:
    """The call's result, or the HeatsearchError it raised; anything else fails the test.

    NumPy's RuntimeWarnings (overflow, invalid value) are errors here: inside heatsearch they
    would mean a wrong value made its way to the user."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)  # documented notices (whitening's rank)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return call()
        except HeatsearchError as e:
            return e


def assert_sane(result: Any) -> None:
    """A returned result holds no NaN (infinity only where the input had it is impossible
    here: every function rejects non-finite input)."""
    if isinstance(result, HeatsearchError):
        return
    parts = result if isinstance(result, tuple) else (result,)
    for p in parts:
        p = getattr(p, "similarities", p)
        a = np.asarray(p)
        if a.dtype.kind in "fc":
            assert np.isfinite(a).all(), f"non-finite values in a result: {a}"


def assert_same_outcome(got: Any, want: Any, rtol: float) -> None:
    """The Rust path and the reference agree: the same exception (type and message), or
    results of the same shapes and dtypes."""
    if isinstance(want, HeatsearchError) or isinstance(got, HeatsearchError):
        assert type(got) is type(want), (got, want)
        assert str(got) == str(want)
        return
    gs = got if isinstance(got, tuple) else (got,)
    ws = want if isinstance(want, tuple) else (want,)
    for g, w in zip(gs, ws):
        g, w = np.asarray(getattr(g, "indices", g)), np.asarray(getattr(w, "indices", w))
        assert g.shape == w.shape and g.dtype == w.dtype


# ---------------------------------------------------------------------------------------------
# Kernels with a reference: the same outcome on both paths.
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(X=floats(), Q=floats(), k=COUNTS)
def test_search(X, Q, k):
    got = outcome(lambda: hs.search(X, Q, k))
    assert_sane(got)
    assert_same_outcome(got, outcome(lambda: reference.search(X, Q, k)), 1e-5)


@SETTINGS
@given(X=floats(), neighbors=COUNTS)
def test_knn_graph(X, neighbors):
    got = outcome(lambda: hs.knn_graph(X, neighbors=neighbors))
    assert_sane(got)
    assert_same_outcome(got, outcome(lambda: reference.knn_graph(X, neighbors=neighbors)), 1e-5)


@SETTINGS
@given(fmap=floats((1, 2, 3, 4)), mean=st.one_of(st.none(), floats((1, 2))), threshold=REALS, ground=REALS)
def test_hew(fmap, mean, threshold, ground):
    for name in ("hew_weights", "hew_pool"):
        got = outcome(lambda: getattr(hs, name)(fmap, mean, threshold=threshold, ground=ground))
        assert_sane(got)
        want = outcome(lambda: getattr(reference, name)(fmap, mean, threshold=threshold, ground=ground))
        assert_same_outcome(got, want, 1e-3)


@SETTINGS
@given(maps=st.one_of(st.lists(floats((2, 3)), max_size=3), floats((3, 4))), mean=st.one_of(st.none(), floats((1,))))
def test_hew_batch_and_local_mean(maps, mean):
    got = outcome(lambda: hs.hew_pool_batch(maps, mean))
    assert_sane(got)
    assert_same_outcome(got, outcome(lambda: reference.hew_pool_batch(maps, mean)), 1e-3)
    got = outcome(lambda: hs.local_mean(maps))
    assert_sane(got)
    assert_same_outcome(got, outcome(lambda: reference.local_mean(maps)), 1e-6)


@st.composite
def rerank_case(draw: Any) -> Tuple[Any, Any, Any, Any]:
    X = draw(floats())
    Q = draw(floats())
    nq = Q.shape[0] if np.ndim(Q) == 2 else 1
    n = X.shape[0] if np.ndim(X) == 2 else 3
    ranks = draw(rankings(nq, n))
    scores = draw(st.one_of(st.none(), st.just("matching"), floats()))
    if isinstance(scores, str):
        scores = np.zeros(np.shape(ranks), np.float32 if np.asarray(X).dtype == np.float32 else np.float64)
    return X, Q, ranks, scores


@SETTINGS
@given(case=rerank_case(), depth=COUNTS, ground=REALS)
def test_heat_rerank(case, depth, ground):
    X, Q, ranks, scores = case
    got = outcome(lambda: hs.heat_rerank(X, Q, ranks, depth=depth, ground=ground, scores=scores))
    assert_sane(got)
    want = outcome(lambda: reference.heat_rerank(X, Q, ranks, depth=depth, ground=ground, scores=scores))
    assert_same_outcome(got, want, 1e-3)


@SETTINGS
@given(case=rerank_case(), neighbors=COUNTS, alpha=REALS, gamma=REALS, truncation=COUNTS)
def test_diffusion_rerank(case, neighbors, alpha, gamma, truncation):
    pytest.importorskip("scipy", reason="the reference diffusion needs SciPy")
    X, Q, ranks, scores = case
    kwargs = dict(scores=scores, neighbors=neighbors, alpha=alpha, gamma=gamma, truncation=truncation)
    got = outcome(lambda: hs.diffusion_rerank(X, Q, ranks, **kwargs))
    assert_sane(got)
    assert_same_outcome(got, outcome(lambda: reference.diffusion_rerank(X, Q, ranks, **kwargs)), 1e-3)


# ---------------------------------------------------------------------------------------------
# Functions without a reference: a HeatsearchError or a sane result.
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(case=rerank_case(), neighbors=COUNTS, alpha=REALS)
def test_query_expansion(case, neighbors, alpha):
    X, Q, ranks, _ = case
    for call in (
        lambda: hs.average_query_expansion(X, Q, ranks, neighbors=neighbors),
        lambda: hs.alpha_query_expansion(X, Q, ranks, neighbors=neighbors, alpha=alpha),
        lambda: hs.alpha_database_augmentation(X, neighbors=neighbors, alpha=alpha),
    ):
        assert_sane(outcome(call))


@SETTINGS
@given(X=arrays(), p=REALS, eps=REALS, dim=COUNTS, Y=arrays())
def test_postprocess_and_whitening(X, p, eps, dim, Y):
    assert_sane(outcome(lambda: hs.power_normalize(X, p=p)))
    assert_sane(outcome(lambda: hs.l2_normalize(X, eps=eps)))
    w = outcome(lambda: hs.PCAWhitening().fit(X, dim=dim))
    if not isinstance(w, HeatsearchError):
        assert_sane(outcome(lambda: w.transform(Y)))
        assert_sane(outcome(lambda: hs.PostProcess(w)(Y)))


@SETTINGS
@given(fmap=arrays(), method=st.sampled_from(list(aggregate.POOLINGS) + ["nope", 3]), p=REALS, levels=COUNTS)
def test_pooling(fmap, method, p, levels):
    kwargs: Dict[str, Any] = {"gem": {"p": p}, "rmac": {"levels": levels}}.get(method, {}) if isinstance(method, str) else {}
    assert_sane(outcome(lambda: aggregate.pool(fmap, method, **kwargs)))


@SETTINGS
@given(ranks=st.one_of(rankings(3, 6), arrays()), ok=arrays(ndim=(0, 1, 2)), junk=arrays(ndim=(0, 1)), kappas=st.sampled_from([(1, 5), (), (0,), (2.0,), 3, (1, 1)]), n=COUNTS)
def test_compute_map(ranks, ok, junk, kappas, n):
    gnd = [{"ok": ok, "junk": junk}] * (np.shape(ranks)[0] if np.ndim(ranks) == 2 else 1)
    assert_sane(outcome(lambda: hs.compute_map(ranks, gnd, kappas=kappas, n=n)))
    assert_sane(outcome(lambda: hs.revisited([{"easy": ok, "hard": junk, "junk": []}], "medium")))


@SETTINGS
@given(indices=st.one_of(rankings(4, 4), arrays()), similarities=arrays())
def test_knn_graph_object(indices, similarities):
    assert_sane(outcome(lambda: hs.KnnGraph(indices, similarities)))


# ---------------------------------------------------------------------------------------------
# File loaders: damaged, truncated or foreign files are HeatsearchErrors.
# ---------------------------------------------------------------------------------------------
def _valid_files(tmp: Any) -> Dict[str, bytes]:
    """Valid files of every format the loaders read, as bytes (to be damaged)."""
    out: Dict[str, bytes] = {}
    gt = {"format": "heatsearch-gnd", "version": 1, "images": ["a", "b", "c"], "queries": ["q"],
          "gnd": [{"ok": [0, 2], "junk": [1]}]}
    out["gnd.json"] = json.dumps(gt).encode()
    out["gnd.pkl"] = pickle.dumps({"imlist": ["a", "b"], "qimlist": ["q"], "gnd": [{"easy": [0], "hard": [1], "junk": []}]})
    buf = io.BytesIO()
    np.save(buf, np.eye(3, dtype=np.float32))
    out["desc.npy"] = buf.getvalue()
    w = hs.PCAWhitening().fit(np.random.default_rng(0).standard_normal((20, 4)))
    w.save(tmp / "w.npz")
    out["w.npz"] = (tmp / "w.npz").read_bytes()
    return out


@settings(max_examples=MAX_EXAMPLES * 2, deadline=None, derandomize=True)
@given(damage=st.sampled_from(["truncate", "flip", "garbage", "empty", "json-type"]), cut=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_file_loaders_reject_damaged_files(tmp_path_factory, damage, cut, seed):
    tmp = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(seed)
    loaders: Dict[str, Callable[[Any], Any]] = {
        "gnd.json": hs.load_ground_truth,
        "gnd.pkl": hs.load_ground_truth,
        "desc.npy": hs.load_descriptors,
        "w.npz": hs.PCAWhitening.load,
    }
    for name, data in _valid_files(tmp).items():
        if damage == "truncate":
            data = data[: int(len(data) * cut)]
        elif damage == "flip" and data:
            b = bytearray(data)
            for i in rng.integers(0, len(b), 4):
                b[i] ^= 0xFF
            data = bytes(b)
        elif damage == "garbage":
            data = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        elif damage == "empty":
            data = b""
        elif damage == "json-type" and name.endswith(".json"):
            data = json.dumps([1, None, "x"]).encode()
        path = tmp / name
        path.write_bytes(data)
        result = outcome(lambda: loaders[name](path))
        assert_sane(result if not hasattr(result, "projection_") else result.projection_)


@SETTINGS
@given(X=arrays(), shrinkage=st.one_of(REALS, st.sampled_from(["ledoit-wolf", "lw", None, True])), Y=arrays())
def test_shrunk_whitening(X, shrinkage, Y):
    w = outcome(lambda: hs.PCAWhitening().fit(X, shrinkage=shrinkage))
    if not isinstance(w, HeatsearchError):
        assert 0 <= w.shrinkage_ < 1 or shrinkage == "ledoit-wolf" and 0 <= w.shrinkage_ <= 1
        assert_sane(outcome(lambda: w.transform(Y)))


@SETTINGS
@given(X=floats(), Q=floats(), k=COUNTS, rerank=st.sampled_from(list(hs.RERANKERS) + ["spatial?", 3]))
def test_rank_with_every_reranker(X, Q, k, rerank):
    got = outcome(lambda: hs.rank(X, Q, k=k, rerank=rerank))
    assert_sane(got)
    if not isinstance(got, HeatsearchError):
        ranks, scores = got
        assert ranks.shape == scores.shape and ranks.ndim == 2


@SETTINGS
@given(X=arrays(), threshold=REALS, block=COUNTS, normalise=st.booleans())
def test_duplicate_groups(X, threshold, block, normalise):
    if normalise:
        normalised = outcome(lambda: hs.l2_normalize(X))
        X = X if isinstance(normalised, HeatsearchError) else normalised
    got = outcome(lambda: hs.duplicate_groups(X, threshold, block=block))
    want = outcome(lambda: reference.duplicate_groups(X, threshold, block=block))
    if isinstance(got, HeatsearchError) or isinstance(want, HeatsearchError):
        assert type(got) is type(want) and str(got) == str(want), (got, want)
        return
    assert [list(g.rows) for g in got] == [list(g.rows) for g in want]
