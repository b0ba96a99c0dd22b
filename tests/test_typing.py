"""The package is typed: the hand-written stubs of the extension (`_core.pyi`) match it
(mypy.stubtest), and mypy finds no error in the Python package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import heatsearch

PACKAGE = Path(heatsearch.__file__).resolve().parent


def mypy(*args: str) -> subprocess.CompletedProcess:
    pytest.importorskip("mypy", reason="mypy is part of the test extra")
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=600,
        cwd=PACKAGE.parent,
    )


def test_core_stubs_match_the_extension():
    out = mypy("mypy.stubtest", "heatsearch._core")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_package_type_checks():
    out = mypy("mypy", "--no-incremental", "-p", "heatsearch")
    assert out.returncode == 0, out.stdout + out.stderr
