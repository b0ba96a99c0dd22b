"""The `search --html` page, checked in a real browser (headless Chromium): every query is on
the one page, every thumbnail decodes and shows on screen, every link leads to the original
image from the page's own folder, and long paths wrap instead of widening the page.

Chromium comes from Debian's packages (``apt-get install chromium``; ``.ci/run`` installs it).
Where it is absent the browser tests are skipped, saying so; the page's structure is still
checked without it.
"""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import numpy as np
import pytest

from helpers import run_chromium

from heatsearch.app.gallery import write_gallery
from heatsearch.app.index import SearchHit

PIL = pytest.importorskip("PIL", reason="thumbnails are made with Pillow")

COLOURS = {"blue": (0, 0, 255), "green": (0, 200, 0), "yellow": (255, 230, 0), "magenta": (230, 0, 230),
           "cyan": (0, 220, 230)}
LONG = "a_folder_with_a_really_long_name_that_goes_on_and_on_" * 3


@pytest.fixture
def page(tmp_path):
    """Two queries and their hits, solid-colour images under a long folder, the page elsewhere."""
    from PIL import Image

    photos = tmp_path / "photos" / LONG
    photos.mkdir(parents=True)
    paths = {}
    for name, rgb in COLOURS.items():
        paths[name] = str(photos / f"{name} photo #1.jpg")  # a space and a '#': escaped in URLs
        Image.new("RGB", (300, 200), rgb).save(paths[name])
    results = [
        (paths["blue"], [SearchHit(paths["green"], 0.9, 1), SearchHit(paths["yellow"], 0.5, 2)]),
        (paths["magenta"], [SearchHit(paths["cyan"], 0.8, 4)]),
    ]
    out = tmp_path / "out" / "results.html"
    out.parent.mkdir()
    write_gallery(str(out), results, title="two queries")
    return out, results


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs, self.sections = [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])
        if tag == "section":
            self.sections += 1


def test_one_page_for_all_queries_with_relative_links(page):
    out, results = page
    parser = _Links()
    parser.feed(out.read_text())
    assert parser.sections == 2
    expected = [p for q, hits in results for p in [q] + [h.path for h in hits]]
    targets = [os.path.normpath(os.path.join(out.parent, unquote(h))) for h in parser.hrefs]
    assert targets == expected and all(not h.startswith(("/", "file:")) for h in parser.hrefs)


def test_the_browser_shows_every_query_and_thumbnail_and_the_links_resolve(page, tmp_path):
    out, results = page
    probe = tmp_path / "probe.html"
    probe.write_text(f"""<!doctype html><html><body>
<iframe id="f" src="{out.relative_to(tmp_path).as_posix()}" style="width:800px;height:600px"></iframe>
<script>
document.getElementById("f").onload = function () {{
  var d = this.contentDocument, e = d.documentElement;
  document.body.setAttribute("data-result", JSON.stringify({{
    sections: Array.from(d.querySelectorAll("section h2")).map(function (h) {{ return h.textContent; }}),
    images: Array.from(d.images).map(function (i) {{ return [i.complete, i.naturalWidth, i.naturalHeight]; }}),
    links: Array.from(d.links).map(function (a) {{ return a.href; }}),
    scrollWidth: e.scrollWidth, clientWidth: e.clientWidth}}));
}};
</script></body></html>""")
    dom = run_chromium(tmp_path, "--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
                       probe.as_uri())
    start = dom.index('data-result="') + len('data-result="')
    result = json.loads(dom[start:dom.index('"', start)].replace("&quot;", '"').replace("&amp;", "&"))
    assert len(result["sections"]) == 2
    for n, ((query, hits), heading) in enumerate(zip(results, result["sections"]), 1):
        assert heading == f"Query {n}: {os.path.basename(query)} (top {len(hits)})"
    # Five thumbnails (2 queries + 3 hits), all decoded, longer side 224.
    assert len(result["images"]) == 5 and all(c and max(w, h) == 224 for c, w, h in result["images"])
    # Links: file URLs of the originals, resolved by the browser from the page's location.
    expected = [p for q, hits in results for p in [q] + [h.path for h in hits]]
    assert [unquote(urlparse(u).path) for u in result["links"]] == expected
    assert all(urlparse(u).scheme == "file" and os.path.isfile(unquote(urlparse(u).path)) for u in result["links"])
    # The long paths wrap: the page is no wider than the 800-pixel frame.
    assert result["scrollWidth"] <= result["clientWidth"], result


def test_the_thumbnails_render_on_screen(page, tmp_path):
    from PIL import Image

    out, _ = page
    shot = tmp_path / "shot.png"
    run_chromium(tmp_path, "--window-size=1000,1400", f"--screenshot={shot}", out.as_uri())
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB")).astype(int)
    for name, rgb in COLOURS.items():  # each thumbnail's colour covers a thumbnail-sized area
        near = (np.abs(pixels - np.array(rgb)).max(axis=2) < 40).sum()
        assert near > 224 * 149 * 0.8, (name, near)
