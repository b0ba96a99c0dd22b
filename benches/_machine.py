"""What the machine was doing during a benchmark, recorded beside its numbers."""

from __future__ import annotations


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages of ``/proc/loadavg`` ("n/a" where there is none):
    on a machine of 2 cores, a load above 2 means the benchmark shared them."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"
