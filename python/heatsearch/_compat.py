"""heatsearch 0.1 code that keeps working for one release, with a DeprecationWarning.

Two things changed in 0.2 and are bridged here, in one place, until 0.3 removes them:

* **Modules moved** into sub-packages that show the architecture (``heatsearch.extract`` is
  now ``heatsearch.vision.extract``, ...). :data:`MOVED_MODULES` maps each old name to its
  new home; :func:`install_moved_module_finder` makes ``import heatsearch.extract`` (and
  ``from heatsearch.extract import ...``) return the new module, with a warning.
* **Arguments renamed or made keyword-only**, so that one word means one thing everywhere
  (``k`` is the number of results returned; ``depth`` is how deep HeR re-ranks; ``neighbors``
  is a neighbourhood size) and every tuning argument is passed by name.
  :func:`accepts_old_arguments` keeps the old spellings working.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import sys
import types
import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, TypeVar, cast

__all__ = ["MOVED_MODULES", "install_moved_module_finder", "accepts_old_arguments"]

#: The release that removes what this module bridges.
REMOVED_IN = "0.3"

#: Old module name -> new module name (a sub-module of an old package moves with it).
MOVED_MODULES: Dict[str, str] = {
    "heatsearch.datasets": "heatsearch.eval",
    "heatsearch.evaluate": "heatsearch.eval.evaluate",
    "heatsearch.extract": "heatsearch.vision.extract",
    "heatsearch.images": "heatsearch.vision.images",
    "heatsearch.backbones": "heatsearch.vision.backbones",
    "heatsearch.index": "heatsearch.app.index",
    "heatsearch.cli": "heatsearch.app.cli",
    "heatsearch.demo": "heatsearch.app.demo",
    "heatsearch.gallery": "heatsearch.app.gallery",
    "heatsearch.explain": "heatsearch.app.explain",
}


def new_module_name(old: str) -> Optional[str]:
    """The new name of a moved module (or of a sub-module of a moved package), or None."""
    for prefix, target in MOVED_MODULES.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix) :]
    return None


def moved_module(old: str) -> types.ModuleType:
    """Imports the new home of the moved module ``old``, warning that the name is deprecated."""
    new = new_module_name(old)
    assert new is not None, old
    warnings.warn(
        f"{old} moved to {new} in heatsearch 0.2; the old name is removed in {REMOVED_IN}",
        DeprecationWarning,
        stacklevel=3,
    )
    return importlib.import_module(new)


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves old module names to the already-importable new modules (never a second copy:
    the old name is bound to the very same module object)."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[types.ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if new_module_name(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return moved_module(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the new module is already executed."""


def install_moved_module_finder() -> None:
    """Puts the finder of moved modules first on ``sys.meta_path`` (once): before the path
    finder, which would otherwise load a moved package's sub-module a second time."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())


F = TypeVar("F", bound=Callable[..., Any])


def accepts_old_arguments(
    *, positional: Sequence[str] = (), renamed: Optional[Mapping[str, str]] = None
) -> Callable[[F], F]:
    """Keeps a function's 0.1 call spellings working, each with a DeprecationWarning.

    Args:
        positional: the (new) names of the arguments that 0.1 took by position after the
            function's positional parameters and that are now keyword-only, in their old
            order: ``heat_rerank(X, Q, ranks, 800)`` becomes ``heat_rerank(X, Q, ranks,
            depth=800)`` with ``positional=("depth",)``.
        renamed: old keyword -> new keyword, e.g. ``{"k": "depth"}``.

    The wrapped function keeps its own signature (``inspect.signature`` shows the new one).
    """
    old_names = dict(renamed or {})

    def wrap(func: F) -> F:
        params = inspect.signature(func).parameters.values()
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        n_positional = sum(p.kind in kinds for p in params)
        name = func.__qualname__

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            if len(args) > n_positional and positional:
                extra = args[n_positional:]
                if len(extra) > len(positional):
                    raise TypeError(
                        f"{name}() takes at most {n_positional + len(positional)} positional "
                        f"arguments ({len(args)} given)"
                    )
                for new, value in zip(positional, extra):
                    if new in kwargs:
                        raise TypeError(f"{name}() got multiple values for argument {new!r}")
                    kwargs[new] = value
                args = args[:n_positional]
                given = ", ".join(f"{n}=..." for n in positional[: len(extra)])
                _warn(f"{name}: pass {given} by name (by position is deprecated)")
            for old, new in old_names.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{name}() got both {old!r} (deprecated) and {new!r}")
                    kwargs[new] = kwargs.pop(old)
                    _warn(f"{name}: the argument {old!r} is now called {new!r}")
            return func(*args, **kwargs)

        return cast(F, call)

    return wrap


def _warn(message: str) -> None:
    warnings.warn(
        f"{message}; the old spelling is removed in heatsearch {REMOVED_IN}",
        DeprecationWarning,
        stacklevel=3,
    )
