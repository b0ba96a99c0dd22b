"""The command-line checks of heatsearch._validate: text to numbers, files and folders."""

from __future__ import annotations

import pytest

from heatsearch import _validate
from heatsearch.errors import InvalidInputError


@pytest.mark.parametrize("text", ["-1", "1e20", "2.5", "", "x", "1025", "99999999999999999999"])
def test_integer_text_refuses(text):
    with pytest.raises(InvalidInputError, match="must be a whole number from 0 to 1024"):
        _validate.integer_text(text, "--threads", minimum=0, maximum=1024)


def test_integer_text_and_reals_text_accept():
    assert _validate.integer_text(" 12 ", "-k", minimum=1) == 12
    assert _validate.reals_text("-1, 2.5,3,4e2", "--bbox", 4, "x1,y1,x2,y2") == [-1.0, 2.5, 3.0, 400.0]
    for bad in ("1,2,3", "1,2,3,inf", "a,b,c,d", "1,2,3,4,5"):
        with pytest.raises(InvalidInputError, match="--bbox must be x1,y1,x2,y2"):
            _validate.reals_text(bad, "--bbox", 4, "x1,y1,x2,y2")


def test_files_and_folders(tmp_path):
    (tmp_path / "f").write_text("")
    assert _validate.existing_file(str(tmp_path / "f"), "IMAGE") == str(tmp_path / "f")
    with pytest.raises(InvalidInputError, match="got the folder"):
        _validate.existing_file(str(tmp_path), "IMAGE")
    with pytest.raises(InvalidInputError, match="no such file"):
        _validate.existing_file(str(tmp_path / "g"), "IMAGE")
    with pytest.raises(InvalidInputError, match="a file, not a folder"):
        _validate.existing_folder(str(tmp_path / "f"), "FOLDER")
    with pytest.raises(InvalidInputError, match="must be a file to write"):
        _validate.output_file(str(tmp_path), "--html")
    _validate.output_file(str(tmp_path / "page.html"), "--html")
