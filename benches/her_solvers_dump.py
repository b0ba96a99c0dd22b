"""Write the Holidays case of ``rust/core/examples/her_solvers.rs`` (HeR's solver measurement).

    python benches/her_solvers_dump.py /tmp/holidays_her.bin
    cargo run --release -p heatsearch-core --example her_solvers /tmp/holidays_her.bin

The authors' Holidays HeW vectors (``../shared/data/holidays``, or ``$HEATSEARCH_SHARED_DATA``),
signed square root + L2, 20 of the 500 queries (every 25th), their exact inner-product top 800.
Layout (little-endian): ``u64 n, d, nq, k``, ``X`` (n x d f32), ``Q`` (nq x d f32), ``ranks``
(nq x k i64), all row-major.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import scipy.io as sio


def main(out: str) -> None:
    root = Path(os.environ.get("HEATSEARCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    cells = sio.loadmat(str(root / "holidays" / "vecs_ho.mat"))["vecs_ho"]
    X = np.stack([np.asarray(c, dtype=np.float64).ravel() for c in cells[0]])
    X = np.sign(X) * np.sqrt(np.abs(X))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    qidx = sio.loadmat(str(root / "holidays" / "gnd_holidays.mat"))["qidx"].ravel().astype(np.int64) - 1
    Q = X[qidx[::25]]
    k = 800
    ranks = np.argsort(-(Q @ X.T), axis=1, kind="stable")[:, :k].astype("<i8")
    with open(out, "wb") as f:
        f.write(struct.pack("<4Q", X.shape[0], X.shape[1], Q.shape[0], k))
        f.write(X.astype("<f4").tobytes())
        f.write(Q.astype("<f4").tobytes())
        f.write(ranks.tobytes())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "holidays_her.bin")
