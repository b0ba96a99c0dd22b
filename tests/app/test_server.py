"""`heatsearch serve`'s application (heatsearch.app.server) through Starlette's TestClient:
every endpoint, every kind of bad input (a 4xx JSON error, and the server keeps answering),
the token, the upload limit, and changes that a concurrent search never sees half-done.

The index is built with the fake extractor of tests/helpers.py (PixelMaps: no network), on
small random images."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server needs the 'serve' extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("multipart", reason="uploads need python-multipart (the 'serve' extra)")
PIL = pytest.importorskip("PIL.Image")

from fastapi.testclient import TestClient  # noqa: E402
from helpers import PixelMaps, write_images  # noqa: E402

from heatsearch.app.index import Index, IndexConfig  # noqa: E402
from heatsearch.app.server import MAX_K, UPLOAD_FOLDER, create_app  # noqa: E402

NAMES = [f"photos/img{i:02d}.png" for i in range(8)]


def build(root: Path) -> Path:
    """An index of 8 noise images under ``root/photos``, saved to ``root/my.index``."""
    write_images(root, NAMES, size=32)
    index = Index.build(root / "photos", IndexConfig(scales=(1.0,), whiten="none"), extractor=PixelMaps())
    index.root = str(root)
    index.save(root / "my.index")
    return root / "my.index"


@pytest.fixture
def served(tmp_path):
    path = build(tmp_path)
    with TestClient(create_app(str(path), extractor=PixelMaps(), max_upload_bytes=200_000)) as client:
        yield client, tmp_path, path


def png(rgb=None, size=(40, 30)) -> bytes:
    out = io.BytesIO()
    if rgb is None:
        PIL.fromarray(np.random.default_rng(5).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(out, "PNG")
    else:
        PIL.new("RGB", size, rgb).save(out, "PNG")
    return out.getvalue()


def error_of(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]
    return body["error"]


def still_up(client):
    assert client.get("/health").json()["status"] == "ok"


# -- search --------------------------------------------------------------------------------
def test_search_an_uploaded_image_finds_it_first(served):
    client, root, _ = served
    data = (root / NAMES[3]).read_bytes()
    r = client.post("/search", files={"file": ("q.png", data, "image/png")}, params={"k": 3, "rerank": "none"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 3 and set(hits[0]) == {"row", "path", "score", "rerank_score", "inliers"}
    assert hits[0]["path"] == NAMES[3] and hits[0]["score"] == pytest.approx(1, abs=1e-4)
    assert hits[0]["rerank_score"] is None and hits[0]["inliers"] is None
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_search_options_as_form_fields_and_default_rerank(served):
    client, root, _ = served
    data = (root / NAMES[1]).read_bytes()
    r = client.post("/search", files={"file": ("q.png", data)}, data={"k": "2", "bbox": "0,0,20,20"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 2 and all(h["rerank_score"] is None for h in hits)  # no re-ranking by default
    r = client.post("/search", files={"file": ("q.png", data)}, data={"k": "2", "rerank": "auto"})
    assert r.status_code == 200 and all(h["rerank_score"] is not None for h in r.json()["hits"]), r.text


def test_search_by_descriptor_matches_the_index(served):
    client, _, path = served
    index = Index.load(path)
    d = np.asarray(index.descriptors)[5]
    r = client.post("/search?k=4&rerank=heat", json={"descriptor": d.tolist()})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    expected = index.search(d, 4, rerank="heat")
    assert [h["row"] for h in hits] == [e.row for e in expected]
    np.testing.assert_allclose([h["score"] for h in hits], [e.score for e in expected], rtol=1e-5)
    # k, rerank in the JSON body work the same
    again = client.post("/search", json={"descriptor": d.tolist(), "k": 4, "rerank": "heat"}).json()["hits"]
    assert again == hits


def test_batch_of_files_and_of_descriptors(served):
    client, root, path = served
    files = [("file", (n, (root / n).read_bytes(), "image/png")) for n in NAMES[:3]]
    r = client.post("/search/batch", files=files, params={"k": 2, "rerank": "none"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [res[0]["path"] for res in results] == NAMES[:3]
    X = np.asarray(Index.load(path).descriptors)
    r = client.post("/search/batch", json={"descriptors": X[[6, 7]].tolist(), "k": 1, "rerank": "none"})
    assert [res[0]["row"] for res in r.json()["results"]] == [6, 7]


@pytest.mark.parametrize("params, message", [
    ({"k": "0"}, "k must be a whole number"),
    ({"k": "many"}, "k must be a whole number"),
    ({"k": str(MAX_K + 1)}, "k must be a whole number"),
    ({"rerank": "best"}, "rerank must be one of"),
    ({"bbox": "1,2,3"}, "bbox must be x1,y1,x2,y2"),
    ({"bbox": "10,10,5,5"}, "bbox"),
    ({"bbox": "a,b,c,d"}, "bbox must be x1,y1,x2,y2"),
])
def test_bad_options_are_400(served, params, message):
    client, root, _ = served
    r = client.post("/search", files={"file": ("q.png", (root / NAMES[0]).read_bytes())}, params=params)
    assert message in error_of(r, 400)
    still_up(client)


def test_an_option_given_twice_is_refused(served):
    client, root, _ = served
    r = client.post("/search?k=3", files={"file": ("q.png", (root / NAMES[0]).read_bytes())}, data={"k": "2"})
    assert "given both" in error_of(r, 400)


@pytest.mark.parametrize("body, message", [
    ({"descriptor": [0.1, 0.2]}, "length"),
    ({"descriptor": []}, "non-empty list of numbers"),
    ({"descriptor": ["a"]}, "non-empty list of numbers"),
    ({"descriptor": "0.1,0.2"}, "non-empty list of numbers"),
    ({"vector": [1.0]}, "unknown field"),
    ({}, "send an image"),
])
def test_bad_descriptors_are_400(served, body, message):
    client, _, _ = served
    assert message in error_of(client.post("/search", json=body), 400)
    still_up(client)


def test_a_descriptor_with_a_bbox_or_spatial_rerank_is_400(served):
    client, _, path = served
    d = np.asarray(Index.load(path).descriptors)[0].tolist()
    assert "descriptor" in error_of(client.post("/search", json={"descriptor": d, "bbox": "0,0,5,5"}), 400)
    assert "descriptor" in error_of(client.post("/search", json={"descriptor": d, "rerank": "spatial"}), 400)


def test_json_that_is_not_an_object_and_other_content_types(served):
    client, _, _ = served
    r = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert "not valid JSON" in error_of(r, 400)
    assert "must be an object" in error_of(client.post("/search", json=[1, 2]), 400)
    r = client.post("/search", content=b"hello", headers={"content-type": "text/plain"})
    assert "multipart/form-data" in error_of(r, 415)


def truncated_jpeg() -> bytes:
    out = io.BytesIO()
    PIL.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()[:400]


def bomb() -> bytes:
    """A PNG whose header says 20000 x 20000 pixels (400 M, over Pillow's limit), compressed
    to a few hundred kilobytes."""
    out = io.BytesIO()
    PIL.new("1", (20000, 20000)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("data, message", [
    (b"this is not an image", "not a readable image"),
    (b"", "empty"),
    ("truncated", "not a readable image|truncated|cannot read"),
])
def test_bad_images_are_400_and_the_server_stays_up(served, data, message):
    import re

    client, _, _ = served
    if data == "truncated":
        data = truncated_jpeg()
    r = client.post("/search", files={"file": ("q.jpg", data, "image/jpeg")})
    assert re.search(message, error_of(r, 400))
    still_up(client)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    data = bomb()
    with TestClient(create_app(str(build(tmp_path)), extractor=PixelMaps(), max_upload_bytes=len(data) + 10_000)) as client:
        r = client.post("/search", files={"file": ("bomb.png", data, "image/png")})
        assert "more than this server's limit" in error_of(r, 400)
        still_up(client)


def test_a_smaller_pixel_limit(tmp_path):
    with TestClient(create_app(str(build(tmp_path)), extractor=PixelMaps(), max_pixels=1000)) as client:
        r = client.post("/search", files={"file": ("q.png", png(size=(40, 30)))})
        assert "1200 pixels is more than this server's limit of 1000" in error_of(r, 400)


def test_an_upload_over_the_limit_is_413(served):
    client, _, _ = served
    big = os.urandom(300_000)
    r = client.post("/search", files={"file": ("big.png", big, "image/png")})
    assert "larger than this server's limit" in error_of(r, 413)
    still_up(client)


def test_a_streamed_body_over_the_limit_is_413(served):
    """No content-length (chunked): the limit is counted while the body is read."""
    client, _, _ = served

    def chunks():
        for _ in range(40):
            yield b"x" * 10_000

    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert "larger than this server's limit" in error_of(r, 413)
    still_up(client)


def test_two_files_to_search_is_400(served):
    client, root, _ = served
    files = [("file", (n, (root / n).read_bytes())) for n in NAMES[:2]]
    assert "/search/batch" in error_of(client.post("/search", files=files), 400)


def test_a_batch_with_a_bad_image_names_its_position(served):
    client, root, _ = served
    files = [("file", ("a.png", (root / NAMES[0]).read_bytes())), ("file", ("b.jpg", truncated_jpeg()))]
    message = error_of(client.post("/search/batch", files=files, params={"rerank": "none"}), 400)
    assert "b.jpg" in message or "queries[1]" in message


# -- images: add, remove, thumbnails -------------------------------------------------------
def test_add_an_upload_then_find_it_then_remove_it(served):
    client, root, path = served
    data = png()
    r = client.post("/images", files={"file": ("new photo.png", data, "image/png")})
    assert r.status_code == 200, r.text
    added = r.json()["added"]
    assert r.json()["images"] == 9 and added[0]["row"] == 8
    assert added[0]["path"].startswith(f"{UPLOAD_FOLDER}/") and added[0]["path"].endswith(".png")
    assert (root / added[0]["path"]).read_bytes() == data
    # Saved: a fresh load holds it; and it is found.
    assert len(Index.load(path)) == 9
    hits = client.post("/search", files={"file": ("q.png", data)}, params={"k": 1, "rerank": "none"}).json()["hits"]
    assert hits[0]["path"] == added[0]["path"]
    # The same image again: 409, nothing changes.
    assert "already in the index" in error_of(client.post("/images", files={"file": ("again.png", data)}), 409)
    r = client.request("DELETE", "/images", json={"paths": [added[0]["path"]]})
    assert r.json() == {"removed": 1, "images": 8}
    assert len(Index.load(path)) == 8


def test_additions_that_double_the_index_learn_its_whitening_again(tmp_path):
    """An "auto" index served while it grows: learned at 64 images, again at 128; each state
    saved whole (a fresh load checks the rows against the whitening) and searchable."""
    write_images(tmp_path, [f"photos/{i:03d}.png" for i in range(63)], size=32)
    index = Index.build(tmp_path / "photos", IndexConfig(scales=(1.0,), pooling="mac"), extractor=PixelMaps())
    index.root = str(tmp_path)
    index.save(tmp_path / "my.index")
    more = write_images(tmp_path, [f"more/{i:03d}.png" for i in range(65)], size=32, seed=3)
    names = [str(Path(p).relative_to(tmp_path)) for p in more]
    with TestClient(create_app(str(tmp_path / "my.index"), extractor=PixelMaps())) as client:
        for batch, learned_on in ((names[:1], 64), (names[1:], 128)):
            r = client.post("/images", json={"paths": batch})
            assert r.status_code == 200, r.text
            saved = Index.load(tmp_path / "my.index")
            assert saved.whitening_learned and saved.whitening_images == learned_on == len(saved)
            query = (tmp_path / batch[-1]).read_bytes()
            hits = client.post("/search", files={"file": ("q.png", query)}, params={"k": 1}).json()["hits"]
            assert hits[0]["path"] == batch[-1]


def test_add_server_side_paths_inside_the_root_only(served):
    client, root, path = served
    write_images(root, ["more/extra.png"], size=32, seed=9)
    r = client.post("/images", json={"paths": ["more/extra.png"]})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == [{"row": 8, "path": "more/extra.png"}]
    outside = root.parent / f"{root.name}-outside.png"
    outside.write_bytes(png())
    for p in [f"../{outside.name}", str(outside), "/etc/passwd"]:
        assert "outside" in error_of(client.post("/images", json={"paths": [p]}), 400)
    assert "no such file" in error_of(client.post("/images", json={"paths": ["more/none.png"]}), 404)
    assert "non-empty list" in error_of(client.post("/images", json={"paths": "more/extra.png"}), 400)
    assert len(Index.load(path)) == 9


def test_adding_a_bad_upload_changes_nothing(served):
    client, root, path = served
    assert error_of(client.post("/images", files={"file": ("bad.jpg", truncated_jpeg())}), 400)
    assert not (root / UPLOAD_FOLDER).exists() or not any((root / UPLOAD_FOLDER).iterdir())
    assert len(Index.load(path)) == 8
    still_up(client)


def test_remove_by_rows_and_bad_removals(served):
    client, _, path = served
    r = client.request("DELETE", "/images", json={"rows": [0, 2]})
    assert r.json() == {"removed": 2, "images": 6}
    assert [Path(p).name for p in Index.load(path).paths][:2] == ["img01.png", "img03.png"]
    assert "row 6 is not in the index" in error_of(client.request("DELETE", "/images", json={"rows": [6]}), 404)
    assert "not in the index" in error_of(client.request("DELETE", "/images", json={"paths": ["photos/img00.png"]}), 404)
    assert "one of them" in error_of(client.request("DELETE", "/images", json={"rows": [1], "paths": ["x"]}), 400)
    assert "whole numbers" in error_of(client.request("DELETE", "/images", json={"rows": ["1"]}), 400)
    assert len(Index.load(path)) == 6


def test_thumbnail_and_original_of_a_row(served):
    client, root, _ = served
    r = client.get("/images/3/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    with PIL.open(io.BytesIO(r.content)) as im:
        assert im.format == "JPEG" and im.size == (35, 32)  # never upscaled
    r = client.get("/images/3")
    assert r.status_code == 200 and r.content == (root / NAMES[3]).read_bytes()


@pytest.mark.parametrize("url, status", [
    ("/images/8/thumbnail", 404), ("/images/-1/thumbnail", 404), ("/images/x/thumbnail", 400),
    ("/images/..%2F..%2Fetc%2Fpasswd/thumbnail", 404), ("/images/../../etc/passwd", 404),
])
def test_thumbnails_only_of_indexed_rows(served, url, status):
    client, _, _ = served
    error_of(client.get(url), status)


def test_a_search_never_sees_a_half_updated_index(served):
    """Searches while images are added and removed: every answer is consistent (each hit's
    path is the one of its row in an index that existed: the old or the new one)."""
    client, root, path = served
    d = np.asarray(Index.load(path).descriptors)[4].tolist()
    extra = write_images(root, [f"more/x{i}.png" for i in range(3)], size=32, seed=3)
    stop = threading.Event()
    answers, problems = [], []

    def search():
        for _ in range(200):
            if stop.is_set():
                return
            r = client.post("/search", json={"descriptor": d, "k": 20, "rerank": "none"})
            if r.status_code != 200:
                problems.append(r.text)
                return
            answers.append(r.json()["hits"])

    thread = threading.Thread(target=search)
    thread.start()
    try:
        for _ in range(3):
            rel = [os.path.relpath(p, root) for p in extra]
            assert client.post("/images", json={"paths": rel}).status_code == 200
            assert client.request("DELETE", "/images", json={"paths": rel}).status_code == 200
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not problems and answers
    for hits in answers:
        assert len(hits) in (8, 11) and hits[0]["path"] == NAMES[4]
        rows = {h["row"]: h["path"] for h in hits}
        assert all(rows[r] == NAMES[r] for r in rows if r < 8)


# -- token, health, stats, metrics, errors -------------------------------------------------
def test_the_token_guards_everything_but_health_and_the_page(tmp_path):
    path = build(tmp_path)
    with TestClient(create_app(str(path), extractor=PixelMaps(), token="s3cret")) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/").status_code == 200
        for method, url in [("GET", "/stats"), ("GET", "/metrics"), ("GET", "/images/0/thumbnail"),
                            ("POST", "/search"), ("POST", "/images"), ("DELETE", "/images")]:
            assert "token" in error_of(client.request(method, url), 401)
            assert error_of(client.request(method, url, headers={"Authorization": "Bearer wrong"}), 401)
        ok = client.get("/stats", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["images"] == 8


def test_stats(served):
    client, root, _ = served
    s = client.get("/stats").json()
    assert s["images"] == 8 and s["dimension"] == 8 and s["root"] == str(root)
    assert s["build"]["pooling"] == "hew" and s["build"]["scales"] == [1.0]
    assert s["limits"]["max_upload_bytes"] == 200_000 and s["runtime"]


def test_metrics_count_requests_and_time_them(served):
    client, root, _ = served
    client.post("/search", files={"file": ("q.png", (root / NAMES[0]).read_bytes())}, params={"rerank": "none"})
    client.post("/search", params={"k": "0"}, json={"descriptor": [1.0]})
    client.get("/images/2/thumbnail")
    client.get("/images/7/thumbnail")
    text = client.get("/metrics").text
    assert 'heatsearch_requests_total{method="POST",endpoint="/search",status="200"} 1' in text
    assert 'heatsearch_requests_total{method="POST",endpoint="/search",status="400"} 1' in text
    assert 'heatsearch_requests_total{method="GET",endpoint="/images/{row}/thumbnail",status="200"} 2' in text
    assert 'heatsearch_request_duration_seconds_count{endpoint="/search"} 2' in text
    assert 'heatsearch_request_duration_seconds_bucket{endpoint="/search",le="+Inf"} 2' in text
    assert "heatsearch_extraction_duration_seconds_count 1" in text
    assert "heatsearch_images 8" in text
    assert "# TYPE heatsearch_request_duration_seconds histogram" in text


def test_unknown_routes_and_methods_are_json_errors(served):
    client, _, _ = served
    error_of(client.get("/nowhere"), 404)
    error_of(client.put("/search"), 405)


def test_a_bug_is_500_without_a_traceback(tmp_path):
    class Broken(PixelMaps):
        def feature_map(self, image, bbox=None):
            raise RuntimeError("secret detail at /srv/private")

    with TestClient(create_app(str(build(tmp_path)), extractor=Broken()), raise_server_exceptions=False) as client:
        r = client.post("/search", files={"file": ("q.png", png())})
        message = error_of(r, 500)
        assert "RuntimeError" in message and "secret" not in message and "Traceback" not in r.text
        still_up(client)


def test_the_page_is_served(served):
    client, _, _ = served
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'type="file"' in r.text and "search?" in r.text


def test_searches_run_in_parallel(tmp_path):
    """Two image searches meet inside the extractor (a barrier of two): were searches run one
    at a time, the first would wait there alone until the barrier's timeout broke it (500)."""
    path = build(tmp_path)

    class Meeting(PixelMaps):
        def __init__(self):
            super().__init__()
            self.barrier = threading.Barrier(2, timeout=60)

        def feature_map(self, image, bbox=None):
            self.barrier.wait()
            return super().feature_map(image, bbox)

    with TestClient(create_app(str(path), extractor=Meeting()), raise_server_exceptions=False) as client:
        statuses = []

        def search(name):
            r = client.post("/search", files={"file": ("q.png", (tmp_path / name).read_bytes())},
                            params={"rerank": "none", "k": 1})
            statuses.append((r.status_code, r.json()["hits"][0]["path"] if r.status_code == 200 else r.text))

        threads = [threading.Thread(target=search, args=(n,)) for n in NAMES[:2]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sorted(statuses) == [(200, NAMES[0]), (200, NAMES[1])]


def test_spatial_rerank_of_an_upload(served):
    pytest.importorskip("cv2", reason="spatial verification needs OpenCV (the 'spatial' extra)")
    client, root, _ = served
    r = client.post("/search", files={"file": ("q.png", (root / NAMES[2]).read_bytes())},
                    params={"rerank": "spatial", "k": 3})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 3 and all(h["inliers"] is None or isinstance(h["inliers"], int) for h in hits)
    assert hits[0]["path"] == NAMES[2]
