"""Smoke tests of every ``heatsearch`` subcommand, and the Holidays figures from the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import skip_without_extraction

from heatsearch.app.cli import main
from heatsearch.duplicates import DEFAULT_THRESHOLD


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "index", "add", "remove", "info", "sync", "search", "duplicates", "explain", "evaluate"):
        assert re.search(rf"^    {command} ", out, re.M), out
    for command, option in [("index", "--max-size"), ("search", "--rerank"), ("evaluate", "--postprocess"),
                            ("explain", "--output"), ("explain", "--range"), ("demo", "--photos"),
                            ("add", "--no-recursive"), ("remove", "PATH"), ("info", "INDEX"),
                            ("duplicates", "--threshold")]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert option in capsys.readouterr().out


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "heatsearch", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "evaluate" in out.stdout


def test_errors_are_reported_not_raised(capsys, tmp_path):
    assert main(["search", str(tmp_path / "no-index"), "q.jpg"]) == 2
    assert "INDEX must be an existing folder" in capsys.readouterr().err
    (tmp_path / "photos").mkdir()
    assert main(["search", str(tmp_path / "photos"), "q.jpg"]) == 2
    assert "no index.json" in capsys.readouterr().err


def test_evaluate_reproduces_holidays(shared_data, capsys):
    """The authors' Holidays HeW vectors: L2 75.14, signed sqrt + L2 80.24, + HeR 77.15."""
    db = str(shared_data / "holidays" / "vecs_ho.mat")
    gnd = str(shared_data / "holidays" / "gnd_holidays.mat")
    assert main(["evaluate", "--db", db, "--gnd", gnd, "--postprocess", "l2", "--methods", "plain"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^plain\s+75\.14\s", out, re.M), out
    assert main(["evaluate", "--db", db, "--gnd", gnd, "--methods", "plain,+HeR,+AQE,+alpha-QE,+AQE+HeR,+diffusion"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^plain\s+80\.24\s", out, re.M), out
    assert re.search(r"^\+HeR\s+77\.15\s", out, re.M), out
    for name in ("+AQE", "+alpha-QE", "+AQE+HeR", "+diffusion"):
        m = re.search(rf"^{re.escape(name)}\s+([0-9.]+)\s+([0-9.]+)s$", out, re.M)
        assert m and 0 < float(m.group(1)) <= 100, out


def test_evaluate_revisited_needs_query_descriptors(shared_data, tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4993, 16)).astype(np.float32)
    np.save(tmp_path / "db.npy", X)
    gnd = str(shared_data / "gnd" / "gnd_roxford5k.pkl")
    assert main(["evaluate", "--db", str(tmp_path / "db.npy"), "--gnd", gnd, "--methods", "plain"]) == 2
    assert "--queries" in capsys.readouterr().err
    np.save(tmp_path / "q.npy", X[:70])
    assert main(["evaluate", "--db", str(tmp_path / "db.npy"), "--gnd", gnd, "--queries", str(tmp_path / "q.npy"), "--methods", "plain"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"easy\s+medium\s+hard", out), out


skip_without_extraction()  # index/search/explain/demo extract features (torch or ONNX Runtime)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from PIL import Image

    from heatsearch.app.demo import build_copy_detection_set

    root = tmp_path_factory.mktemp("imgs")
    data = build_copy_detection_set(photos=("chelsea", "coffee"), edits=("crop", "blur"), seed=0)
    for img, name in zip(data.images, data.names):
        Image.fromarray(img).save(root / (name.replace("/", "_") + ".jpg"))
    (root / "corrupt.png").write_bytes(b"\x89PNG broken")
    return root


def test_index_search_html_explain(folder, tmp_path, capsys):
    idx = str(tmp_path / "my.index")
    assert main(["index", str(folder), "-o", idx, "--max-size", "128", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "indexed 6 images" in captured.out and "corrupt.png" in captured.err
    query = str(folder / "coffee_original.jpg")
    assert main(["search", idx, query, "-k", "2"]) == 0  # no re-ranking by default
    out = capsys.readouterr().out
    assert "re-ranker" not in out and len(re.findall(r"^ +\d+ +-?[0-9.]+ +\S+$", out, re.M)) == 2, out
    html = tmp_path / "out.html"
    assert main(["search", idx, query, "-k", "3", "--rerank", "heat", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert out.count("coffee_") >= 2
    assert "cosine similarity of the final descriptors" in out and "heat re-ranker's own score" in out
    # Each hit: rank, cosine in [-1, 1], HeR's score, path; the query itself has cosine 1.
    hits = re.findall(r"^ +(\d+) +(-?[0-9.]+) +(\S+) +(\S+)$", out, re.M)
    assert len(hits) == 3 and all(-1 <= float(c) <= 1.0001 for _, c, _, _ in hits), out
    assert [float(c) for _, c, _, p in hits if p == query] == [pytest.approx(1, abs=1e-3)], out
    page = html.read_text()
    assert page.count("<figure") == 4 and "data:image/jpeg;base64," in page
    assert page.count("cosine ") == 3 and page.count("re-ranked ") == 3
    png = tmp_path / "weights.png"
    assert main(["explain", query, "-o", str(png), "--index", idx]) == 0
    from PIL import Image

    with Image.open(png) as im, Image.open(query) as original:
        # The image, then the colour bar and its legend below it.
        assert im.format == "PNG" and im.size[0] >= original.size[0] and im.size[1] > original.size[1]
    out = capsys.readouterr().out
    assert "HeW weights" in out and "colour scale" in out and "down-weighted" in out


def run_cli(*argv, cwd=None):
    """``python -m heatsearch ARGV`` in a real process (what a user's terminal shows)."""
    import os

    import heatsearch

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(heatsearch.__file__))))
    return subprocess.run([sys.executable, "-m", "heatsearch", *map(str, argv)], capture_output=True,
                          text=True, timeout=600, env=env, cwd=cwd)


def test_index_output_a_person_can_read(folder, tmp_path):
    """What `index` tells: what it learned, each skipped file once with its reason (broken
    and looping links too), no raw Python warning, one progress bar over the collection."""
    import os
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(folder, photos)
    os.symlink("deleted.jpg", photos / "dangling.jpg")
    os.symlink("loop.jpg", photos / "loop.jpg")
    run = run_cli("index", photos, "-o", tmp_path / "i", "--max-size", "64", "--single-scale")
    assert run.returncode == 0, run.stderr
    assert "indexed 6 images" in run.stdout
    assert "HeW centering mean from 6 images" in run.stdout
    assert "no whitening yet: it is learned once the index holds 64 images, it holds 6" in run.stdout
    err = run.stderr
    assert "Warning" not in err and "warnings.warn" not in err, err
    assert err.count("corrupt.png") == 1 and "cannot identify image file" in err, err
    assert re.search(r"dangling\.jpg: broken symbolic link: its target deleted\.jpg does not exist", err), err
    assert re.search(r"loop\.jpg: symbolic link loop", err), err
    assert "skipped 3 file(s)" in err
    totals = set(re.findall(r"extracting:[^\r\n]*?\| *\d+/(\d+) \[", err))
    # One bar over the 7 image files (corrupt.png included) and their synthetic copies, never
    # 0/0; it ends full (the unreadable file counts for its copy too).
    assert totals == {"14"} and "14/14 [" in err, err


def test_index_reports_the_whitening_it_learned(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(65):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    assert main(["index", str(tmp_path), "-o", str(tmp_path / "i"), "--max-size", "24", "--single-scale",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"HeW centering mean from 65 images; PCA-whitening learned on 65 images with shrinkage 0\.5, "
                     r"(near-duplicate groups \(\d+ images\) kept together|no near-duplicates found) \(pairs at "
                     r"centred cosine >= 0\.8\), synthetic copies as matching pairs, "
                     r"1280 -> 1280 dimensions", out), out
    assert main(["info", str(tmp_path / "i")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^whitening +PCA-whitening learned on 65 images with shrinkage 0\.5, near-duplicate groups "
                     r"kept together \(pairs at centred cosine >= 0\.8\), synthetic copies as matching pairs, "
                     r"1280 -> 1280 dimensions", out, re.M), out
    assert re.search(r"^HeW mean +learned on the local features of 65 images \(1280 channels\)", out, re.M), out
    assert re.search(rf"^root +{re.escape(str(tmp_path))}$", out, re.M), out
    # 65 more images: the index has doubled, so add learns its whitening again and says so.
    more = tmp_path / "more"
    more.mkdir()
    for i in range(65):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(more / f"{i:02d}.png")
    assert main(["add", str(tmp_path / "i"), str(more), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^added 65 images in [0-9.]+ s \(130 in all\).*\n  PCA-whitening learned on 130 images ", out, re.M), out


def test_add_remove_info(folder, tmp_path, capsys):
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(folder, photos)
    (photos / "corrupt.png").unlink()
    (photos / "later").mkdir()
    for name in ("chelsea_crop.jpg", "chelsea_blur.jpg"):
        (photos / name).rename(photos / "later" / name)
    idx = tmp_path / "i"
    assert main(["index", str(photos), "-o", str(idx), "--max-size", "64", "--single-scale", "--no-recursive",
                 "--quiet"]) == 0
    capsys.readouterr()

    def info():
        assert main(["info", str(idx)]) == 0
        return dict(re.findall(r"^(\S[^ ]*(?: [a-zA-Z]+)?) {2,}(.*)$", capsys.readouterr().out, re.M))

    before = info()
    assert before["images"] == "4" and before["dimension"] == "1280" and before["backbone"] == "efficientnet_lite0"
    assert before["layer"].startswith("head") and before["pooling"] == "hew" and before["scales"] == "1"
    # 3.3 MB: the synthetic copies' scatter (storage.COPIES), whatever the number of images.
    assert "1280 channels" in before["HeW mean"] and re.fullmatch(r"3\.\d MB", before["disk size"])
    assert main(["add", str(idx), str(photos / "later")]) == 0
    assert "added 2 images" in capsys.readouterr().out
    assert info()["images"] == "6"
    assert main(["add", str(idx), str(photos / "later" / "chelsea_crop.jpg")]) == 0
    assert "nothing to add" in capsys.readouterr().out
    assert main(["remove", str(idx), str(photos / "later"), str(photos / "coffee_crop.jpg")]) == 0
    assert "removed 3 images (3 left)" in capsys.readouterr().out
    from heatsearch.app.index import Index

    assert sorted(Index.load(str(idx)).paths) == sorted(str(photos / n) for n in
                                                       ("chelsea_original.jpg", "coffee_blur.jpg", "coffee_original.jpg"))


def test_sync_follows_the_collection_folder(folder, tmp_path, capsys):
    """`sync` indexes new files under the root and drops deleted ones; an unchanged collection
    leaves the index as it is (not even re-saved)."""
    import shutil

    from heatsearch.app.index import Index

    photos = tmp_path / "photos"
    shutil.copytree(folder, photos)
    idx = tmp_path / "i"
    assert main(["index", str(photos), "-o", str(idx), "--max-size", "64", "--single-scale", "--quiet"]) == 0
    capsys.readouterr()
    pointer = (idx / "index.json").read_text()
    assert main(["sync", str(idx), "--quiet"]) == 0
    assert "is up to date with" in capsys.readouterr().out
    assert (idx / "index.json").read_text() == pointer  # nothing was written
    (photos / "coffee_blur.jpg").unlink()
    (photos / "new").mkdir()
    shutil.copy(folder / "chelsea_blur.jpg", photos / "new" / "copy.jpg")
    assert main(["sync", str(idx), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "added 1, removed 1 images" in captured.out and "(6 in all)" in captured.out, captured.out
    assert captured.err.count("corrupt.png") == 1, captured.err  # still unreadable: listed, once
    paths = Index.load(str(idx)).paths
    assert str(photos / "new" / "copy.jpg") in paths and str(photos / "coffee_blur.jpg") not in paths


def test_a_moved_collection_is_found_with_root(folder, tmp_path, capsys):
    """A collection moved together with its index: every command finds the images with
    --root, and a command that saves records the new place."""
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(folder, photos)
    (photos / "corrupt.png").unlink()
    idx = tmp_path / "i"
    assert main(["index", str(photos), "-o", str(idx), "--max-size", "64", "--single-scale", "--quiet"]) == 0
    moved = tmp_path / "elsewhere"
    photos.rename(moved)
    capsys.readouterr()
    query = moved / "coffee_original.jpg"
    assert main(["sync", str(idx), "--quiet"]) == 2
    assert "is not a folder any more" in capsys.readouterr().err
    html = tmp_path / "page.html"
    assert main(["search", str(idx), str(query), "-k", "2", "--root", str(moved), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert str(moved / "coffee_original.jpg") in out and str(photos) + "/" not in out
    assert html.read_text().count("data:image/jpeg;base64,") == 3  # the thumbnails were found
    assert main(["info", str(idx), "--root", str(moved)]) == 0
    assert re.search(rf"^root +{re.escape(str(moved))}$", capsys.readouterr().out, re.M)
    assert main(["sync", str(idx), "--root", str(moved), "--quiet"]) == 0
    assert "its new collection folder is recorded" in capsys.readouterr().out
    assert main(["search", str(idx), str(query), "-k", "1"]) == 0  # no --root needed any more
    assert str(query) in capsys.readouterr().out
    assert main(["info", str(idx), "--root", str(tmp_path / "nowhere")]) == 2
    assert "--root" in capsys.readouterr().err


def test_search_writes_one_page_for_all_queries(folder, tmp_path, capsys):
    idx = str(tmp_path / "i")
    assert main(["index", str(folder), "-o", idx, "--max-size", "64", "--single-scale", "--quiet"]) == 0
    queries = [str(folder / "coffee_original.jpg"), str(folder / "chelsea_original.jpg")]
    page = tmp_path / "pages" / "results.html"
    page.parent.mkdir()
    assert main(["search", idx, *queries, "-k", "2", "--html", str(page)]) == 0
    assert sorted(p.name for p in page.parent.iterdir()) == ["results.html"]
    text = page.read_text()
    assert text.count('<section class="query"') == 2
    import os

    for q in queries:  # links relative to the page's folder
        assert f'href="{os.path.relpath(q, page.parent)}"' in text


def test_duplicates_groups_each_photo_with_its_copies(folder, tmp_path, capsys):
    idx = str(tmp_path / "i")
    assert main(["index", str(folder), "-o", idx, "--max-size", "128", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["duplicates", idx, "--threshold", "0.6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 group(s) of near-duplicates: 6 of the 6 images (cosine >= 0.6 "), out
    groups = re.split(r"^group \d+: ", out, flags=re.M)[1:]
    assert len(groups) == 2, out
    for text in groups:
        assert re.match(r"3 images, [23] of 3 pairs linked \(cosine [0-9.]+ to [0-9.]+\)", text), out
        names = re.findall(r"^ +(0\.\d{4}|1\.0000)  (\S+)$", text, re.M)
        assert len(names) == 3 and len({os.path.basename(p).split("_")[0] for _, p in names}) == 1, out
    assert main(["duplicates", idx, "--threshold", "1"]) == 0
    assert capsys.readouterr().out.startswith("no near-duplicates among the 6 images (cosine >= 1 ")
    assert main(["duplicates", idx]) == 0  # 6 images learn no whitening: the unwhitened default
    assert f"(cosine >= {DEFAULT_THRESHOLD:g} of the unwhitened descriptors" in capsys.readouterr().out


def test_demo_on_a_reduced_set(capsys):
    assert main(["demo", "--photos", "3", "--max-size", "128", "--quiet"]) == 0
    out = capsys.readouterr().out
    for method in ("spoc", "mac", "gem", "crow", "hew"):
        m = re.search(rf"^{method}\s+([0-9.]+)\s+([0-9.]+)\s+[0-9.]+s$", out, re.M)
        assert m, out
        assert 0 < float(m.group(1)) <= 100 and 0 < float(m.group(2)) <= 100


def test_index_with_ann_and_float16(folder, tmp_path):
    """`index --ann hnsw --float16`: the configuration is recorded, the approximate index is
    saved beside the descriptors, and a search answers through it."""
    pytest.importorskip("faiss", reason="--ann needs faiss-cpu (pip install 'heatsearch[ann]')")
    from heatsearch.app.index import ANN_FILE, Index

    out = tmp_path / "i"
    assert main(["index", str(folder), "-o", str(out), "--max-size", "64", "--single-scale",
                 "--ann", "hnsw", "--float16", "--quiet"]) == 0
    index = Index.load(out)
    assert index.config.ann == "hnsw" and index.config.storage_dtype == "float16"
    assert list(out.glob(f"data-*/{ANN_FILE}"))
    first = index.paths[0]
    assert index.search(np.asarray(index.descriptors[0], np.float32), k=1)[0].path == first
    with pytest.raises(SystemExit) as info:  # argparse's own refusal of a choice
        main(["index", str(folder), "-o", str(tmp_path / "j"), "--ann", "fast"])
    assert info.value.code == 2 and not (tmp_path / "j").exists()


def test_a_reader_that_stops_early_is_not_an_error(folder, tmp_path):
    """`heatsearch ... | head`: the reader closed the pipe; the command stops quietly with the
    status of a process ended by SIGPIPE, no "error: Broken pipe" and no traceback."""
    import os

    import heatsearch

    assert main(["index", str(folder), "-o", str(tmp_path / "i"), "--max-size", "64", "--single-scale",
                 "--quiet"]) == 0
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(heatsearch.__file__))))
    read, write = os.pipe()
    os.close(read)  # a reader already gone: the first write fails
    try:
        run = subprocess.run([sys.executable, "-m", "heatsearch", "info", str(tmp_path / "i")], stdout=write,
                             stderr=subprocess.PIPE, text=True, timeout=600, env=env)
    finally:
        os.close(write)
    assert run.returncode == 141 and run.stderr == "", run.stderr
