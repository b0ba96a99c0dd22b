"""Smoke tests of every ``heatsearch`` subcommand, and the Holidays figures from the CLI."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from heatsearch.app.cli import main


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "index", "search", "explain", "evaluate"):
        assert command in out
    for command, option in [("index", "--max-size"), ("search", "--rerank"), ("evaluate", "--postprocess"),
                            ("explain", "--output"), ("demo", "--photos")]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert option in capsys.readouterr().out


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "heatsearch", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "evaluate" in out.stdout


def test_errors_are_reported_not_raised(capsys, tmp_path):
    assert main(["search", str(tmp_path / "no-index"), "q.jpg"]) == 2
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


torch = pytest.importorskip("torch", reason="index/search/explain/demo extract features with torch")


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
    with pytest.warns(UserWarning, match="could not be read"):
        assert main(["index", str(folder), "-o", idx, "--max-size", "128", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "indexed 6 images" in captured.out and "corrupt.png" in captured.err
    query = str(folder / "coffee_original.jpg")
    html = tmp_path / "out.html"
    assert main(["search", idx, query, "-k", "3", "--rerank", "heat", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert out.count("coffee_") >= 2
    page = html.read_text()
    assert page.count("<figure") == 4 and "data:image/jpeg;base64," in page
    png = tmp_path / "weights.png"
    assert main(["explain", query, "-o", str(png), "--index", idx]) == 0
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == Image.open(query).size
    assert "HeW weights" in capsys.readouterr().out


def test_demo_on_a_reduced_set(capsys):
    assert main(["demo", "--photos", "3", "--max-size", "128", "--quiet"]) == 0
    out = capsys.readouterr().out
    for method in ("spoc", "mac", "gem", "crow", "hew"):
        m = re.search(rf"^{method}\s+([0-9.]+)\s+([0-9.]+)\s+[0-9.]+s$", out, re.M)
        assert m, out
        assert 0 < float(m.group(1)) <= 100 and 0 < float(m.group(2)) <= 100
