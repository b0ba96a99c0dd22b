"""The application layer: a persistent image index and the ``heatsearch`` command line.

* :mod:`~heatsearch.app.index`: :class:`Index` (extract, pool, post-process, search, re-rank).
* :mod:`~heatsearch.app.storage`: the index's atomic on-disk format.
* :mod:`~heatsearch.app.cli`: the ``heatsearch`` command; :mod:`~heatsearch.app.demo` (the
  offline copy-detection benchmark), :mod:`~heatsearch.app.gallery` (HTML results) and
  :mod:`~heatsearch.app.explain` (HeW's weights drawn over an image) serve it.
* :mod:`~heatsearch.app.server`: ``heatsearch serve``, an index behind an HTTP API and a page
  (FastAPI; imported only by that command).
"""

from .index import Index, IndexConfig, SearchHit, find_images

__all__ = ["Index", "IndexConfig", "SearchHit", "find_images"]
