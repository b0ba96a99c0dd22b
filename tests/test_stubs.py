"""The hand-written stubs of the extension (`_core.pyi`) match it (mypy.stubtest)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_core_stubs_match_the_extension():
    pytest.importorskip("mypy", reason="mypy is part of the test extra")
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "heatsearch._core"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
