"""Atomic file writes: a file is either the complete old version or the complete new one.

Every heatsearch module that saves something (whitening, descriptors, indexes, ...) writes
through :func:`atomic_write`, so a crash, a full disk or an exception half-way through a save
never destroys or truncates the file a user already had::

    from heatsearch._atomic import atomic_write

    with atomic_write(path) as f:      # binary by default
        np.savez(f, a=a, b=b)          # anything that writes to a file object

How: the data goes to a new temporary file in the SAME directory as ``path`` (``os.replace``
is only atomic within one file system), which is flushed and ``fsync``-ed, then renamed over
``path`` with ``os.replace`` (atomic on POSIX and Windows); the directory is then fsync-ed too
(POSIX) so the rename itself survives a power cut. On any exception, the temporary file is
removed and the exception propagates; ``path`` is untouched.

Details a caller may care about:

- ``path`` is used exactly as given (no suffix is appended, unlike ``np.savez(str_path)``).
- An existing file's permission bits are carried over to the new file; a new file gets the
  usual ``0o666 & ~umask``. Ownership, ACLs and hard links are not preserved (the new file is
  a new inode), and a symlink at ``path`` is replaced by a regular file.
- The temporary file is hidden (``.<name>.<random>.tmp``); a process killed by SIGKILL may
  leave one behind, never a damaged ``path``.
- Do not close the yielded file yourself: the context manager flushes, syncs and closes it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from typing import IO, Any, Iterator, Optional, Union

from .errors import InvalidInputError

__all__ = ["atomic_write"]

_WRITE_MODES = {"w": False, "wt": False, "tw": False, "wb": True, "bw": True}
_MAX_NAME_TRIES = 100


@contextlib.contextmanager
def atomic_write(
    path: Union[str, "os.PathLike[str]"],
    mode: str = "wb",
    *,
    encoding: Optional[str] = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file to write ``path``'s new content; replace ``path`` on success.

    Args:
        path: the file to (re)write. Its directory must exist.
        mode: ``"wb"`` (default, binary) or ``"w"`` / ``"wt"`` (text). Appending or reading
            modes make no sense for a whole-file replacement and raise InvalidInputError.
        encoding: text mode only; default ``"utf-8"`` (never the locale's encoding, so a file
            reads back the same on every machine).

    Yields:
        The open temporary file object.

    Raises:
        InvalidInputError: an unsupported ``mode``, or ``encoding`` with a binary mode.
        OSError: from creating, writing, syncing or renaming the file (``path`` is then left
            as it was and the temporary file is removed). Any exception raised inside the
            ``with`` block propagates after the same clean-up.
    """
    if mode not in _WRITE_MODES:
        raise InvalidInputError(
            f"atomic_write mode must be one of {sorted(_WRITE_MODES)}, got {mode!r}"
        )
    binary = _WRITE_MODES[mode]
    if binary and encoding is not None:
        raise InvalidInputError(f"encoding is for text modes only, got mode {mode!r}")
    if not binary and encoding is None:
        encoding = "utf-8"

    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = _create_temp(directory, os.path.basename(target))
    try:
        try:
            f = os.fdopen(fd, mode, encoding=encoding)
        except BaseException:
            os.close(fd)
            raise
        with f:
            _copy_permissions(target, fd)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        # Also on GeneratorExit / KeyboardInterrupt: never leave a half-written temp behind.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _create_temp(directory: str, name: str) -> tuple[int, str]:
    """Create a new, empty, uniquely named file beside the target; return (fd, path).

    ``os.open`` with mode 0o666 (not ``tempfile.mkstemp``'s 0o600) so the umask decides the
    permissions of a new file exactly as for ``open(path, "w")``.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_MAX_NAME_TRIES):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(  # pragma: no cover - 100 collisions of 48 random bits
        f"could not create a temporary file for {name!r} in {directory!r}"
    )


def _copy_permissions(target: str, fd: int) -> None:
    """Give the temporary file the permission bits of an existing target (best effort)."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return  # no existing file (or not stat-able): keep the umask default
    if os.chmod not in os.supports_fd:
        return  # Windows: only the read-only bit exists, and a new file has it cleared
    with contextlib.suppress(OSError):
        os.chmod(fd, mode)


def _fsync_directory(directory: str) -> None:
    """Persist the rename (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
