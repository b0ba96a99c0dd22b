# Type stubs of the Rust extension (rust/python). Checked with `python -m mypy.stubtest heatsearch._core`.
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "__version__",
    "diffusion_rerank",
    "get_num_threads",
    "heat_rerank",
    "hew_pool",
    "hew_pool_batch",
    "hew_weights",
    "knn_graph",
    "local_mean",
    "search",
    "set_num_threads",
]
__version__: str

def hew_weights(
    fmap: np.ndarray, mean: Optional[np.ndarray], threshold: float, ground: float
) -> np.ndarray: ...
def hew_pool(
    fmap: np.ndarray, mean: Optional[np.ndarray], threshold: float, ground: float
) -> np.ndarray: ...
def hew_pool_batch(
    fmaps: Sequence[np.ndarray], mean: Optional[np.ndarray], threshold: float, ground: float
) -> np.ndarray: ...
def local_mean(fmaps: Sequence[np.ndarray]) -> np.ndarray: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def search(
    x: np.ndarray, q: np.ndarray, k: Optional[int]
) -> tuple[np.ndarray, np.ndarray]: ...
def knn_graph(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
def diffusion_rerank(
    x: np.ndarray,
    q: np.ndarray,
    ranks: np.ndarray,
    scores: Optional[np.ndarray],
    graph_indices: np.ndarray,
    graph_similarities: np.ndarray,
    query_k: int,
    alpha: float,
    gamma: float,
    truncation: Optional[int],
    iterations: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray]: ...
def heat_rerank(
    x: np.ndarray,
    q: np.ndarray,
    ranks: np.ndarray,
    scores: Optional[np.ndarray],
    k: int,
    ground: float,
) -> tuple[np.ndarray, np.ndarray]: ...
