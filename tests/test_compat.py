"""heatsearch 0.1 code keeps working for one release: moved modules and renamed or
keyword-only arguments give the same results, each with a DeprecationWarning."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import numpy as np
import pytest

import heatsearch as hs
from heatsearch import aggregate, reference
from heatsearch._compat import MOVED_MODULES

rng = np.random.default_rng(3)
X = hs.l2_normalize(rng.standard_normal((60, 8)))
Q = hs.l2_normalize(rng.standard_normal((4, 8)))
R, S = hs.search(X, Q)
FMAP = np.maximum(rng.standard_normal((6, 5, 7)), 0)


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_a_moved_module_imports_under_its_old_name(old):
    """In a fresh interpreter: the old name warns and is the very module of the new name."""
    new = MOVED_MODULES[old]
    code = (
        "import importlib, warnings\n"
        "warnings.simplefilter('error')\n"
        "import heatsearch\n"
        "try:\n"
        f"    importlib.import_module({old!r})\n"
        "except DeprecationWarning as w:\n"
        f"    assert {new!r} in str(w), w\n"
        "else:\n"
        "    raise SystemExit('no DeprecationWarning')\n"
        "warnings.simplefilter('ignore')\n"
        f"assert importlib.import_module({old!r}) is importlib.import_module({new!r})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_old_from_imports_still_work():
    pytest.importorskip("torch", reason="the old module path names the torch network's module")
    with pytest.warns(DeprecationWarning):
        from heatsearch.backbones.efficientnet_lite import HEAD_CHANNELS  # noqa: F401
    from heatsearch.vision.backbones import efficientnet_lite

    assert importlib.import_module("heatsearch.backbones.efficientnet_lite") is efficientnet_lite


def test_old_package_attributes_warn():
    with pytest.warns(DeprecationWarning, match="heatsearch.eval"):
        datasets = hs.datasets
    assert datasets.load_ground_truth is hs.load_ground_truth
    with pytest.warns(DeprecationWarning):
        assert hs.evaluate.compute_map is hs.compute_map


# (new call, old call) pairs: the old spelling warns and gives the very same result.
CALLS = {
    "heat_rerank k=": (lambda: hs.heat_rerank(X, Q, R, depth=30), lambda: hs.heat_rerank(X, Q, R, k=30)),
    "heat_rerank positional": (lambda: hs.heat_rerank(X, Q, R, depth=30), lambda: hs.heat_rerank(X, Q, R, 30)),
    "reference heat_rerank": (
        lambda: reference.heat_rerank(X, Q, R, depth=30),
        lambda: reference.heat_rerank(X, Q, R, k=30),
    ),
    "knn_graph k=": (lambda: hs.knn_graph(X, neighbors=6).indices, lambda: hs.knn_graph(X, k=6).indices),
    "knn_graph positional": (lambda: hs.knn_graph(X, neighbors=6).indices, lambda: hs.knn_graph(X, 6).indices),
    "diffusion k=, query_k=": (
        lambda: hs.diffusion_rerank(X, Q, neighbors=9, query_neighbors=3),
        lambda: hs.diffusion_rerank(X, Q, k=9, query_k=3),
    ),
    "aqe positional": (
        lambda: hs.average_query_expansion(X, Q, R, neighbors=4),
        lambda: hs.average_query_expansion(X, Q, R, 4),
    ),
    "alpha-qe positional": (
        lambda: hs.alpha_query_expansion(X, Q, R, neighbors=4, alpha=2.0),
        lambda: hs.alpha_query_expansion(X, Q, R, 4, 2.0),
    ),
    "dba k=": (
        lambda: hs.alpha_database_augmentation(X, neighbors=4),
        lambda: hs.alpha_database_augmentation(X, k=4),
    ),
    "power_normalize positional": (lambda: hs.power_normalize(X, p=0.3), lambda: hs.power_normalize(X, 0.3)),
    "l2_normalize positional": (lambda: hs.l2_normalize(X, eps=0.5), lambda: hs.l2_normalize(X, 0.5)),
    "gem positional": (lambda: aggregate.gem(FMAP, p=2.0), lambda: aggregate.gem(FMAP, 2.0)),
    "crow positional": (lambda: aggregate.crow(FMAP, a=1.0, b=3.0), lambda: aggregate.crow(FMAP, 1.0, 3.0)),
    "rmac positional": (lambda: aggregate.rmac(FMAP, levels=2), lambda: aggregate.rmac(FMAP, 2)),
    "whitening dim positional": (
        lambda: hs.PCAWhitening().fit(X, dim=5).projection_,
        lambda: hs.PCAWhitening().fit(X, 5).projection_,
    ),
    "rank heat_k=, qe_k=": (
        lambda: hs.rank(X, Q, rerank="aqe+heat", depth=20, qe_neighbors=3),
        lambda: hs.rank(X, Q, rerank="aqe+heat", heat_k=20, qe_k=3),
    ),
    "compute_map kappas positional": (
        lambda: hs.compute_map(R, [{"ok": [i]} for i in range(4)], kappas=(1, 3)).map,
        lambda: hs.compute_map(R, [{"ok": [i]} for i in range(4)], (1, 3)).map,
    ),
}


@pytest.mark.parametrize("case", list(CALLS))
def test_old_argument_spellings_warn_and_agree(case):
    new, old = CALLS[case]
    with pytest.warns(DeprecationWarning, match="removed in heatsearch 0.3"):
        got = old()
    want = new()
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        np.testing.assert_array_equal(a, b)


def test_new_spellings_do_not_warn(recwarn):
    for new, _ in CALLS.values():
        new()
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_signatures_show_the_new_names():
    params = inspect.signature(hs.heat_rerank).parameters
    assert "depth" in params and "k" not in params
    assert params["depth"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(hs.knn_graph).parameters) == ["X", "neighbors"]


def test_an_old_and_a_new_name_together_is_a_type_error():
    with pytest.raises(TypeError, match="both 'k'"):
        hs.heat_rerank(X, Q, R, k=3, depth=4)
    with pytest.raises(TypeError, match="at most"):
        hs.knn_graph(X, 3, 4)


def test_knn_graph_k_attribute_is_deprecated():
    g = hs.knn_graph(X, neighbors=3)
    with pytest.warns(DeprecationWarning):
        assert g.k == g.neighbors == 3
