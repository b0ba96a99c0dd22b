"""The server's Prometheus metrics, written in the text exposition format by hand.

prometheus_client is not a dependency: three metric families do not need it, and the text
format is simple and stable (https://prometheus.io/docs/instrumenting/exposition_formats/).

* ``heatsearch_requests_total{method, endpoint, status}``: counter of requests (``endpoint``:
  the route's template, e.g. ``/images/{row}/thumbnail``, so rows do not make new series;
  ``(no route)`` for unknown paths).
* ``heatsearch_request_duration_seconds{endpoint}``: histogram of request latency.
* ``heatsearch_extraction_duration_seconds``: histogram of a query image's description
  (decoding, the network, pooling, post-processing).
* ``heatsearch_images``: gauge, the images in the index.
"""

from __future__ import annotations

import bisect
import threading
from typing import Dict, List, Tuple

#: Histogram bucket upper bounds (seconds): 1 ms to 30 s, covering a descriptor query on a
#: small index (about 1 ms) to a large image re-ranked spatially (seconds).
BUCKETS: Tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last: above every bound (+Inf only)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def lines(self, name: str, labels: str) -> List[str]:
        out, total = [], 0
        sep = "," if labels else ""
        for bound, n in zip(BUCKETS, self.counts):
            total += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {total}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {self.sum:.6f}")
        out.append(f"{name}_count{braces} {self.count}")
        return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters and histograms of one server process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Dict[Tuple[str, str, int], int] = {}
        self._latency: Dict[str, _Histogram] = {}
        self._extraction = _Histogram()

    def request(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, endpoint, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            self._latency.setdefault(endpoint, _Histogram()).observe(seconds)

    def extraction(self, seconds: float) -> None:
        with self._lock:
            self._extraction.observe(seconds)

    def text(self, *, images: int) -> str:
        """The exposition text (version 0.0.4), ending with a newline."""
        with self._lock:
            lines = ["# HELP heatsearch_requests_total HTTP requests by method, endpoint and status.",
                     "# TYPE heatsearch_requests_total counter"]
            for (method, endpoint, status), n in sorted(self._requests.items()):
                lines.append(f'heatsearch_requests_total{{method="{_label(method)}",endpoint="{_label(endpoint)}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP heatsearch_request_duration_seconds Request latency by endpoint.",
                      "# TYPE heatsearch_request_duration_seconds histogram"]
            for endpoint, h in sorted(self._latency.items()):
                lines += h.lines("heatsearch_request_duration_seconds", f'endpoint="{_label(endpoint)}"')
            lines += ["# HELP heatsearch_extraction_duration_seconds Description of a query image: decoding, "
                      "network, pooling.",
                      "# TYPE heatsearch_extraction_duration_seconds histogram"]
            lines += self._extraction.lines("heatsearch_extraction_duration_seconds", "")
            lines += ["# HELP heatsearch_images Images in the served index.", "# TYPE heatsearch_images gauge",
                      f"heatsearch_images {images}"]
        return "\n".join(lines) + "\n"
