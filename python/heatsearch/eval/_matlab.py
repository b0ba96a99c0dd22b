"""MATLAB ``.mat`` files (the heat-diffusion authors' ground truth and descriptors), read with
SciPy, which is imported only when such a file is read (``pip install scipy``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

from ..errors import InvalidInputError, MissingDependencyError

__all__ = ["loadmat", "variables"]


def loadmat(p: Path) -> Dict[str, Any]:
    """The variables of a .mat file, raw (no squeezing); errors name the file."""
    try:
        from scipy.io import loadmat as scipy_loadmat  # type: ignore[import-untyped]
    except ImportError as e:
        raise MissingDependencyError(
            f"reading the MATLAB file {p} needs SciPy, which is not installed: "
            "pip install scipy (or pip install 'heatsearch[scipy]')"
        ) from e
    try:
        # Raw layout (no squeezing): the shapes are normalised below, one rule for every file.
        return scipy_loadmat(str(p), squeeze_me=False, struct_as_record=True, chars_as_strings=True)
    except NotImplementedError as e:
        raise InvalidInputError(
            f"{p}: a MATLAB v7.3 (HDF5) file, which scipy.io.loadmat cannot read; re-save it "
            "in MATLAB with save(..., '-v7')"
        ) from e
    except Exception as e:  # any corruption: ValueError, TypeError, zlib.error, ...
        raise InvalidInputError(
            f"{p}: not a readable MATLAB .mat file ({type(e).__name__}: {e})"
        ) from e


def variables(mat: Mapping[str, Any]) -> Dict[str, Any]:
    """The user variables of a loaded .mat file (without ``__header__`` and the like)."""
    return {k: v for k, v in mat.items() if not k.startswith("__")}
