"""Which process writes an index version, and whether that process is still running.

A save writes the new version of an index into a directory of its own inside the index
(:mod:`heatsearch.app.storage`). The directory's NAME says who creates it::

    data-<pid>-<start>-<boot>-<host>-<random>

``pid``: the writing process; ``start``: when it started (Linux: clock ticks after boot, field
22 of ``/proc/<pid>/stat``; 0 where unknown), so that a new process that got the same pid is
not taken for the writer; ``boot``: 8 hex digits of the kernel's boot id (a reboot ends every
writer; ``00000000`` where unknown); ``host``: 8 hex digits of a hash of the host name (an index
on a shared file system may be written from another machine, whose processes cannot be seen
from here); ``random``: 8 hex digits, so that two saves of one process never collide.

The identity is in the name, not in a file inside, because ``mkdir`` is atomic: there is no
moment at which a writer's directory exists without saying whose it is. (Each version also
holds a readable ``writer.json`` with the host name, pid and time, for people.)

A writer is taken for GONE only when that is certain: same host and boot, and no process with
its pid, or one that started at another time; or same host and another boot. Anything unsure
(another host, Windows, a pid that exists but whose start time cannot be read) counts as
running, so its directory is kept: a leftover stays a little longer rather than a live save
being destroyed.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Optional, Set

__all__ = ["Writer", "me", "new_name", "parse", "begin", "end", "in_progress"]

#: Directory names of index versions (see the module docstring).
NAME = re.compile(
    r"^data-(?P<pid>[0-9]{1,10})-(?P<start>[0-9]{1,20})-(?P<boot>[0-9a-f]{8})"
    r"-(?P<host>[0-9a-f]{8})-[0-9a-f]{8}$"
)
_UNKNOWN_BOOT = "0" * 8


@dataclass(frozen=True)
class Writer:
    """A process, as recorded in a version's directory name."""

    pid: int
    start: int
    boot: str
    host: str

    def running(self) -> bool:
        """False only when this process has certainly ended (see the module docstring)."""
        here = me()
        if self.host != here.host or os.name == "nt":
            # Another machine's processes cannot be seen; on Windows os.kill(pid, 0) would
            # send CTRL_C_EVENT instead of testing the pid.
            return True
        if self.boot != _UNKNOWN_BOOT and here.boot != _UNKNOWN_BOOT and self.boot != here.boot:
            return False  # written before the last reboot
        if self == here:
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by another user
        except OSError:
            return True
        if self.start == 0:
            return True  # no start time recorded: the pid alone cannot tell a reuse
        started = _start_time(self.pid)
        return started is None or started == self.start


def me() -> Writer:
    """The current process."""
    pid = os.getpid()
    cached = _ME.get(pid)
    if cached is None:  # computed once per process (and again in a forked child)
        cached = Writer(pid, _start_time(pid) or 0, _boot_id(), _host_hash())
        _ME.clear()
        _ME[pid] = cached
    return cached


def new_name() -> str:
    """A fresh version directory name for the current process."""
    w = me()
    return f"data-{w.pid}-{w.start}-{w.boot}-{w.host}-{secrets.token_hex(4)}"


def parse(name: str) -> Optional[Writer]:
    """The writer of a version directory ``name``; None if it is not such a name."""
    m = NAME.match(name)
    if m is None:
        return None
    return Writer(int(m["pid"]), int(m["start"]), m["boot"], m["host"])


# -- the saves in progress in this process --------------------------------------------------
# A version this process wrote is still needed while its save runs (it becomes the current
# version at the end); once the save is over, a version of this process that is not the
# current one is a leftover like any other (e.g. after two saves raced).
_LOCK = threading.Lock()
_IN_PROGRESS: Set[str] = set()
_ME: dict = {}


def begin(path: str) -> None:
    """Marks the version directory ``path`` (absolute) as being written by this process."""
    with _LOCK:
        _IN_PROGRESS.add(path)


def end(path: str) -> None:
    """The save that wrote ``path`` is over (switched in, or abandoned)."""
    with _LOCK:
        _IN_PROGRESS.discard(path)


def in_progress(path: str) -> bool:
    """Whether a save of this process is writing ``path`` (absolute) right now."""
    with _LOCK:
        return path in _IN_PROGRESS


def _start_time(pid: int) -> Optional[int]:
    """Start time of ``pid`` in clock ticks after boot (Linux), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        # The command name (field 2) is in parentheses and may hold spaces or parentheses
        # itself: fields are counted after the last ')'. starttime is field 22.
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            digits = re.sub(r"[^0-9a-f]", "", f.read().lower())
        return digits[:8] if len(digits) >= 8 else _UNKNOWN_BOOT
    except OSError:
        return _UNKNOWN_BOOT


def _host_hash() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
