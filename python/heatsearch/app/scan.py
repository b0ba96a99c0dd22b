"""What a folder of photos holds for the command line: the images an index takes, and the
entries it cannot take, each with the reason.

The images are exactly those of :func:`heatsearch.app.index.find_images` (the list
:meth:`Index.build <heatsearch.app.index.Index.build>` indexes), so what the command line
reports is what the index gets. That walk silently passes over symbolic links whose target
is missing or that loop, over links to folders (it does not follow them, like
:meth:`pathlib.Path.rglob`) and over folders it may not read; :func:`scan_folder` names
each of them so that a user learns why a photo is not in the index.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import List, Tuple

__all__ = ["FolderScan", "scan_folder", "link_problem"]


@dataclass
class FolderScan:
    """``images``: the image files an index takes (sorted, as :func:`find_images`);
    ``skipped``: ``(path, reason)`` of the entries it cannot take."""

    images: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)


def link_problem(path: str) -> str:
    """Why the symbolic link ``path`` gives no image ("" when it leads to a file)."""
    try:
        target = os.readlink(path)
    except OSError:  # not a link (any more)
        return ""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"symbolic link loop (-> {target})"
        return f"broken symbolic link: its target {target} does not exist"
    if os.path.isdir(path):
        return f"symbolic link to a folder (-> {target}), not followed"
    return ""


def scan_folder(folder: str, *, recursive: bool = True) -> FolderScan:
    """The images under ``folder`` and the entries that cannot be indexed (broken, looping or
    folder links, unreadable folders). ``folder`` must exist (checked by the caller)."""
    from .index import find_images

    scan = FolderScan(images=find_images(folder, recursive))

    def unreadable(e: OSError) -> None:
        scan.skipped.append((str(e.filename), f"folder cannot be read ({e.strerror})"))

    for top, dirs, files in os.walk(folder, onerror=unreadable):
        for name in sorted(dirs + files):
            path = os.path.join(top, name)
            if os.path.islink(path):
                why = link_problem(path)
                if why:
                    scan.skipped.append((path, why))
        if not recursive:
            break
    scan.skipped.sort()
    return scan
