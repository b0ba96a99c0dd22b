"""An HTML page of search results: for each query, the query image and its best matches as
thumbnails with their rank, cosine similarity (and re-ranker's score) and path.

- Thumbnails are embedded (JPEG data URLs), so the page shows the pictures wherever it is
  opened; each one links to the original image by a relative URL computed from the page's
  own folder, so the links work when the page is opened from disk next to the collection
  (and when the page and the collection are moved together).
- Several queries share one page: one section each, in the order given, the query (outlined
  in red) first in the row of its matches.
- Paths wrap at their separators (``/``) first, and anywhere only when one name is longer
  than the column, so a long path never widens the page.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from pathlib import Path
from typing import Any, Sequence, Tuple
from urllib.parse import quote

__all__ = ["write_gallery", "THUMBNAIL"]

#: The longer side of a thumbnail, in pixels.
THUMBNAIL = 224

_STYLE = f"""
body{{font-family:sans-serif;margin:2em;overflow-wrap:anywhere}}
section{{margin-bottom:2.5em;border-top:1px solid #ccc}}
figure{{display:inline-block;margin:.5em;vertical-align:top;width:{THUMBNAIL}px}}
img{{max-width:{THUMBNAIL}px;max-height:{THUMBNAIL}px;display:block}}
figcaption{{font-size:.8em;overflow-wrap:anywhere}}
code{{overflow-wrap:anywhere}}
.q img{{outline:4px solid #c33}}
"""


def _thumbnail(image: Any) -> str:
    from PIL import Image

    from ..vision.images import load_image

    img = Image.fromarray(load_image(image))
    img.thumbnail((THUMBNAIL, THUMBNAIL))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _href(image: str, page_folder: Path) -> str:
    """A URL of ``image`` relative to the page's folder (an absolute ``file:`` URL when there
    is no relative path, e.g. another drive on Windows)."""
    target = Path(os.path.abspath(image))
    try:
        rel = os.path.relpath(target, page_folder)
    except ValueError:
        return target.as_uri()
    return quote(Path(rel).as_posix())


def _wrappable(path: str) -> str:
    """``path`` escaped for HTML, with a line-break opportunity after each separator."""
    return "<wbr>".join(html.escape(part) for part in re.split(r"(?<=[/\\])", path))


def _figure(image: str, caption: str, page_folder: Path, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return (
        f'<figure{klass}><a href="{html.escape(_href(image, page_folder))}">'
        f'<img src="{_thumbnail(image)}" alt="{html.escape(os.path.basename(image))}"></a>'
        f"<figcaption>{caption}<br><code>{_wrappable(str(image))}</code></figcaption></figure>"
    )


def _rerank_score(hit: Any) -> str:
    """`` · re-ranked 5.238`` when the hit carries a re-ranker's own score, else nothing."""
    own = getattr(hit, "rerank_score", None)
    return "" if own is None else f" &middot; re-ranked {own:.4g}"


def write_gallery(
    path: str, results: Sequence[Tuple[str, Sequence[Any]]], title: str = "heatsearch results"
) -> None:
    """Writes the page to ``path`` atomically.

    ``results``: one ``(query_path, hits)`` pair per query, where ``hits`` are objects with
    ``path``, ``score`` (shown as the cosine) and optionally ``rerank_score`` (shown when not
    None) and ``inliers`` (spatial verification, shown when not None)
    (:class:`heatsearch.app.index.SearchHit`), best first.
    """
    from .._atomic import atomic_write

    page_folder = Path(os.path.abspath(path)).parent
    sections = []
    for n, (query, hits) in enumerate(results, 1):
        cards = "".join(
            _figure(str(hit.path), f"#{rank} &middot; cosine {hit.score:.4f}{_rerank_score(hit)}" + _inliers(hit),
                    page_folder)
            for rank, hit in enumerate(hits, 1)
        )
        sections.append(
            f'<section class="query" id="q{n}"><h2>Query {n}: {html.escape(os.path.basename(str(query)))} '
            f"<small>(top {len(hits)})</small></h2>"
            f'{_figure(str(query), "query", page_folder, "q")}{cards}</section>'
        )
    page = (
        f'<!doctype html>\n<html><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(page)


def _inliers(hit: object) -> str:
    """`` · N inliers`` for a spatially verified hit, else nothing."""
    n = getattr(hit, "inliers", None)
    return "" if n is None else f" &middot; {int(n)} inliers"
