"""mAP and mP@k with the revisitop semantics (docs/ALGORITHM.md, section 4)."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from typing import Dict, List, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatsearch.errors import HeatsearchError, InvalidDTypeError, InvalidInputError
from heatsearch.eval.evaluate import MapResult, compute_map, revisited


# --------------------------------------------------------------------------------------------
# A straightforward loop transcription of revisitop's protocol, written independently: it walks
# every ranked position and counts junk as it goes (the library uses searchsorted).


def loop_map(ranks: np.ndarray, gnd: Sequence[Dict], kappas: Sequence[int]):
    aps: List[float] = []
    prs: List[List[float]] = []
    for i, g in enumerate(gnd):
        ok = set(int(x) for x in g["ok"])
        junk = set(int(x) for x in g.get("junk", []))
        if not ok:
            aps.append(math.nan)
            prs.append([math.nan] * len(kappas))
            continue
        pos = []
        n_junk = 0
        for place, idx in enumerate(ranks[i]):
            if int(idx) in junk:
                n_junk += 1
            elif int(idx) in ok:
                pos.append(place - n_junk)
        ap = 0.0
        for j, r in enumerate(pos):
            p0 = 1.0 if r == 0 else j / r
            p1 = (j + 1) / (r + 1)
            ap += (p0 + p1) / 2 / len(ok)
        aps.append(ap)
        row = []
        for k in kappas:
            if not pos:
                row.append(0.0)
                continue
            kq = min(pos[-1] + 1, k)
            row.append(sum(1 for p in pos if p + 1 <= kq) / kq)
        prs.append(row)
    aps_a = np.array(aps)
    prs_a = np.array(prs).reshape(len(gnd), len(kappas))
    valid = ~np.isnan(aps_a)
    return aps_a[valid].mean(), aps_a, prs_a[valid].mean(axis=0), prs_a


def random_case(rng: np.random.Generator, nq: int, n: int, m: int):
    ranks = np.stack([rng.permutation(n)[:m] for _ in range(nq)])
    gnd = []
    for _ in range(nq):
        n_ok = int(rng.integers(0, 8))
        n_junk = int(rng.integers(0, 6))
        chosen = rng.choice(n, size=min(n, n_ok + n_junk), replace=False)
        gnd.append({"ok": chosen[:n_ok], "junk": chosen[n_ok:]})
    if all(len(g["ok"]) == 0 for g in gnd):
        gnd[0]["ok"] = np.array([ranks[0, 0]])
        gnd[0]["junk"] = np.setdiff1d(gnd[0]["junk"], gnd[0]["ok"])
    return ranks, gnd


def assert_matches_loop(res: MapResult, ranks, gnd, kappas) -> None:
    ref_map, ref_aps, ref_mp, ref_pr = loop_map(np.asarray(ranks), gnd, kappas)
    np.testing.assert_allclose(res.map, ref_map, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(res.aps, ref_aps, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(res.pr_at, ref_pr, rtol=1e-12, atol=1e-15)
    assert list(res.mp_at) == list(kappas)
    np.testing.assert_allclose(list(res.mp_at.values()), ref_mp, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------------------------
# Hand-worked cases (computed on paper, exact fractions)


def test_perfect_ranking_is_one():
    res = compute_map(np.array([[0, 1, 2, 3]]), [{"ok": [1, 0]}])
    assert res.map == 1.0
    # pos (1-based) = [1, 2]; kq = min(2, k): P@1 = 1/1, P@5 = 2/2, P@10 = 2/2
    assert res.mp_at == {1: 1.0, 5: 1.0, 10: 1.0}


def test_junk_shifts_positives_up():
    # ranking 3 0 1 2 4, positives {0, 2}, junk {1}: positives at 0-based places 1 and 3; the
    # junk at place 2 is before the second, so junk-free ranks are [1, 2].
    # AP = 1/2 * [(0/1 + 1/2)/2 + (1/2 + 2/3)/2] = 1/2 * (1/4 + 7/12) = 5/12
    ranks = np.array([[3, 0, 1, 2, 4]])
    res = compute_map(ranks, [{"ok": [0, 2], "junk": [1]}], kappas=(1, 2, 5, 10))
    assert res.map == pytest.approx(float(Fraction(5, 12)), rel=1e-15)
    # 1-based pos [2, 3]; P@1: kq=1 -> 0; P@2: kq=2 -> 1/2; P@5, P@10: kq=3 -> 2/3
    np.testing.assert_allclose(res.pr_at, [[0.0, 0.5, 2 / 3, 2 / 3]], rtol=1e-15)
    # Without the junk declaration, ranks [1, 3]: 1/2 * [(0 + 1/2)/2 + (1/3 + 2/4)/2] = 1/3
    plain = compute_map(ranks, [{"ok": [0, 2]}])
    assert plain.map == pytest.approx(1 / 3, rel=1e-15)


def test_first_place_after_junk_has_precision_one():
    # the query itself (7) is junk at place 0, so the positive at place 1 has rank 0: AP = 1
    res = compute_map(np.array([[7, 2, 0, 1]]), [{"ok": [2], "junk": [7]}])
    assert res.map == 1.0
    assert res.pr_at.tolist() == [[1.0, 1.0, 1.0]]


def test_three_positives_and_precision_clipping():
    # positives at 0-based places 0, 2, 7 of a ranking of 10, no junk.
    # AP = 1/3 * [(1 + 1)/2 + (1/2 + 2/3)/2 + (2/7 + 3/8)/2] = 1/3 * (1 + 7/12 + 37/112)
    #    = 643/1008
    ranks = np.arange(10)[None, :]
    res = compute_map(ranks, [{"ok": [0, 2, 7]}], kappas=(1, 5, 10, 20))
    assert res.map == pytest.approx(float(Fraction(643, 1008)), rel=1e-15)
    # 1-based pos [1, 3, 8]: P@1 = 1/1; P@5: kq=5 -> 2/5; P@10: kq=min(8,10)=8 -> 3/8;
    # P@20: kq=8 -> 3/8 (revisitop clips k at the last retrieved positive)
    np.testing.assert_allclose(res.pr_at, [[1.0, 0.4, 3 / 8, 3 / 8]], rtol=1e-15)


def test_all_positives_on_top_gives_precision_one_at_any_k():
    # revisitop's P@k is clipped: 3 positives in the top 3 give P@10 = 1, not 0.3
    res = compute_map(np.arange(20)[None, :], [{"ok": [0, 1, 2]}], kappas=(10,))
    assert res.mp_at == {10: 1.0}


def test_truncated_ranking_counts_missing_positives_as_not_retrieved():
    # ranking of 2 out of 6 images; positives {0, 3}; only 0 is ranked, at place 1.
    # AP = 1/2 * (0/1 + 1/2)/2 = 1/8 (the recall step stays 1/2)
    res = compute_map(np.array([[5, 0]]), [{"ok": [0, 3]}], kappas=(1, 5), n=6)
    assert res.map == pytest.approx(0.125, rel=1e-15)
    # 1-based pos [2]: P@1 -> kq=1 -> 0; P@5 -> kq=2 -> 1/2
    np.testing.assert_allclose(res.pr_at, [[0.0, 0.5]])


def test_no_positive_ranked_gives_zero():
    # revisitop itself fails here (max of an empty array); we define AP = P@k = 0
    res = compute_map(np.array([[1, 2], [0, 1]]), [{"ok": [3]}, {"ok": [0]}], n=4)
    assert res.aps.tolist() == [0.0, 1.0]
    assert res.pr_at[0].tolist() == [0.0, 0.0, 0.0]
    assert res.map == 0.5
    assert res.mp_at == {1: 0.5, 5: 0.5, 10: 0.5}


def test_query_without_positives_is_nan_and_left_out():
    ranks = np.array([[0, 1, 2], [0, 1, 2], [2, 1, 0]])
    gnd = [{"ok": [0]}, {"ok": [], "junk": [1]}, {"ok": [0]}]
    res = compute_map(ranks, gnd)
    assert res.aps[0] == 1.0 and math.isnan(res.aps[1])
    # third query: positive at place 2: AP = (2*0 ... ) = (0/2 + 1/3)/2 = 1/6
    assert res.aps[2] == pytest.approx(1 / 6, rel=1e-15)
    assert res.map == pytest.approx((1 + 1 / 6) / 2, rel=1e-15)
    assert np.isnan(res.pr_at[1]).all()
    # P@1 per query: 1 and (kq = min(3, 1) = 1 -> 0) -> mean 0.5
    assert res.mp_at[1] == 0.5


def test_missing_junk_key_and_none_junk_mean_no_junk():
    ranks = np.array([[1, 0]])
    a = compute_map(ranks, [{"ok": [0]}])
    b = compute_map(ranks, [{"ok": [0], "junk": None}])
    c = compute_map(ranks, [{"ok": [0], "junk": []}])
    assert a.map == b.map == c.map == pytest.approx(0.25)


def test_result_is_frozen_and_read_only():
    res = compute_map(np.array([[0, 1]]), [{"ok": [0]}])
    with pytest.raises(AttributeError):
        res.map = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.aps[0] = 0.0
    assert "map=1.0000" in repr(res)


def test_empty_kappas():
    res = compute_map(np.array([[0, 1]]), [{"ok": [1]}], kappas=())
    assert res.mp_at == {} and res.pr_at.shape == (1, 0)
    assert res.map == pytest.approx(0.25)


def test_empty_ranking_rows():
    res = compute_map(np.zeros((2, 0), dtype=np.int64), [{"ok": [0]}, {"ok": [1]}], n=3)
    assert res.map == 0.0 and res.mp_at[1] == 0.0


# --------------------------------------------------------------------------------------------
# Against the loop reference


@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    m = int(rng.integers(1, n + 1))
    ranks, gnd = random_case(rng, nq=int(rng.integers(1, 12)), n=n, m=m)
    kappas = (1, 3, 5, 10, 100)
    assert_matches_loop(compute_map(ranks, gnd, kappas=kappas, n=n), ranks, gnd, kappas)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    nq=st.integers(1, 6),
    n=st.integers(1, 30),
    frac=st.floats(0.0, 1.0),
)
def test_matches_loop_reference_hypothesis(seed, nq, n, frac):
    rng = np.random.default_rng(seed)
    m = max(1, int(round(frac * n)))
    ranks, gnd = random_case(rng, nq=nq, n=n, m=m)
    res = compute_map(ranks, gnd, kappas=(1, 2, 7))
    assert_matches_loop(res, ranks, gnd, (1, 2, 7))
    assert 0.0 <= res.map <= 1.0
    valid = ~np.isnan(res.aps)
    assert np.all((res.pr_at[valid] >= 0) & (res.pr_at[valid] <= 1))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40))
def test_positives_first_gives_one_wherever_the_junk_is(seed, n):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_ok = int(rng.integers(1, n + 1))
    ok, rest = perm[:n_ok], perm[n_ok:]
    junk = rest[: int(rng.integers(0, rest.size + 1))]
    # junk may be anywhere: interleave it randomly among the positives
    head = rng.permutation(np.concatenate([ok, junk]))
    ranks = np.concatenate([head, np.setdiff1d(rest, junk)])[None, :]
    res = compute_map(ranks, [{"ok": ok, "junk": junk}])
    assert res.map == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(res.pr_at, 1.0)


def test_sparse_huge_indices_take_the_sorted_path_and_agree():
    # indices near 1e12 are too sparse for the per-query label table
    rng = np.random.default_rng(7)
    ranks, gnd = random_case(rng, nq=5, n=40, m=30)
    offset = 10**12
    big_ranks = ranks.astype(np.int64) + offset
    big_gnd = [{"ok": np.asarray(g["ok"]) + offset, "junk": np.asarray(g["junk"]) + offset}
               for g in gnd]
    a = compute_map(ranks, gnd)
    b = compute_map(big_ranks, big_gnd)
    np.testing.assert_array_equal(a.aps, b.aps)
    np.testing.assert_array_equal(a.pr_at, b.pr_at)
    dup = big_ranks.copy()
    dup[2, 5] = dup[2, 1]
    with pytest.raises(InvalidInputError, match=r"twice in a row, got \d+ again at row 2"):
        compute_map(dup, big_gnd)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.uint64, np.intp])
def test_integer_dtypes_and_layouts_agree(dtype):
    rng = np.random.default_rng(3)
    ranks, gnd = random_case(rng, nq=7, n=50, m=50)
    ref = compute_map(ranks, gnd)
    for r in (ranks.astype(dtype), np.asfortranarray(ranks.astype(dtype)),
              np.ascontiguousarray(ranks.T.astype(dtype)).T, ranks.astype(dtype)[:, ::1]):
        res = compute_map(r, gnd)
        np.testing.assert_array_equal(res.aps, ref.aps)
        np.testing.assert_array_equal(res.pr_at, ref.pr_at)


def test_seventy_queries_over_a_million_images():
    # Rows are one shared permutation (a broadcast view: 4 MB, not 280 MB); each query gets
    # positives at places i, 10 + i, n - 1 - i and junk at place 5 + i, so every AP is known.
    n, nq = 1_000_000, 70
    base = np.random.default_rng(0).permutation(n).astype(np.int32)
    ranks = np.broadcast_to(base, (nq, n))
    gnd = []
    expected = []
    for i in range(nq):
        places = [i, 10 + i, n - 1 - i]
        gnd.append({"ok": base[places], "junk": base[[5 + i]]})
        pos = [i, 10 + i - 1, n - 1 - i - 1]  # the junk precedes the last two
        ap = sum(((1.0 if r == 0 else j / r) + (j + 1) / (r + 1)) / 2 for j, r in enumerate(pos))
        expected.append(ap / 3)
    res = compute_map(ranks, gnd, n=n)
    np.testing.assert_allclose(res.aps, expected, rtol=1e-12)
    assert res.map == pytest.approx(np.mean(expected), rel=1e-12)
    # query 0: 1-based pos [1, 10, ~1e6]: P@1 = 1, P@5 = 1/5, P@10 = 2/10
    np.testing.assert_allclose(res.pr_at[0], [1.0, 0.2, 0.2])


# --------------------------------------------------------------------------------------------
# revisited()


REV = [
    {"easy": [0, 1], "hard": [2], "junk": [3], "bbx": [1.5, 2.0, 30.0, 40.0]},
    {"easy": [], "hard": [4], "junk": []},
]


def test_revisited_protocols():
    easy = revisited(REV, "easy")
    assert easy[0]["ok"].tolist() == [0, 1] and easy[0]["junk"].tolist() == [3, 2]
    assert easy[1]["ok"].tolist() == [] and easy[1]["junk"].tolist() == [4]
    medium = revisited(REV, "medium")
    assert medium[0]["ok"].tolist() == [0, 1, 2] and medium[0]["junk"].tolist() == [3]
    assert medium[1]["ok"].tolist() == [4] and medium[1]["junk"].tolist() == []
    hard = revisited(REV, "hard")
    assert hard[0]["ok"].tolist() == [2] and hard[0]["junk"].tolist() == [3, 0, 1]
    assert hard[1]["ok"].tolist() == [4]
    assert easy[0]["bbx"] == [1.5, 2.0, 30.0, 40.0] and "bbx" not in easy[1]
    assert all(q["ok"].dtype == np.int64 and q["junk"].dtype == np.int64 for q in easy + hard)


def test_revisited_into_compute_map():
    ranks = np.array([[2, 3, 0, 1, 4], [4, 0, 1, 2, 3]])
    # easy: query 0 ok {0,1}, junk {3,2} -> places 2,3 after 2 junk -> ranks 0,1 -> AP 1;
    # query 1 has no easy positive -> NaN, left out
    res = compute_map(ranks, revisited(REV, "easy"))
    assert res.aps[0] == 1.0 and math.isnan(res.aps[1]) and res.map == 1.0
    # hard: query 0 ok {2} at place 0 -> 1; query 1 ok {4} at place 0 -> 1
    assert compute_map(ranks, revisited(REV, "hard")).map == 1.0


def test_revisited_errors():
    with pytest.raises(InvalidInputError, match=r"'easy', 'medium', 'hard'.*got 'Medium'"):
        revisited(REV, "Medium")
    with pytest.raises(InvalidInputError, match=r"missing \['easy', 'hard'\].*classic"):
        revisited([{"ok": [1], "junk": [2]}], "easy")
    with pytest.raises(InvalidInputError, match="whole-number indices, got 0.5"):
        revisited([{"easy": [0.5], "hard": [], "junk": []}], "easy")
    with pytest.raises(InvalidDTypeError, match="integer"):
        revisited([{"easy": ["a"], "hard": [], "junk": []}], "easy")


# --------------------------------------------------------------------------------------------
# Bad input


def test_transposed_ranks_are_rejected_with_a_hint():
    ranks = np.tile(np.arange(10)[:, None], (1, 3))  # (n, nq) as in revisitop
    gnd = [{"ok": [0]}] * 3
    with pytest.raises(InvalidInputError) as e:
        compute_map(ranks, gnd)
    msg = str(e.value)
    assert "expected shape (nq, m) = (3, m)" in msg and "got (10, 3)" in msg and "ranks.T" in msg
    assert compute_map(ranks.T, gnd).map == 1.0


@pytest.mark.parametrize("m", [7, 5000])  # short rows sorted at once / long ones row by row
@pytest.mark.parametrize("offset", [0, 10**12])  # dense indices (a seen table) / sparse ones
def test_repeated_index_is_named_on_every_path(m, offset):
    rng = np.random.default_rng(m)
    ranks = np.stack([rng.permutation(m) for _ in range(3)]).astype(np.int64) + offset
    gnd = [{"ok": [offset]}] * 3
    assert compute_map(ranks, gnd).map > 0
    ranks[1, m - 1] = ranks[1, 3]
    with pytest.raises(InvalidInputError, match=rf"got {ranks[1, 3]} again at row 1, column {m - 1}$"):
        compute_map(ranks, gnd)


def test_uint64_index_beyond_int64_is_rejected():
    ranks = np.array([[0, 2**63]], dtype=np.uint64)
    with pytest.raises(InvalidInputError, match=r"within int64.*got 9223372036854775808 at row 0, column 1"):
        compute_map(ranks, [{"ok": [0]}])


@pytest.mark.parametrize(
    "ranks, n, exc, pattern",
    [
        (np.array([[0.0, 1.0]]), None, InvalidDTypeError, r"integer array.*float64.*argsort"),
        (np.array([[True, False]]), None, InvalidDTypeError, r"integer array.*bool"),
        (np.array([0, 1]), None, InvalidInputError, r"2-D.*ranks\[None, :\]"),
        (np.zeros((1, 2, 2), int), None, InvalidInputError, r"2-D.*3-D"),
        (np.array([[0, -1]]), None, InvalidInputError, r">= 0.*got -1 at row 0, column 1"),
        (np.array([[0, 5]]), 5, InvalidInputError, r"\[0, 5\), got 5 at row 0, column 1"),
        (np.array([[0, 1, 2]]), 2, InvalidInputError, r"at most n = 2 columns.*got \(1, 3\)"),
        (np.array([[0, 1, 0]]), None, InvalidInputError, r"twice in a row, got 0 again at row 0, column 2"),
        (np.array([[1, 0]]), -1, InvalidInputError, r"n must be >= 0, got -1"),
        (np.array([[1, 0]]), True, InvalidDTypeError, r"n must be an int or None, got bool"),
    ],
)
def test_bad_ranks(ranks, n, exc, pattern):
    with pytest.raises(exc, match=pattern):
        compute_map(ranks, [{"ok": [0]}], n=n)


@pytest.mark.parametrize(
    "gnd, exc, pattern",
    [
        ([], InvalidInputError, "at least one query"),
        ({"ok": [0]}, InvalidInputError, "sequence with one mapping per query"),
        ([[0, 1]], InvalidInputError, r"gnd\[0\] must be a mapping"),
        ([{"easy": [0], "hard": [], "junk": []}], InvalidInputError, r"no 'ok'.*revisited\(gnd, protocol\)"),
        ([{"ok": [0.5]}], InvalidInputError, r"gnd\[0\]\['ok'\] must hold whole-number indices, got 0.5"),
        ([{"ok": [np.nan]}], InvalidInputError, r"gnd\[0\]\['ok'\] must hold whole-number indices, got nan"),
        ([{"ok": ["0"]}], InvalidDTypeError, r"gnd\[0\]\['ok'\] must hold integer indices"),
        ([{"ok": [0, 0]}], InvalidInputError, r"repeats an index"),
        ([{"ok": [0], "junk": [1, 0]}], InvalidInputError, r"index 0 is both positive"),
        ([{"ok": [-2]}], InvalidInputError, r">= 0, got -2"),
        ([{"ok": [0], "junk": [9]}], InvalidInputError, r"gnd\[0\]\['junk'\].*\[0, 3\), got 9"),
        ([{"ok": []}], InvalidInputError, r"no query has positives.*undefined"),
    ],
)
def test_bad_gnd(gnd, exc, pattern):
    with pytest.raises(exc, match=pattern):
        compute_map(np.array([[0, 1, 2]]), gnd, n=3)


@pytest.mark.parametrize(
    "kappas, exc",
    [
        ((0,), InvalidInputError),
        ((1, -5), InvalidInputError),
        ((True,), InvalidDTypeError),
        ((1.0,), InvalidDTypeError),
        ((5, 5), InvalidInputError),
        (3, InvalidInputError),
    ],
)
def test_bad_kappas(kappas, exc):
    with pytest.raises(exc, match="kappas"):
        compute_map(np.array([[0, 1]]), [{"ok": [0]}], kappas=kappas)


def test_errors_are_heatsearch_and_builtin_errors():
    with pytest.raises(HeatsearchError):
        compute_map(np.array([[0.5]]), [{"ok": [0]}])
    with pytest.raises(TypeError):
        compute_map(np.array([[0.5]]), [{"ok": [0]}])
    with pytest.raises(ValueError):
        compute_map(np.array([[0, 0]]), [{"ok": [0]}])


def test_ground_truth_as_revisitop_builds_it():
    """revisitop's own evaluation builds ``ok``/``junk`` with ``np.concatenate([...])``, which
    gives an EMPTY FLOAT64 array for an empty list (Revisited Oxford has such queries), and
    MATLAB files hold doubles: both are read as the indices they hold."""
    ranks = np.array([[2, 0, 1, 3], [1, 3, 0, 2]])
    ints = [{"ok": [0], "junk": []}, {"ok": [3, 1], "junk": [0]}]
    floats = [
        {"ok": np.concatenate([np.array([0])]), "junk": np.concatenate([[]])},
        {"ok": np.array([3.0, 1.0]), "junk": np.array([0.0])},
    ]
    assert floats[0]["junk"].dtype == np.float64 and floats[0]["junk"].size == 0
    want = compute_map(ranks, ints, n=4)
    got = compute_map(ranks, floats, n=4)
    assert got.map == want.map
    np.testing.assert_array_equal(got.aps, want.aps)
    easy_hard = [{"easy": np.concatenate([[]]), "hard": [2.0], "junk": np.zeros(0, np.float32)}]
    assert revisited(easy_hard, "medium")[0]["ok"].tolist() == [2]


def test_float16_ground_truth_of_any_value():
    """A float16 index array compared with 2**53 overflowed the cast (a RuntimeWarning from
    inside heatsearch, found by the fuzz suite)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = compute_map(np.array([[2, 0, 1]]), [{"ok": np.float16([1.0]), "junk": np.float16([])}])
    assert res.map == pytest.approx(1 / 6)  # the positive third: (0/2 + 1/3) / 2
