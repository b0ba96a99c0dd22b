"""The search page of `heatsearch serve`, driven in headless Chromium against a real server
(uvicorn in a thread, 127.0.0.1, a free port): a probe page of the same origin puts a photo
into the page's file input, as a user picking a file does, and reads the result grid once
the page has drawn it: the top hit is the photo itself with its score, its thumbnail decoded,
its link leading to the row's full image.

Chromium comes from Debian's packages (``apt-get install chromium``; ``.ci/run`` installs it);
where it is absent the test is skipped, saying so."""

from __future__ import annotations

import html
import json
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the server needs the 'serve' extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("uvicorn", reason="the server needs the 'serve' extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("multipart", reason="uploads need python-multipart (the 'serve' extra)")
pytest.importorskip("PIL.Image")

from helpers import PixelMaps, chromium, run_chromium, write_images  # noqa: E402

from heatsearch.app.index import Index, IndexConfig  # noqa: E402
from heatsearch.app.server import create_app  # noqa: E402

#: The probe: loads the page in a frame, gives its file input the bytes of row 3's image,
#: waits (at most 200 x 100 ms) for the grid and its thumbnails, and writes what it sees.
PROBE = """<!doctype html><html><body>
<iframe id="f" src="/" style="width:1000px;height:800px"></iframe>
<script>
var f = document.getElementById("f");
f.onload = function () {
  var d = f.contentDocument, input = d.getElementById("file");
  fetch("/images/3").then(function (r) { return r.blob(); }).then(function (b) {
    var t = new DataTransfer();
    t.items.add(new File([b], "query.png", {type: "image/png"}));
    input.files = t.files;
    input.dispatchEvent(new Event("change"));
    var tries = 0;
    (function poll() {
      var figs = d.querySelectorAll("figure.hit"), imgs = d.querySelectorAll("figure.hit img");
      var ready = d.body.dataset.done === "1" && imgs.length &&
                  Array.prototype.every.call(imgs, function (i) { return i.complete && i.naturalWidth > 0; });
      if (!ready && ++tries < 200) { setTimeout(poll, 100); return; }
      document.body.setAttribute("data-result", JSON.stringify({
        status: d.getElementById("status").textContent,
        hits: Array.prototype.map.call(figs, function (h) {
          return {path: h.dataset.path, caption: h.querySelector("figcaption").textContent,
                  href: h.querySelector("a").getAttribute("href"),
                  width: h.querySelector("img").naturalWidth};
        })}));
    })();
  });
};
</script></body></html>"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    import uvicorn
    from fastapi.responses import HTMLResponse

    chromium()  # skip before starting anything
    write_images(tmp_path, [f"photos/img{i:02d}.png" for i in range(6)], size=48)
    index = Index.build(tmp_path / "photos", IndexConfig(scales=(1.0,), whiten="none"), extractor=PixelMaps())
    index.root = str(tmp_path)
    index.save(tmp_path / "my.index")
    app = create_app(str(tmp_path / "my.index"), extractor=PixelMaps())
    app.add_api_route("/probe", lambda: HTMLResponse(PROBE))  # same origin as the page
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(600):  # at most 60 s
        if srv.started:
            break
        time.sleep(0.1)
    assert srv.started, "the server did not start within 60 s"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


def test_the_page_uploads_a_photo_and_shows_it_first(server, tmp_path):
    dom = run_chromium(tmp_path, "--virtual-time-budget=30000", "--dump-dom", f"{server}/probe")
    start = dom.index('data-result="') + len('data-result="')
    result = json.loads(html.unescape(dom[start:dom.index('"', start)]))
    hits = result["hits"]
    assert result["status"].startswith("6 results"), result
    assert len(hits) == 6 and hits[0]["path"] == "photos/img03.png"
    assert "cosine 1.0000" in hits[0]["caption"] and hits[0]["href"] == "images/3"
    assert all(h["width"] == 48 + 3 for h in hits)  # every thumbnail decoded (never upscaled)
