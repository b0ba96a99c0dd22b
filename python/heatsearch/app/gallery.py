"""A self-contained HTML page of search results: the query and its best matches as
thumbnails (embedded, so the page can be mailed or opened anywhere), with scores."""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Sequence

__all__ = ["write_gallery"]

THUMBNAIL = 224


def _thumbnail(image: Any) -> str:
    from PIL import Image

    from ..vision.images import load_image

    img = Image.fromarray(load_image(image))
    img.thumbnail((THUMBNAIL, THUMBNAIL))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_gallery(path: str, query: Any, hits: Sequence[Any], title: str = "heatsearch results") -> None:
    """Writes the page atomically. ``hits``: objects with ``path`` and ``score``
    (:class:`heatsearch.app.index.SearchHit`)."""
    from .._atomic import atomic_write

    cards = []
    for rank, hit in enumerate(hits, 1):
        cards.append(
            f'<figure><img src="{_thumbnail(hit.path)}" alt=""><figcaption>#{rank} &middot; '
            f"{hit.score:.4f}<br><code>{html.escape(str(hit.path))}</code></figcaption></figure>"
        )
    query_name = html.escape(str(query)) if isinstance(query, str) else "query"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} figure{{display:inline-block;margin:.5em;vertical-align:top;width:{THUMBNAIL}px}}
img{{max-width:{THUMBNAIL}px;max-height:{THUMBNAIL}px}} figcaption{{font-size:.8em;word-break:break-all}} .q img{{outline:4px solid #c33}}</style>
</head><body><h1>{html.escape(title)}</h1>
<h2>Query</h2><figure class="q"><img src="{_thumbnail(query)}" alt=""><figcaption><code>{query_name}</code></figcaption></figure>
<h2>Top {len(hits)}</h2>
{''.join(cards)}
</body></html>
"""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(page)
