"""Index.search(rerank="spatial"): geometric verification of the top of a ranking, alone and
after another re-ranker, through the API, the command line and the HTML gallery; and on the
real paintings of smvs (skipped without the shared data)."""

from __future__ import annotations

import io
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the index extracts features with torch (the 'torch' extra)")
cv2 = pytest.importorskip("cv2", reason="spatial verification needs OpenCV (the 'spatial' extra)")
from PIL import Image  # noqa: E402

from heatsearch import compute_map  # noqa: E402
from heatsearch.app.cli import main  # noqa: E402
from heatsearch.app.index import SEARCH_RERANKERS, Index, IndexConfig  # noqa: E402
from heatsearch.errors import HeatsearchError, InvalidInputError, MissingDependencyError  # noqa: E402
from heatsearch.vision.extract import Extractor  # noqa: E402
from heatsearch.vision.spatial import SpatialVerifier, spatial_order  # noqa: E402

from helpers import texture, transformed  # noqa: E402

SEEDS = range(1, 7)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six synthetic pictures; the queries are rotated, scaled and cropped copies of them."""
    root = tmp_path_factory.mktemp("textures")
    for s in SEEDS:
        Image.fromarray(texture(s)).save(root / f"t{s}.png")
    return root


@pytest.fixture(scope="module")
def index(folder):
    return Index.build(folder, IndexConfig(max_size=160, scales=(1.0,)), extractor=Extractor(max_size=160))


def path_of(folder, seed):
    return str(folder / f"t{seed}.png")


@pytest.mark.parametrize("seed", [2, 5])
def test_spatial_puts_the_verified_copy_first_and_follows_the_rule(index, folder, seed):
    query = transformed(texture(seed))
    plain = index.search(query, k=None)
    hits = index.search(query, k=None, rerank="spatial")
    assert hits[0].path == path_of(folder, seed)
    assert hits[0].inliers >= 5 * index.spatial.min_inliers
    # Unrelated pictures fit a homography with a few chance inliers (up to 6 here), far fewer.
    assert all(h.inliers is not None and h.inliers < hits[0].inliers / 10 for h in hits[1:])
    # The new order is the rule applied to the plain order; scores stay the plain ones (up to
    # float32 rounding: the extractor's thread count follows the machine's load, see
    # heatsearch.vision.extract).
    by_row = {h.row: h for h in hits}
    counts = [by_row[h.row].inliers for h in plain]
    assert [h.row for h in hits] == [plain[j].row for j in spatial_order(counts, index.spatial.min_inliers)]
    assert [by_row[h.row].score for h in plain] == pytest.approx([h.score for h in plain], rel=1e-5, abs=1e-6)
    assert all(h.inliers is None for h in plain)


def test_composition_with_heat(index, folder):
    query = transformed(texture(3))
    heat = index.search(query, k=None, rerank="heat")
    both = index.search(query, k=None, rerank="heat+spatial")
    assert both[0].path == path_of(folder, 3)
    # Unverified candidates keep HeR's order and scores.
    assert [h.row for h in both[1:]] == [h.row for h in heat if h.path != path_of(folder, 3)]
    scores = {h.row: h.score for h in heat}
    assert [h.score for h in both] == pytest.approx([scores[h.row] for h in both], rel=1e-5, abs=1e-6)
    assert "heat+spatial" in SEARCH_RERANKERS and "diffusion+spatial" in SEARCH_RERANKERS
    for rerank in ("aqe+spatial", "diffusion+spatial"):
        assert index.search(query, k=1, rerank=rerank)[0].path == path_of(folder, 3)


def test_depth_and_k(index, folder):
    query = transformed(texture(4))
    saved = index.spatial
    try:
        index.spatial = SpatialVerifier(depth=2, min_inliers=15)
        plain = index.search(query, k=None)
        hits = index.search(query, k=None, rerank="spatial")
        # Only the top 2 are verified; the rest keep their places and have no count.
        assert [h.row for h in hits[2:]] == [h.row for h in plain[2:]]
        assert all(h.inliers is None for h in hits[2:]) and all(h.inliers is not None for h in hits[:2])
        index.spatial = SpatialVerifier(depth=6)
        top = index.search(query, k=1, rerank="spatial")
        assert len(top) == 1 and top[0].path == path_of(folder, 4)
    finally:
        index.spatial = saved


def test_every_kind_of_query_and_a_box(index, folder, tmp_path):
    img = transformed(texture(6))
    p = tmp_path / "q.png"
    Image.fromarray(img).save(p)
    data = p.read_bytes()
    many = index.search_many([str(p), data, io.BytesIO(data), Image.open(p), img], k=2, rerank="spatial")
    assert all(hits[0].path == path_of(folder, 6) for hits in many)
    assert len({tuple((h.row, h.inliers) for h in hits) for hits in many}) == 1
    single = index.search(io.BytesIO(data), k=2, rerank="spatial")
    assert [(h.row, h.inliers) for h in single] == [(h.row, h.inliers) for h in many[0]]
    h, w = img.shape[:2]
    boxed = index.search(str(p), k=1, rerank="spatial", bbox=[0, 0, w // 2, h])
    assert boxed[0].path == path_of(folder, 6) and boxed[0].inliers < many[0][0].inliers


def test_bad_arguments(index):
    d = np.asarray(index.descriptors)[0]
    with pytest.raises(InvalidInputError, match="verifies the query's image.*query is a descriptor"):
        index.search(d, rerank="spatial")
    with pytest.raises(InvalidInputError, match=r"queries\[1\] is a descriptor"):
        index.search_many([texture(1), d], rerank="heat+spatial")
    for bad in ("spatial+heat", "sift", "heat+spatial+spatial", "Spatial"):
        with pytest.raises(InvalidInputError, match="rerank must be one of"):
            index.search(texture(1), rerank=bad)
    with pytest.raises(HeatsearchError, match=r"queries\[0\].*cannot read|queries\[0\].*such file"):
        index.search_many(["/no/such/query.png"], rerank="spatial")


def test_without_opencv_spatial_says_how_to_install_it(index, monkeypatch):
    import sys

    image = texture(1)
    monkeypatch.setattr(index, "spatial", None)
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingDependencyError, match=r'heatsearch\[spatial\]'):
        index.search(image, rerank="spatial")
    assert index.search(image, k=1)[0].inliers is None  # the rest works without it


def test_a_database_image_gone_is_unverified_not_a_crash(folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    ix = Index.build(copy, IndexConfig(max_size=160, scales=(1.0,)), extractor=Extractor(max_size=160))
    os.remove(copy / "t2.png")
    with pytest.warns(UserWarning, match="t2.png.*unverified"):
        hits = ix.search(transformed(texture(2)), k=None, rerank="spatial")
    gone = [h for h in hits if h.path.endswith("t2.png")]
    assert len(hits) == 6 and gone[0].inliers is None


def test_cli_and_gallery(folder, tmp_path, capsys):
    idx = str(tmp_path / "idx")
    assert main(["index", str(folder), "-o", idx, "--max-size", "160", "--quiet"]) == 0
    q = tmp_path / "query.png"
    Image.fromarray(transformed(texture(1))).save(q)
    html = tmp_path / "out.html"
    capsys.readouterr()
    assert main(["search", idx, str(q), "-k", "2", "--rerank", "heat+spatial", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "inliers of the verified hits" in out.splitlines()[0]
    hits = [line for line in out.splitlines() if line.startswith("  ")]
    assert hits[0].split()[0] == "1" and "inliers" in hits[0] and hits[0].endswith("t1.png"), hits
    page = html.read_text()
    assert page.count("<figure") == 3 and page.count("inliers") == 2
    with pytest.raises(SystemExit):
        main(["search", idx, str(q), "--rerank", "spatial+heat"])
    assert "invalid choice" in capsys.readouterr().err


def test_spatial_beats_the_plain_ranking_on_smvs_paintings(shared_data, tmp_path):
    """24 paintings (references 1-24 indexed at one scale, their 24 phone photos as queries):
    the plain ranking of a small unwhitened index confuses paintings; verification fixes
    many."""
    ref = shared_data / "smvs_paintings" / "Reference"
    qdir = shared_data / "smvs_paintings" / "Query"
    if not ref.is_dir():
        pytest.skip(f"smvs_paintings not found in {shared_data}")
    names = sorted(p.name for p in ref.glob("*.jpg"))[:24]
    ix = Index(IndexConfig(scales=(1.0,), max_size=512))
    ix.add([str(ref / n) for n in names])
    queries = [str(qdir / n) for n in names]
    gnd = [{"ok": np.array([i]), "junk": np.array([], np.int64)} for i in range(len(names))]

    def mean_ap(rerank):
        hits = ix.search_many(queries, k=None, rerank=rerank)
        return compute_map(np.array([[h.row for h in hs] for hs in hits]), gnd).map

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every reference is readable: no candidate left unverified
        plain, spatial = mean_ap(None), mean_ap("spatial")
    print(f"smvs, 24 paintings: plain mAP {plain:.3f}, spatial {spatial:.3f}")
    assert spatial > plain + 0.05, (plain, spatial)


def test_threads_searching_at_once_get_the_sequential_hits(index):
    from concurrent.futures import ThreadPoolExecutor

    queries = [transformed(texture(s)) for s in SEEDS]
    index.spatial = None  # a verifier built by the racing threads themselves
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda q: index.search(q, k=3, rerank="spatial"), queries))
    alone = [index.search(q, k=3, rerank="spatial") for q in queries]
    # Same rows and counts (scores equal up to float32 rounding: see the first test).
    assert [[(h.row, h.inliers) for h in hits] for hits in together] == [
        [(h.row, h.inliers) for h in hits] for hits in alone
    ]
    assert [hits[0].path for hits in alone] == [path_of_seed(index, s) for s in SEEDS]


def path_of_seed(index, seed):
    return next(p for p in index.paths if p.endswith(f"t{seed}.png"))
