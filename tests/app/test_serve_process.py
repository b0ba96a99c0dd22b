"""`heatsearch serve` as a real server process on 127.0.0.1 (a free port): the command's
argument checks, the command serving an index (token, descriptor search), and a ``kill -9``
during an add: after a restart the index loads and holds the old or the new set of images,
never a mixture or a broken index.

Every wait is bounded in count and time; servers bind 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server needs the 'serve' extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("uvicorn", reason="the server needs the 'serve' extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("PIL.Image")

from helpers import PixelMaps, write_images  # noqa: E402

from heatsearch.app.cli import main  # noqa: E402
from heatsearch.app.index import Index, IndexConfig  # noqa: E402

TESTS = Path(__file__).resolve().parent.parent
PYTHONPATH = os.pathsep.join([str(Path(__import__("heatsearch").__file__).parent.parent), str(TESTS)])
#: Longest wait for a server to answer /health (seconds), polled every POLL seconds.
START_TIMEOUT = 120
POLL = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(root: Path, n: int = 6) -> Path:
    write_images(root, [f"photos/img{i:02d}.png" for i in range(n)], size=32)
    index = Index.build(root / "photos", IndexConfig(scales=(1.0,), whiten="none"), extractor=PixelMaps())
    index.root = str(root)
    index.save(root / "my.index")
    return root / "my.index"


def call(port: int, method: str, path: str, body=None, token=None, timeout: float = 60):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_until_up(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    for _ in range(int(START_TIMEOUT / POLL)):
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if call(port, "GET", "/health", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(POLL)
    proc.kill()
    pytest.fail(f"the server did not answer within {START_TIMEOUT} s")


def start(args, port: int, env=None) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": PYTHONPATH, **(env or {})}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment)
    wait_until_up(proc, port)
    return proc


# -- the command's checks (no server started) ----------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--host", "0.0.0.0"], "--token"),
    (["--host", "example.org"], "--token"),
    (["--port", "70000"], "--port must be a whole number from 0 to 65535"),
    (["--workers", "0"], "--workers must be a whole number from 1"),
    (["--max-upload-mb", "-1"], "--max-upload-mb"),
    (["--token", " "], "--token must not be empty"),
])
def test_serve_checks_its_arguments(tmp_path, capsys, extra, message):
    path = build(tmp_path)
    assert main(["serve", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("heatsearch serve: error:") and message in err and len(err.strip().splitlines()) == 1


def test_serve_needs_an_index(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "none")]) == 2
    assert "heatsearch serve: error:" in capsys.readouterr().err


# -- the command, serving ------------------------------------------------------------------
def test_the_command_serves_an_index_with_a_token(tmp_path):
    from helpers import skip_without_extraction

    skip_without_extraction()  # the command builds the index's real extractor
    path = build(tmp_path)
    d = np.asarray(Index.load(path).descriptors)[2].tolist()
    port = free_port()
    proc = start([sys.executable, "-m", "heatsearch", "serve", str(path), "--port", str(port), "--no-warmup",
                  "--quiet"], port, env={"HEATSEARCH_TOKEN": "t0ken"})
    try:
        assert call(port, "GET", "/stats")[0] == 401
        status, body = call(port, "POST", "/search", {"descriptor": d, "k": 2, "rerank": "none"}, token="t0ken")
        assert status == 200 and body["hits"][0]["path"] == "photos/img02.png"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_workers_see_each_others_changes(tmp_path):
    """With --workers 2, a removal made by whichever worker takes it is saved, and every
    later answer (from either worker: each reloads the index when index.json changed) shows
    it."""
    from helpers import skip_without_extraction

    skip_without_extraction()  # each worker builds the index's real extractor
    path = build(tmp_path)
    port = free_port()
    proc = start([sys.executable, "-m", "heatsearch", "serve", str(path), "--port", str(port), "--workers", "2",
                  "--no-warmup", "--quiet"], port)
    try:
        for n in (5, 4, 3):
            assert call(port, "DELETE", "/images", {"rows": [0]}) == (200, {"removed": 1, "images": n})
            assert {call(port, "GET", "/health")[1]["images"] for _ in range(8)} == {n}
        assert len(Index.load(path)) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


# -- kill -9 during an add -----------------------------------------------------------------
LAUNCHER = textwrap.dedent("""
    import sys
    import uvicorn
    from helpers import PixelMaps
    from heatsearch.app.server import create_app

    index, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    uvicorn.run(create_app(index, extractor=PixelMaps(delay=delay)), host="127.0.0.1", port=port,
                log_level="warning")
""")


@pytest.mark.parametrize("wait", [0.05, 0.3, 0.6])
def test_kill_9_during_an_add_leaves_the_old_or_the_new_index(tmp_path, wait):
    """The add extracts 6 images at 0.1 s each, then saves: killed ``wait`` seconds in
    (during the extraction, or around the save), the index on disk is complete either way."""
    path = build(tmp_path)
    old = set(Index.load(path).paths)
    new = write_images(tmp_path, [f"more/new{i}.png" for i in range(6)], size=32, seed=11)
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    port = free_port()
    proc = start([sys.executable, str(launcher), str(path), str(port), "0.1"], port)
    answers = []

    def add() -> None:
        try:
            answers.append(call(port, "POST", "/images", {"paths": [os.path.relpath(p, tmp_path) for p in new]}))
        except OSError as e:  # the server died mid-request
            answers.append(e)

    adder = threading.Thread(target=add)
    adder.start()
    try:
        time.sleep(wait)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        adder.join(timeout=60)
    after = set(Index.load(path).paths)  # loads: complete and consistent
    assert after in (old, old | set(new)), sorted(after - old)
    if answers and isinstance(answers[0], tuple) and answers[0][0] == 200:
        assert after == old | set(new)  # the client was told it was added: it is on disk
    # Restarted, the server serves what is on disk, and takes the add again.
    port = free_port()
    proc = start([sys.executable, str(launcher), str(path), str(port), "0"], port)
    try:
        assert call(port, "GET", "/health")[1]["images"] == len(after)
        if after == old:
            status, body = call(port, "POST", "/images", {"paths": [os.path.relpath(p, tmp_path) for p in new]})
            assert status == 200 and body["images"] == len(old) + len(new)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
