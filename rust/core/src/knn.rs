//! Exact k-nearest-neighbour graph of a database by inner product (the graph of diffusion,
//! docs/ALGORITHM.md section 3: Iscen et al. use `k = 50`).
//!
//! The database is its own query set, so the score matrix `X X^T` is symmetric and only its
//! upper block triangle is computed: tiles `(a, b)`, `a <= b`, of `TILE` x `TILE` items,
//! each one sequential faer product into a per-thread buffer. An off-diagonal tile is scanned
//! twice, once for block a's items as queries (its columns are block b's items) and once for
//! block b's (each column is then one query's scores over block a): half the products of the
//! plain search. Each block of queries keeps one running top-k selection behind a mutex, held
//! only while a tile is scanned (never two at once), never during a product.
//!
//! Determinism: each pair's score comes from one fixed tile (the tile grid depends on `n`
//! only), and a selection keeps the exact top k under the total order (score descending,
//! index ascending) whatever order the tiles arrive in, so the result does not depend on the
//! number of threads. Each item is excluded from its own list by index: a duplicate of item i
//! at another index IS a neighbour of i, with the same score, ranked by index like any tie.

use std::sync::Mutex;

use faer::linalg::matmul::matmul;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, MatRef, Par};
use rayon::prelude::*;

use crate::error::Result;
use crate::parallel::workspace::with_workspace;
use crate::real::Real;
use crate::select::{assert_size, list_capacity, write_rows, Selection};
use crate::threads;
use crate::validate;

/// Neighbours per item used by diffusion (Iscen et al., CVPR 2017).
pub const DEFAULT_NEIGHBORS: usize = 50;
/// Items per tile side: a 256 x 256 tile of `f32` scores is 256 KB, in L2 between the product
/// and the scans; faer's product runs at 115-120 GFLOP/s per core on 256 to 1024-sided tiles
/// at d = 512 (2-core AVX-512 VM), about as fast as on the search's blocks.
const TILE: usize = 192;

/// The k nearest neighbours of every database item, row-major `(n, k)`.
#[derive(Clone, Debug, PartialEq)]
pub struct KnnGraph<T> {
    /// `indices[i * k + p]`: the p-th nearest neighbour of item i (0-based, never i itself).
    pub indices: Vec<i64>,
    /// `similarities[i * k + p]`: its inner product with item i, descending along a row.
    pub similarities: Vec<T>,
    /// Number of items.
    pub n: usize,
    /// Neighbours per item.
    pub k: usize,
}

/// The exact kNN graph of the rows of `x` (`(n, d)`, any strides): for every item its
/// `neighbors` most similar other items by inner product, best first, ties to the lower
/// index. `neighbors` is clamped to `n - 1` (0 for an empty or one-item database).
///
/// Cost: `n^2 d / 2` multiply-adds in tiles, parallel on heatsearch's pool; memory `O(n k)`
/// plus a 256 x 256 score tile per thread. The result does not depend on the number of
/// threads. Errors: NaN or infinity in `x`. Panics if `x` has more than
/// [`crate::search::MAX_ITEMS`] rows.
pub fn knn_graph<T: Real>(x: MatRef<'_, T>, neighbors: usize) -> Result<KnnGraph<T>> {
    let n = x.nrows();
    assert_size(n);
    let k = neighbors.min(n.saturating_sub(1));
    let (indices, similarities) = threads::install(|_| knn(x, k))??;
    Ok(KnnGraph {
        indices,
        similarities,
        n,
        k,
    })
}

fn knn<T: Real>(x: MatRef<'_, T>, k: usize) -> Result<(Vec<i64>, Vec<T>)> {
    let n = x.nrows();
    if k == 0 {
        validate::finite(x, "X")?;
        return Ok((Vec::new(), Vec::new()));
    }
    let blocks = n.div_ceil(TILE);
    let cap = list_capacity(k, n);
    let size = |a: usize| TILE.min(n - a * TILE);
    let selections: Vec<Mutex<Selection<T>>> = (0..blocks)
        .map(|a| Mutex::new(Selection::new(size(a), k, cap, false)))
        .collect();
    // Tiles (a, b), a <= b, row by row of the block triangle.
    let tiles: Vec<(usize, usize)> = (0..blocks)
        .flat_map(|a| (a..blocks).map(move |b| (a, b)))
        .collect();
    tiles.par_iter().for_each(|&(a, b)| {
        let (a0, b0, la, lb) = (a * TILE, b * TILE, size(a), size(b));
        with_workspace::<T, _>(|ws| {
            let mut s = ws.score_block(la, lb);
            matmul(
                s.rb_mut(),
                Accum::Replace,
                x.subrows(a0, la),
                x.subrows(b0, lb).transpose(),
                T::of(1.0),
                Par::Seq,
            );
            let col = |j: usize| {
                s.rb()
                    .col(j)
                    .try_as_col_major()
                    .expect("workspace columns are contiguous")
                    .as_slice()
            };
            {
                let mut sel = lock(&selections[a]);
                for j in 0..lb {
                    // On the diagonal, item b0 + j is query j of the block: skip itself.
                    let skip = if a == b { j } else { usize::MAX };
                    sel.scan(col(j), b0 + j, skip);
                }
            }
            if a != b {
                let mut sel = lock(&selections[b]);
                for j in 0..lb {
                    sel.scan_query(j, col(j), a0);
                }
            }
        });
    });
    let selections: Vec<Selection<T>> = selections
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect();
    if selections.iter().any(|s| s.nonfinite()) {
        validate::finite(x, "X")?;
        return Err(validate::overflow::<T>("X with itself"));
    }
    let lists: Vec<Vec<_>> = selections
        .into_iter()
        .flat_map(|s| s.into_lists())
        .collect();
    let mut indices = vec![0i64; n * k];
    let mut similarities = vec![T::of(0.0); n * k];
    write_rows(&mut indices, &mut similarities, k, lists.into_par_iter());
    Ok((indices, similarities))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A scan never panics with the lock held on valid data; recover the data if one did.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;

    #[test]
    fn neighbours_exclude_self_and_break_ties_by_index() {
        // Items 0 and 2 are equal; item 3 is zero (all its similarities are 0).
        let rows = [[1.0, 0.0], [0.5, 0.5], [1.0, 0.0], [0.0, 0.0]];
        let x = Mat::from_fn(4, 2, |i, j| rows[i][j]);
        let g = knn_graph(x.as_ref(), 2).unwrap();
        assert_eq!((g.n, g.k), (4, 2));
        assert_eq!(g.indices, vec![2, 1, 0, 2, 0, 1, 0, 1]);
        assert_eq!(g.similarities, vec![1.0, 0.5, 0.5, 0.5, 1.0, 0.5, 0.0, 0.0]);
        let all = knn_graph(x.as_ref(), 10).unwrap();
        assert_eq!(all.k, 3);
        let one = knn_graph(x.as_ref().subrows(0, 1), 5).unwrap();
        assert_eq!((one.n, one.k, one.indices.len()), (1, 0, 0));
    }
}
