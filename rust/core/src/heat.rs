//! Heat solves on the SPD system `M = D - A` (ALGORITHM.md, section 1 steps 4-5, and the
//! "exact, cheaper computation" paragraph).
//!
//! With `G = L^-1 = M^-1 D` (`L = I - D^-1 A`), `G_ij / G_jj = (M^-1)_ij / (M^-1)_jj`, so the
//! system temperature of source j is
//! `T_j = (1 / (N+1)) * sum_{i != j} (M^-1)_ij / (M^-1)_jj`.
//! One lower Cholesky factor `M = R R^T` and its inverse `V = R^-1` give all of it:
//! `M^-1 = V^T V`, so `(M^-1)_jj = ||V[:, j]||^2` (the squared norm of COLUMN j: R is lower)
//! and `sum_{i != j} (M^-1)_ij = sum_k V_kj (r_k - V_kj)` with `r_k` the k-th row sum of `V`.
//! `V` is entrywise non-negative (`M` is an M-matrix), so this sum of products has no
//! cancellation, unlike `s_j / g_j - 1` with `s = M^-1 1`: for weakly connected cells it keeps
//! `f32` input accurate. Cost: `N^3/3` (Cholesky) `+ N^3/3` (triangular inverse) flops.
//!
//! HeW computes `R` and `V` together, tile by tile, in one [`crate::team`]
//! ([`cholesky_inverse`]): every step is a phase of tile products that both cores share.
//! faer's own Cholesky and triangular inverse are faster on one core at N = 768 than split
//! over two (measured), because each of their parallel steps pays a rayon wake-up. HeR's
//! Cholesky fallback, one small system per thread, uses faer's ([`cholesky`]).

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, MatMut, Par};

use crate::error::{Error, Result};
use crate::real::Real;
use crate::shared_mat::SharedMat;
use crate::team::Crew;
use crate::triangle::{dot_with, sum_squares};

fn not_positive_definite(detail: impl std::fmt::Debug) -> Error {
    Error::Numerical(format!(
        "the heat system M = D - A should be positive definite but its Cholesky \
         factorisation failed ({detail:?}); please report this input"
    ))
}

/// Factors `M` (lower triangle read) in place into its lower Cholesky factor.
pub fn cholesky<T: Real>(m: MatMut<'_, T>, par: Par) -> Result<()> {
    let n = m.nrows();
    let mut mem = MemBuffer::new(cholesky_in_place_scratch::<T>(n, par, Default::default()));
    cholesky_in_place(m, Default::default(), par, MemStack::new(&mut mem), Default::default())
        .map(|_| ())
        .map_err(not_positive_definite)
}

/// The side of the tiles [`cholesky_inverse`] works on, for an N x N system. Measured on 2
/// cores (f32): 96 is fastest at N = 768 (tile products run at about 180 GFLOP/s on one
/// core and there are enough of them to share), larger tiles pay off from N = 1536 on.
pub fn tile_size(n: usize) -> usize {
    if n <= 1024 { 96 } else { 192 }
}

/// Overwrites the lower triangle of `M` (N x N) with its Cholesky factor `L` (`M = L L^T`)
/// and the lower triangle of `v` with `V = L^-1`, by square tiles of side `tile`; `scratch`
/// is N x `tile`. Returns the row sums of V's strict lower triangle (`f64`), taken from each
/// tile as it is finished. All of it is tile products: a right-looking tiled Cholesky whose
/// triangular solves multiply by the inverses of the diagonal tiles, and the block forward
/// substitution `L V = I` carried along, row of tiles by row of tiles (`N^3/3 + N^3/3`
/// flops, plus `N^2 tile` for the diagonal tiles' triangles multiplied as full squares).
///
/// Step k: (1) `L_ik = A_ik Linv_kk^T` below the diagonal tile and `V_kj = Linv_kk V_kj`
/// left of it; (2) the trailing update `A_ij -= L_ik L_jk^T` and `V_ij -= L_ik V_kj`, the
/// first item of which also factors and inverts the next diagonal tile.
pub fn cholesky_inverse<T: Real>(
    crew: &Crew<'_>,
    m: &SharedMat<'_, T>,
    v: &SharedMat<'_, T>,
    scratch: &SharedMat<'_, T>,
    tile: usize,
) -> Result<Vec<f64>> {
    let n = m.nrows();
    let tiles = n.div_ceil(tile);
    let start = |t: usize| t * tile;
    let size = |t: usize| tile.min(n - t * tile);
    // SAFETY (all the blocks below): an item writes only its own tile of `m`, `v` or
    // `scratch` (the rows of scratch of tile i, i != k, serve tile i of step k), and reads
    // tiles no item of the same phase writes: step k's first phase reads the diagonal tile
    // k and writes column k of L (below it) and row k of V (left of it); the second reads
    // those and writes the trailing tiles of M and the rows of V below k. The first item of
    // the second phase writes tile (k+1, k+1) of M and of V, which no other item touches.
    let factor = |k: usize| {
        let (s, b) = (start(k), size(k));
        let mut mk = unsafe { m.block_mut(s, s, b, b) };
        let mut mem = MemBuffer::new(cholesky_in_place_scratch::<T>(b, Par::Seq, Default::default()));
        if cholesky_in_place(mk.rb_mut(), Default::default(), Par::Seq, MemStack::new(&mut mem), Default::default()).is_err() {
            crew.raise();
        }
        let mut vk = unsafe { v.block_mut(s, s, b, b) };
        invert_lower_triangular(vk.rb_mut(), mk.rb(), Par::Seq);
        // The tile products use the inverse as a full square.
        for j in 1..b {
            for i in 0..j {
                vk[(i, j)] = T::of(0.0);
            }
        }
    };
    let one = T::of(1.0);
    crew.single(|| factor(0));
    // Row sums of V's strict lower triangle, tile by tile in a fixed order.
    let mut off = vec![0.0f64; n];
    for k in 0..tiles {
        let below = tiles - k - 1;
        // The tiles of V left of the diagonal are final here: their row sums come along.
        let sums = crew.map(below + k, |item| unsafe {
            let linv = v.block(start(k), start(k), size(k), size(k));
            if item < below {
                let i = k + 1 + item;
                let mut copy = scratch.block_mut(start(i), 0, size(i), size(k));
                copy.copy_from(m.block(start(i), start(k), size(i), size(k)));
                let out = m.block_mut(start(i), start(k), size(i), size(k));
                matmul(out, Accum::Replace, copy.rb(), linv.transpose(), one, Par::Seq);
                Vec::new()
            } else {
                let j = item - below;
                let mut copy = scratch.block_mut(start(j), 0, size(k), size(j));
                copy.copy_from(v.block(start(k), start(j), size(k), size(j)));
                let mut out = v.block_mut(start(k), start(j), size(k), size(j));
                matmul(out.rb_mut(), Accum::Replace, linv, copy.rb(), one, Par::Seq);
                let mut rows = vec![0.0f64; size(k)];
                for c in 0..size(j) {
                    for (r, x) in rows.iter_mut().zip(out.rb().col(c).iter()) {
                        *r += x.f64();
                    }
                }
                rows
            }
        });
        for tile_sums in &sums[below..] {
            for (o, x) in off[start(k)..].iter_mut().zip(tile_sums) {
                *o += x;
            }
        }
        if below == 0 {
            break;
        }
        // Trailing tiles (i, j), k < j <= i, column by column from (k+1, k+1); then the
        // tiles (i, j), i > k, j <= k of V.
        let trailing = below * (below + 1) / 2;
        crew.phase(trailing + below * (k + 1), |item| unsafe {
            if item < trailing {
                let (mut col, mut r) = (0, item);
                while r >= below - col {
                    r -= below - col;
                    col += 1;
                }
                let (i, j) = (k + 1 + col + r, k + 1 + col);
                let li = m.block(start(i), start(k), size(i), size(k));
                let lj = m.block(start(j), start(k), size(j), size(k));
                let out = m.block_mut(start(i), start(j), size(i), size(j));
                matmul(out, Accum::Add, li, lj.transpose(), -one, Par::Seq);
                if item == 0 {
                    factor(k + 1);
                }
            } else {
                let r = item - trailing;
                let (i, j) = (k + 1 + r / (k + 1), r % (k + 1));
                let li = m.block(start(i), start(k), size(i), size(k));
                let vkj = v.block(start(k), start(j), size(k), size(j));
                let out = v.block_mut(start(i), start(j), size(i), size(j));
                let accum = if j == k { Accum::Replace } else { Accum::Add };
                matmul(out, accum, li, vkj, -one, Par::Seq);
            }
        });
    }
    if crew.raised() {
        return Err(not_positive_definite("a diagonal tile is not positive definite"));
    }
    for k in 0..tiles {
        // SAFETY: all phases are over; V is read-only from here on.
        let diagonal = unsafe { v.block(start(k), start(k), size(k), size(k)) };
        for c in 0..size(k) {
            for (o, x) in off[start(k) + c + 1..].iter_mut().zip(diagonal.col(c).iter().skip(c + 1)) {
                *o += x.f64();
            }
        }
    }
    Ok(off)
}

/// Per source j, `T_j = (1/(N+1)) sum_{i != j} (M^-1)_ij / (M^-1)_jj`, from `V = L^-1` (the
/// lower triangle of `v`, N x N) with `M = L L^T`, and `off`, the row sums of V's strict lower
/// triangle (what [`cholesky_inverse`] returns). Nothing may write `v` meanwhile.
///
/// Entries are `f64`; a cell with no path to any other cell gets exactly 0.
pub fn system_temperatures<T: Real>(crew: &Crew<'_>, v: &SharedMat<'_, T>, off: &[f64]) -> Vec<f64> {
    const COLUMNS_PER_ITEM: usize = 16;
    let n = v.nrows();
    // SAFETY (the reads of `v`): read-only phases.
    let diagonal = |k: usize| unsafe { v.column(k, k)[0].f64() };
    // r_k: row sums of V (strict lower part plus the diagonal).
    let r: Vec<f64> = (0..n).map(|k| off[k] + diagonal(k)).collect();
    let scale = 1.0 / (n as f64 + 1.0);
    let items = n.div_ceil(COLUMNS_PER_ITEM);
    let temperatures = crew.map(items, |item| {
        (item * COLUMNS_PER_ITEM..((item + 1) * COLUMNS_PER_ITEM).min(n))
            .map(|j| {
                let col = unsafe { v.column(j, j) };
                let vjj = col[0].f64();
                let g = vjj * vjj + sum_squares(&col[1..]);
                let h = vjj * off[j] + dot_with(&col[1..], &r[j + 1..], |x, rk| x * (rk - x));
                h / g * scale
            })
            .collect::<Vec<f64>>()
    });
    temperatures.into_iter().flatten().collect()
}
