"""The folder walk of the command line names every entry an index cannot take, with the
reason; :func:`find_images` (the index's own walk) silently passed over them."""

from __future__ import annotations

import os

from heatsearch.app.index import find_images
from heatsearch.app.scan import scan_folder


def test_broken_looping_and_folder_links_are_reported(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image, not a problem")
    os.symlink("gone.jpg", tmp_path / "dangling.jpg")
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    os.symlink("a.jpg", tmp_path / "alias.jpg")  # a good link: indexed like a file
    os.symlink("..", tmp_path / "sub" / "up")
    scan = scan_folder(str(tmp_path))
    assert scan.images == find_images(str(tmp_path)) == [
        str(tmp_path / "a.jpg"), str(tmp_path / "alias.jpg"), str(tmp_path / "sub" / "b.png")]
    reasons = dict(scan.skipped)
    assert set(reasons) == {str(tmp_path / "dangling.jpg"), str(tmp_path / "loop.jpg"), str(tmp_path / "sub" / "up")}
    assert "broken symbolic link" in reasons[str(tmp_path / "dangling.jpg")] and "gone.jpg" in reasons[str(tmp_path / "dangling.jpg")]
    assert "loop" in reasons[str(tmp_path / "loop.jpg")]
    assert "folder" in reasons[str(tmp_path / "sub" / "up")] and "not followed" in reasons[str(tmp_path / "sub" / "up")]


def test_not_recursive_looks_at_the_folder_only(tmp_path):
    (tmp_path / "sub").mkdir()
    os.symlink("gone.jpg", tmp_path / "sub" / "dangling.jpg")
    (tmp_path / "a.jpg").write_bytes(b"x")
    scan = scan_folder(str(tmp_path), recursive=False)
    assert scan.images == [str(tmp_path / "a.jpg")] and scan.skipped == []
