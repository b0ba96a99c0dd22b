"""``heatsearch serve``: an index behind an HTTP API (FastAPI, served by uvicorn).

:func:`create_app` makes the ASGI application of one index directory. Endpoints (JSON in and
out; every error is ``{"error": "..."}`` with a 4xx status, or 500 without a traceback):

==========================  =====================================================================
``POST /search``            one query: a multipart image upload (field ``file``) or JSON
                            ``{"descriptor": [...]}``; ``k`` (default 10, at most
                            :data:`MAX_K`), ``rerank`` (default "none"; any of
                            :data:`~heatsearch.app.index.SEARCH_RERANKERS`), ``bbox``
                            ("x1,y1,x2,y2", image queries) as query parameters, form fields or
                            JSON keys. Returns ``{"hits": [{row, path, score, rerank_score,
                            inliers}]}``, ``path`` relative to the index's root.
``POST /search/batch``      several queries: files (field ``file``, repeated) or JSON
                            ``{"descriptors": [[...], ...]}``; returns ``{"results": [hits...]}``.
``POST /images``            adds uploaded images (field ``file``, repeated; saved in the
                            :data:`UPLOAD_FOLDER` of the index's root under a name made of their
                            content's hash) or JSON ``{"paths": [...]}`` of files inside the root.
``DELETE /images``          JSON ``{"paths": [...]}`` (relative to the root) or ``{"rows": [...]}``.
``GET /images/{row}``       the original image file of an indexed row;
``GET /images/{row}/thumbnail``  a JPEG thumbnail of it (longer side :data:`THUMBNAIL_SIZE`).
``GET /health``             ``{"status": "ok", "images": n}`` (no token needed).
``GET /stats``              images, dimension, runtime, build settings, limits.
``GET /metrics``            Prometheus text format (:mod:`heatsearch.app._metrics`).
``GET /``                   a small search page (``static/index.html``; no token needed: it
                            holds no data, and asks for the token when the API needs one).
==========================  =====================================================================

Bad input is answered with 400 (a consistent status for every malformed or out-of-range
value: not an image, a truncated file, more pixels than ``max_pixels``, a wrong descriptor
length, a bad ``k``/``rerank``/``bbox``, a path outside the root), 401 without the token, 404
for a row or path that is not indexed, 409 for an image already indexed, 413 for a request
body over ``max_upload_bytes``.

Concurrency: searches run in parallel (the body is read on the event loop, the work runs in
Starlette's thread pool; :class:`~heatsearch.app.index.Index` is safe for concurrent reads).
A change (add, remove) never touches the index searches are using: it is made on a copy,
saved with the index's atomic save (:mod:`heatsearch.app.storage`), and the copy then replaces
the served index in one reference assignment, so a search sees the old or the new index, never
a half-updated one, and a ``kill -9`` at any moment leaves the old or the new index on disk.
Changes are serialised by a lock within a process and by ``flock`` on the index directory
across processes (``--workers``); each worker reloads the index when ``index.json`` changed.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations
# (``request: Request``, imported inside create_app) as objects.
import contextlib
import hashlib
import hmac
import io
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .. import _validate
from ..errors import HeatsearchError, ImageReadError, InvalidDTypeError, InvalidInputError, MissingDependencyError
from ..threads import limit_blas_threads
from ..vision.images import SUPPORTED_EXTENSIONS, pillow_message
from ._metrics import Metrics

__all__ = [
    "create_app",
    "app_from_environment",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MAX_K",
    "MAX_BATCH",
    "THUMBNAIL_SIZE",
    "UPLOAD_FOLDER",
    "TOKEN_ENV",
]

#: Largest request body (bytes) by default: 32 MiB holds a few camera photos; more is 413.
DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
#: Largest image (pixels) a request may hold: Pillow's own ``Image.MAX_IMAGE_PIXELS``
#: (89.5 million, about 0.25 GB decoded). Pillow itself only warns below twice that and
#: refuses above; a server refuses at the limit, from the header, before decoding.
DEFAULT_MAX_PIXELS = 89_478_485
#: Largest ``k`` (hits per query): bounds the response, whatever the index's size.
MAX_K = 1000
#: Most queries (or uploaded files) one request may hold.
MAX_BATCH = 64
#: Longer side (pixels) of ``GET /images/{row}/thumbnail`` (the ``search --html`` gallery's).
THUMBNAIL_SIZE = 224
#: Folder of the index's root where ``POST /images`` saves uploaded images.
UPLOAD_FOLDER = "uploads"
#: Environment variable holding the bearer token when ``--token`` is not given.
TOKEN_ENV = "HEATSEARCH_TOKEN"
#: Environment variable carrying :func:`create_app`'s arguments to uvicorn's worker processes.
_ENV_CONFIG = "HEATSEARCH_SERVE_CONFIG"
_PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "index.html")


class _BodyTooLarge(Exception):
    """A request body over the upload limit (answered 413)."""


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- the served index ----------------------------------------------------------------------
class _Served:
    """The index being served and the means to change it safely.

    :attr:`index` is replaced as a whole, never modified in place: a search takes the
    reference once (:meth:`current`) and works on that index to the end.
    """

    def __init__(self, path: str, extractor: Any, runtime: str, root: Optional[str]) -> None:
        self.path = os.path.abspath(path)
        self._extractor = extractor
        self._runtime = runtime
        self._root = root
        self._write = threading.Lock()
        self._reload = threading.Lock()
        self.index, self._stamp = self._load()

    def _pointer_stamp(self) -> Tuple[int, int]:
        from .storage import POINTER

        try:
            st = os.stat(os.path.join(self.path, POINTER))
        except OSError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def _load(self) -> Tuple[Any, Tuple[int, int]]:
        from .index import Index

        stamp = self._pointer_stamp()
        index = Index.load(self.path, extractor=self._extractor, runtime=self._runtime, root=self._root)
        if self._extractor is None:
            self._extractor = index._get_extractor()  # built once, shared by every reloaded index
        return index, stamp

    def current(self) -> Any:
        """The index, reloaded first if another process (a ``--workers`` sibling) saved a
        new version since (one ``stat`` per request)."""
        if self._pointer_stamp() != self._stamp:
            with self._reload:
                if self._pointer_stamp() != self._stamp:
                    self.index, self._stamp = self._load()
        return self.index

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One change at a time: in this process (a lock) and across processes (``flock`` on
        the index directory, where available)."""
        with self._write:
            try:
                import fcntl
            except ImportError:  # Windows: one process only
                yield
                return
            fd = os.open(self.path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock

    def change(self, edit: Callable[[Any], Any]) -> Any:
        """Applies ``edit(copy)`` to a copy of the latest index, saves the copy atomically and
        serves it; returns what ``edit`` returned. Nothing changes if ``edit`` raises."""
        with self._exclusive():
            latest = self.current()
            copy = latest.copy()  # shares the rows: copy-on-write
            copy.skipped = []
            result = edit(copy)
            copy.save(self.path)
            self.index, self._stamp = copy, self._pointer_stamp()
            return result


# -- request parsing -----------------------------------------------------------------------
@dataclass
class _Query:
    """A parsed search request: images (bytes) or descriptors, and the options."""

    items: List[Any]
    k: int
    rerank: Optional[str]
    bbox: Optional[List[float]]


def _options(query: Dict[str, str], body: Dict[str, Any]) -> Tuple[int, Optional[str], Optional[List[float]]]:
    """``k``, ``rerank`` and ``bbox`` from the query string and the body (form fields or JSON
    keys; the same option in both is refused)."""
    from .index import SEARCH_RERANKERS

    twice = sorted(set(query) & set(body) & {"k", "rerank", "bbox"})
    if twice:
        raise InvalidInputError(f"{twice[0]} is given both as a query parameter and in the body: give it once")
    merged = {**query, **body}
    k_value = merged.get("k", "10")
    if isinstance(k_value, bool) or not isinstance(k_value, (str, int)):
        raise InvalidInputError(f"k must be a whole number from 1 to {MAX_K}, got {k_value!r}")
    k = _validate.integer_text(str(k_value), "k", minimum=1, maximum=MAX_K)
    rerank = merged.get("rerank", "none")
    choices = ("none",) + tuple(r for r in SEARCH_RERANKERS if r is not None)
    if not isinstance(rerank, str) or rerank not in choices:
        raise InvalidInputError(f"rerank must be one of {', '.join(choices)}; got {rerank!r}")
    bbox = merged.get("bbox")
    if bbox is not None:
        if isinstance(bbox, list):
            bbox = ",".join(str(v) for v in bbox)
        if not isinstance(bbox, str):
            raise InvalidInputError(f"bbox must be 'x1,y1,x2,y2', got {bbox!r}")
        bbox = _validate.reals_text(bbox, "bbox", 4, "x1,y1,x2,y2")
        _validate.bbox(bbox)
    return k, (None if rerank == "none" else rerank), bbox


def _descriptor(value: Any, name: str) -> np.ndarray:
    """A JSON list of numbers as a float32 vector (its length is checked by the index)."""
    if not isinstance(value, list) or not value or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise InvalidInputError(f"{name} must be a non-empty list of numbers")
    arr = np.asarray(value, np.float64)
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{name} holds a value that is not a finite number")
    return arr.astype(np.float32)


def _check_image(data: bytes, name: str, max_pixels: int, *, decode: bool = False) -> None:
    """Refuses what is not an image, or an image of more than ``max_pixels`` pixels, from its
    header (nothing decoded); ``decode``: decode it all too (a truncated file fails here)."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - the serve extra brings Pillow's users
        raise MissingDependencyError("reading images needs Pillow: pip install 'heatsearch[onnx]'") from e
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns from its limit to twice it, then refuses: the size is checked here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError as e:
                raise ImageReadError(f"{name}: more than this server's limit of {max_pixels} pixels "
                                     f"({' '.join(str(e).split())})") from None
        with img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageReadError(
                    f"{name}: {w} x {h} = {w * h} pixels is more than this server's limit of "
                    f"{max_pixels} (a decompression bomb, or too large a photo: resize it)"
                )
            if decode:
                img.load()
    except ImageReadError:
        raise
    except Exception as e:  # Pillow's UnidentifiedImageError, truncation (OSError), bombs...
        raise ImageReadError(f"{name}: not a readable image ({pillow_message(e)})") from None


def _hits(index: Any, hits: Sequence[Any]) -> List[Dict[str, Any]]:
    root = index.root
    out = []
    for h in hits:
        path = h.path
        if root is not None:
            rel = os.path.relpath(path, root)
            path = rel.replace(os.sep, "/") if not rel.startswith("..") else path
        out.append({"row": h.row, "path": path, "score": h.score, "rerank_score": h.rerank_score,
                    "inliers": h.inliers})
    return out


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


# -- the application -----------------------------------------------------------------------
def create_app(
    index_path: str,
    *,
    token: Optional[str] = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    runtime: str = "auto",
    root: Optional[str] = None,
    extractor: Any = None,
    warmup: bool = False,
) -> Any:
    """The FastAPI application serving the index directory ``index_path``.

    Args:
        index_path: an index written by :meth:`heatsearch.app.index.Index.save` (loaded now,
            checked in full; changes are saved back to it).
        token: when given, every endpoint but ``/health`` and the page ``/`` needs the header
            ``Authorization: Bearer <token>`` (401 otherwise). Default None: no token.
        max_upload_bytes: largest request body, default :data:`DEFAULT_MAX_UPLOAD_BYTES`
            (larger: 413, before the body is read when it declares its length).
        max_pixels: largest image, width x height, default :data:`DEFAULT_MAX_PIXELS`
            (Pillow's decompression-bomb limit).
        runtime, root: as :meth:`heatsearch.app.index.Index.load`.
        extractor: the feature extractor (default: the index's, built at start-up).
        warmup: run one image through the network before serving (:meth:`Index.warmup`).

    Raises:
        IndexFileError / InvalidInputError: no index at ``index_path``, or a bad argument;
        MissingDependencyError: FastAPI is not installed.
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError as e:
        raise MissingDependencyError(f"the server needs FastAPI and uvicorn: pip install 'heatsearch[serve]' ({e})") from None

    _validate.integer(max_upload_bytes, "max_upload_bytes", minimum=1)
    _validate.integer(max_pixels, "max_pixels", minimum=1)
    if token is not None:
        _validate.text(token, "token")
        if not token.strip():
            raise InvalidInputError("token must not be empty")
    served = _Served(index_path, extractor, runtime, root)
    if warmup:
        served.index.warmup()
    metrics = Metrics()
    app = FastAPI(title="heatsearch", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    app.state.metrics = metrics

    def error(status: int, message: str) -> Any:
        return JSONResponse({"error": message}, status_code=status)

    # Statuses of the errors heatsearch raises on purpose; anything else is a bug: 500.
    @app.exception_handler(HeatsearchError)
    async def _heatsearch_error(request: Request, e: HeatsearchError) -> Any:
        message = " ".join(str(e).split())
        root = served.index.root
        if root:  # the client knows paths relative to the root only
            message = message.replace(os.path.join(root, ""), "")
        return error(503 if isinstance(e, MissingDependencyError) else 400, message)

    @app.exception_handler(_HTTPError)
    async def _http_error(request: Request, e: _HTTPError) -> Any:
        return error(e.status, e.message)

    @app.exception_handler(_BodyTooLarge)
    async def _too_large(request: Request, e: _BodyTooLarge) -> Any:
        return error(413, f"the request body is larger than this server's limit of {max_upload_bytes} bytes")

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, e: Any) -> Any:
        return error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: Any) -> Any:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> Any:
        # No traceback, no message (it may name server paths): the type says what to report.
        return error(500, f"internal error ({type(e).__name__}); the server log has the details")

    # -- middleware: body limit, token, metrics (pure ASGI, so it sees every response) -----
    def unauthorized(scope: Dict[str, Any]) -> bool:
        if token is None or scope["path"] in ("/", "/health"):
            return False
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, value = given.partition(" ")
        return not (scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()))

    inner = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        application = inner()

        async def guarded(scope: Dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await application(scope, receive, send)
                return
            started = time.perf_counter()
            status = [500]

            async def send_counted(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            async def reply(code: int, message: str, extra: Sequence[Tuple[bytes, bytes]] = ()) -> None:
                body = json.dumps({"error": message}).encode()
                await send_counted({"type": "http.response.start", "status": code, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
                await send_counted({"type": "http.response.body", "body": body})

            try:
                if unauthorized(scope):
                    await reply(401, "this server needs a token: send the header 'Authorization: Bearer <token>'",
                                [(b"www-authenticate", b"Bearer")])
                    return
                headers = dict(scope.get("headers") or [])
                declared = headers.get(b"content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_upload_bytes:
                    await reply(413, f"the request body ({int(declared)} bytes) is larger than this "
                                     f"server's limit of {max_upload_bytes} bytes")
                    return
                seen = [0]

                async def receive_limited() -> Dict[str, Any]:
                    message = await receive()
                    if message["type"] == "http.request":
                        seen[0] += len(message.get("body", b""))
                        if seen[0] > max_upload_bytes:
                            raise _BodyTooLarge()
                    return message

                await application(scope, receive_limited, send_counted)
            finally:
                route = scope.get("route")
                name = getattr(route, "path", None) or "(no route)"
                metrics.request(scope["method"], name, status[0], time.perf_counter() - started)

        return guarded

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]

    # -- body reading ----------------------------------------------------------------------
    async def read_body(request: Request) -> Tuple[Dict[str, Any], List[Tuple[str, bytes]]]:
        """The request's fields (JSON keys or form fields) and uploaded files ``(name, data)``."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else {}
            except ValueError as e:
                raise InvalidInputError(f"the body is not valid JSON ({e})") from None
            if not isinstance(body, dict):
                raise InvalidInputError("the JSON body must be an object, e.g. {\"descriptor\": [...]}")
            return body, []
        if kind == "multipart/form-data":
            try:
                form = await request.form(max_files=MAX_BATCH, max_fields=MAX_BATCH)
            except _BodyTooLarge:
                raise
            except Exception as e:  # malformed multipart, too many parts
                detail = getattr(e, "detail", None) or str(e)
                raise InvalidInputError(f"cannot read the multipart body: {detail}") from None
            fields: Dict[str, Any] = {}
            files: List[Tuple[str, bytes]] = []
            for key, value in form.multi_items():
                if not isinstance(value, str):  # an UploadFile
                    if key != "file":
                        raise InvalidInputError(f"upload images in the field 'file', got a file in {key!r}")
                    files.append((value.filename or "upload", await value.read()))
                elif key in fields:
                    raise InvalidInputError(f"the form field {key!r} is given twice")
                else:
                    fields[key] = value
            await form.close()
            return fields, files
        if kind == "" and not int(request.headers.get("content-length", "0") or 0):
            return {}, []
        raise _HTTPError(415, f"send multipart/form-data (images in the field 'file') or application/json, "
                              f"got {kind or 'no content type'!r}")

    def search_request(fields: Dict[str, Any], files: List[Tuple[str, bytes]], query: Dict[str, str],
                       key: str, many: bool) -> _Query:
        known = {"k", "rerank", "bbox", key}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise InvalidInputError(f"unknown field {unknown[0]!r} (expected {', '.join(sorted(known))})")
        k, rerank, bbox = _options(query, {n: v for n, v in fields.items() if n != key})
        if files and key in fields:
            raise InvalidInputError(f"send images or {key}, not both")
        if files:
            if not many and len(files) != 1:
                raise InvalidInputError(f"/search takes one image (got {len(files)}): use /search/batch")
            for name, data in files:
                _check_image(data, name, max_pixels)
            return _Query([data for _, data in files], k, rerank, bbox)
        if key not in fields:
            raise InvalidInputError(f"send an image (multipart field 'file') or JSON {{\"{key}\": [...]}}")
        if not many:
            return _Query([_descriptor(fields[key], key)], k, rerank, bbox)
        rows = fields[key]
        if not isinstance(rows, list) or not rows:
            raise InvalidInputError(f"{key} must be a non-empty list of descriptors")
        if len(rows) > MAX_BATCH:
            raise InvalidInputError(f"{key}: at most {MAX_BATCH} queries per request, got {len(rows)}")
        return _Query([_descriptor(r, f"{key}[{i}]") for i, r in enumerate(rows)], k, rerank, bbox)

    def run_search(q: _Query, many: bool) -> Any:
        from ..vision.spatial import split_rerank

        index = served.current()
        _, spatial = split_rerank(q.rerank)
        items = list(q.items)
        # A bbox goes with the descriptors that were JSON (the index refuses it there).
        boxes = [q.bbox if spatial or not isinstance(item, bytes) else None for item in items]
        if not spatial:
            # Image queries described here, one by one, to time the extraction (decoding,
            # the network, pooling); the search then takes the descriptors.
            for i, item in enumerate(items):
                if isinstance(item, bytes):
                    t = time.perf_counter()
                    try:
                        items[i] = index.describe(item, bbox=q.bbox)
                    except HeatsearchError as e:
                        raise type(e)(f"queries[{i}]: {e}" if many else str(e)) from None
                    metrics.extraction(time.perf_counter() - t)
        if many:
            with _no_warnings():
                return [_hits(index, h) for h in index.search_many(items, q.k, rerank=q.rerank, bboxes=boxes)]
        with _no_warnings():
            return _hits(index, index.search(items[0], q.k, rerank=q.rerank, bbox=boxes[0]))

    # -- endpoints -------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page() -> Any:
        with open(_PAGE, encoding="utf-8") as f:
            return HTMLResponse(f.read())

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok", "images": len(served.current())}

    @app.post("/search")
    async def search(request: Request) -> Any:
        fields, files = await read_body(request)
        q = search_request(fields, files, dict(request.query_params), "descriptor", many=False)
        return {"hits": await run_in_threadpool(run_search, q, False)}

    @app.post("/search/batch")
    async def search_batch(request: Request) -> Any:
        fields, files = await read_body(request)
        q = search_request(fields, files, dict(request.query_params), "descriptors", many=True)
        return {"results": await run_in_threadpool(run_search, q, True)}

    @app.post("/images")
    async def add_images(request: Request) -> Any:
        fields, files = await read_body(request)
        unknown = sorted(set(fields) - {"paths"})
        if unknown:
            raise InvalidInputError(f"unknown field {unknown[0]!r} (expected 'paths', or images in 'file')")
        if files and fields:
            raise InvalidInputError("send images or {\"paths\": [...]}, not both")
        if files:
            return await run_in_threadpool(add_uploads, files)
        if "paths" not in fields:
            raise InvalidInputError("send images (multipart field 'file') or JSON {\"paths\": [...]}")
        return await run_in_threadpool(add_paths, fields["paths"])

    def index_root() -> str:
        root = served.current().root
        if root is None:
            raise _HTTPError(409, "the index records no collection folder (an index of heatsearch 0.1/0.2): "
                                  "save it again with a root to add images")
        return os.path.realpath(root)

    def add_uploads(files: List[Tuple[str, bytes]]) -> Any:
        root = index_root()
        folder = os.path.join(root, UPLOAD_FOLDER)
        targets = []
        for name, data in files:
            _check_image(data, name, max_pixels, decode=True)
            ext = os.path.splitext(name)[1].lower()
            ext = ext if ext in SUPPORTED_EXTENSIONS else _format_extension(data)
            targets.append((os.path.join(folder, hashlib.sha256(data).hexdigest()[:32] + ext), data))
        if len({t for t, _ in targets}) != len(targets):
            raise InvalidInputError("the same image is uploaded twice")
        written: List[str] = []
        try:
            for target, data in targets:
                if not os.path.exists(target):
                    from .._atomic import atomic_write

                    os.makedirs(folder, exist_ok=True)
                    with atomic_write(target) as f:
                        f.write(data)
                    written.append(target)
            return add([t for t, _ in targets], root)
        except BaseException:
            for target in written:  # files of an add that did not happen
                with contextlib.suppress(OSError):
                    os.remove(target)
            raise

    def add_paths(paths: Any) -> Any:
        root = index_root()
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
            raise InvalidInputError("paths must be a non-empty list of file paths (relative to the index's root)")
        out = []
        for p in paths:
            full = os.path.realpath(os.path.join(root, p))
            if not _inside(full, root):
                raise InvalidInputError(f"{p!r} is outside the index's collection folder")
            if not os.path.isfile(full):
                raise _HTTPError(404, f"{p!r}: no such file in the index's collection folder")
            out.append(full)
        return add(out, root)

    def add(paths: List[str], root: str) -> Any:
        def edit(index: Any) -> Any:
            known = set(index.paths)
            already = [p for p in paths if p in known]
            if already:
                raise _HTTPError(409, f"already in the index: {os.path.relpath(already[0], root)}")
            with _no_warnings():
                skipped = index.add(paths)
            if skipped:
                why = " ".join(skipped[0][1].split())
                raise InvalidInputError(f"{os.path.relpath(skipped[0][0], root)}: {why}")
            return index

        index = served.change(edit)
        rows = {p: i for i, p in enumerate(index.paths)}
        return {"added": [{"row": rows[p], "path": os.path.relpath(p, root).replace(os.sep, "/")} for p in paths],
                "images": len(index)}

    @app.delete("/images")
    async def remove_images(request: Request) -> Any:
        fields, files = await read_body(request)
        if files:
            raise InvalidInputError("DELETE /images takes JSON {\"paths\": [...]} or {\"rows\": [...]}")
        if sorted(fields) not in (["paths"], ["rows"]):
            raise InvalidInputError("send JSON {\"paths\": [...]} or {\"rows\": [...]} (one of them)")
        return await run_in_threadpool(remove, fields)

    def remove(fields: Dict[str, Any]) -> Any:
        def edit(index: Any) -> Any:
            if "rows" in fields:
                rows = fields["rows"]
                if not isinstance(rows, list) or not rows or not all(
                        isinstance(r, int) and not isinstance(r, bool) for r in rows):
                    raise InvalidInputError("rows must be a non-empty list of whole numbers")
                bad = [r for r in rows if not 0 <= r < len(index)]
                if bad:
                    raise _HTTPError(404, f"row {bad[0]} is not in the index (it holds rows 0 to {len(index) - 1})")
                drop = [index.paths[r] for r in rows]
            else:
                paths = fields["paths"]
                if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
                    raise InvalidInputError("paths must be a non-empty list of paths (relative to the index's root)")
                base = index.root or os.getcwd()
                drop = [os.path.normpath(os.path.join(base, p)) for p in paths]
                known = set(index.paths)
                missing = [p for p, full in zip(paths, drop) if full not in known]
                if missing:
                    raise _HTTPError(404, f"{missing[0]!r} is not in the index")
            removed = index.remove(list(dict.fromkeys(drop)))
            return removed

        removed = served.change(edit)
        return {"removed": removed, "images": len(served.index)}

    def row_path(row: int) -> str:
        index = served.current()
        if not 0 <= row < len(index):
            raise _HTTPError(404, f"row {row} is not in the index (it holds {len(index)} images)")
        path = index.paths[row]
        if not os.path.isfile(path):
            raise _HTTPError(404, f"the image file of row {row} is missing")
        return path

    @app.get("/images/{row}")
    def original(row: int) -> Any:
        import mimetypes

        path = row_path(row)
        return FileResponse(path, media_type=mimetypes.guess_type(path)[0] or "application/octet-stream")

    @app.get("/images/{row}/thumbnail")
    def thumbnail(row: int) -> Any:
        from PIL import Image

        path = row_path(row)
        try:
            with Image.open(path) as img:
                if img.size[0] * img.size[1] > max_pixels:
                    raise _HTTPError(422, f"the image of row {row} is larger than {max_pixels} pixels")
                img.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))  # JPEG: decode at a lower scale
                rgb = img.convert("RGB")
                rgb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
                out = io.BytesIO()
                rgb.save(out, "JPEG", quality=85)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise _HTTPError(422, f"the image of row {row} cannot be read ({' '.join(str(e).split())})") from None
        return Response(out.getvalue(), media_type="image/jpeg")

    @app.get("/stats")
    def stats() -> Any:
        index = served.current()
        dim = index.dim if len(index) else 0
        ext = index.extractor
        return {
            "images": len(index),
            "dimension": dim,
            "runtime": getattr(ext, "runtime", None) or index.runtime,
            "build": index.config.to_dict(),
            "whitening": None if index.whitening is None else {
                "learned": bool(index.whitening_learned), "images": index.whitening_images,
                "dimension": int(index.whitening.dim_)},
            "root": index.root,
            "limits": {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "max_k": MAX_K,
                       "max_batch": MAX_BATCH},
        }

    @app.get("/metrics")
    def metrics_text() -> Any:
        return PlainTextResponse(metrics.text(images=len(served.current())),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


@contextlib.contextmanager
def _no_warnings() -> Iterator[None]:
    """Warnings of one request (a re-ranker that cannot help this index, ...) are the
    client's business, not the server log's: dropped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _format_extension(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        fmt = (img.format or "").lower()
    ext = {"jpeg": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}")
    if ext not in SUPPORTED_EXTENSIONS:
        raise ImageReadError(f"{fmt or 'this'} images cannot be indexed (expected one of {', '.join(SUPPORTED_EXTENSIONS)})")
    return ext


def environment_config(**kwargs: Any) -> Dict[str, str]:
    """The environment that makes :func:`app_from_environment` call ``create_app(**kwargs)``
    (how ``heatsearch serve --workers N`` hands its arguments to uvicorn's processes)."""
    return {_ENV_CONFIG: json.dumps(kwargs)}


def app_from_environment() -> Any:
    """``create_app`` with the arguments of :func:`environment_config` (uvicorn's ``factory``)."""
    raw = os.environ.get(_ENV_CONFIG)
    if not raw:
        raise InvalidInputError(f"{_ENV_CONFIG} is not set: start the server with `heatsearch serve INDEX`")
    try:
        kwargs = json.loads(raw)
    except ValueError as e:
        raise InvalidDTypeError(f"{_ENV_CONFIG} is not JSON ({e})") from None
    # A worker process of `heatsearch serve --workers N`: as its single-process mode does,
    # NumPy's BLAS threads are capped so that they do not spin on the network's cores.
    limit_blas_threads(1)
    return create_app(**kwargs)
