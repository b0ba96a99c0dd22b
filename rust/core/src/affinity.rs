//! The affinity graph and its heat system `M = D - A` (docs/ALGORITHM.md, section 1 steps 1-4;
//! section 2 step 3).
//!
//! Cells (local features, or candidate images for HeR) are the columns of a `(C, N)` matrix
//! of centred vectors. The affinity is their Gram matrix with a zero diagonal, entries
//! between two "dead" cells removed and entries below the threshold removed. A ground node at
//! temperature 0 is attached to every cell with conductance `z = ground * mean{A_ij > 0}`, so
//! `M = D - A` with `D_ii = sum_j A_ij + z` is symmetric, strictly diagonally dominant with a
//! positive diagonal: symmetric positive definite.

use faer::linalg::matmul::matmul;
use faer::reborrow::ReborrowMut;
use faer::{Accum, MatRef, Par};

use crate::parallel::shared_mat::SharedMat;
use crate::parallel::team::Crew;
use crate::real::Real;
use crate::reduce::LANES;

/// How the affinity entries are filtered and the ground conductance chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AffinityRules {
    /// Entries below it are set to 0 (`tau`; must be >= 0).
    pub(crate) threshold: f64,
    /// The ground conductance is `ground * mean{A_ij : A_ij > 0}` (must be > 0).
    pub(crate) ground: f64,
}

/// What building the heat system found out besides `M` itself.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HeatSystem {
    /// `connected[i]`: cell i has a positive affinity to at least one other cell.
    pub(crate) connected: Vec<bool>,
    /// The ground conductance `z`.
    pub(crate) z: f64,
}

/// What one Gram tile kept: per column and per row of the tile, the sum of its kept
/// affinities (in `f64`), and how many it kept.
#[derive(Clone)]
struct TileSums {
    columns: Vec<f64>,
    rows: Vec<f64>,
    positives: usize,
}

/// One pass over a column of affinities below the diagonal: zeroes those not kept (below
/// `tau`, or not positive when `tau = 0`; branch-free, the signs are random), adds the kept
/// ones to `rows` (the running row sums of the tile), stores them negated, and returns their
/// sum (eight `f64` lanes) and count.
#[inline]
fn keep_and_negate<T: Real>(col: &mut [T], tau: T, rows: &mut [f64]) -> (f64, usize) {
    let zero = T::of(0.0);
    let keep = |x: T| {
        if tau > zero {
            if x >= tau {
                x
            } else {
                zero
            }
        } else if x > zero {
            x
        } else {
            zero
        }
    };
    let mut lanes = [0.0f64; LANES];
    let mut kept = 0usize;
    let split = col.len() - col.len() % LANES;
    let (body, tail) = col.split_at_mut(split);
    let (rows_body, rows_tail) = rows.split_at_mut(split);
    for (xs, rs) in body
        .chunks_exact_mut(LANES)
        .zip(rows_body.chunks_exact_mut(LANES))
    {
        for l in 0..LANES {
            let v = keep(xs[l]);
            lanes[l] += v.f64();
            rs[l] += v.f64();
            kept += usize::from(v > zero);
            xs[l] = -v;
        }
    }
    let mut sum = lanes.iter().sum::<f64>();
    for (x, r) in tail.iter_mut().zip(rows_tail) {
        let v = keep(*x);
        sum += v.f64();
        *r += v.f64();
        kept += usize::from(v > zero);
        *x = -v;
    }
    (sum, kept)
}

/// Builds `M = D - A` into `m` (N x N, column-major; its lower triangle is what counts) from
/// the columns of `cells` (C x N): `A = cells^T cells` (in `T`), `A_ii = 0`, `A_ij = 0` when
/// both cells are dead (`dead`, HeW only) or when `A_ij < threshold`. `tile` is the side of
/// the Gram products' output blocks.
///
/// Returns `None` when no affinity is positive (the caller's degenerate case).
pub(crate) fn heat_system<T: Real>(
    crew: &Crew<'_>,
    cells: MatRef<'_, T>,
    dead: Option<&[bool]>,
    rules: AffinityRules,
    m: &SharedMat<'_, T>,
    tile: usize,
) -> Option<HeatSystem> {
    let n = cells.ncols();
    // The lower tiles of A, column by column; a diagonal tile is computed whole (its upper
    // half lands in M's unused upper triangle). Each item filters its tile while it is still
    // in cache, sums what it kept and stores it negated: the off-diagonal part of M.
    let tiles = n.div_ceil(tile);
    let lower: Vec<(usize, usize)> = (0..tiles)
        .flat_map(|j| (j..tiles).map(move |i| (i, j)))
        .collect();
    let tau = T::of(rules.threshold);
    let zero = T::of(0.0);
    let sums = crew.map(lower.len(), |item| {
        let (i, j) = lower[item];
        let (r0, c0) = (i * tile, j * tile);
        let (rows, cols) = (tile.min(n - r0), tile.min(n - c0));
        // SAFETY: each item writes its own tile of `m`.
        let mut out = unsafe { m.block_mut(r0, c0, rows, cols) };
        matmul(
            out.rb_mut(),
            Accum::Replace,
            cells.subcols(r0, rows).transpose(),
            cells.subcols(c0, cols),
            T::of(1.0),
            Par::Seq,
        );
        crate::simd::zero_upper();
        let mut sums = TileSums {
            columns: vec![0.0; cols],
            rows: vec![0.0; rows],
            positives: 0,
        };
        for c in 0..cols {
            // Below the diagonal only.
            let first = if i == j { c + 1 } else { 0 };
            let col = &mut out
                .rb_mut()
                .col_mut(c)
                .try_as_col_major_mut()
                .expect("column-major")
                .as_slice_mut()[first..];
            if let Some(dead) = dead.filter(|d| d[c0 + c]) {
                for (x, &d) in col.iter_mut().zip(&dead[r0 + first..r0 + rows]) {
                    if d {
                        *x = zero;
                    }
                }
            }
            let (sum, kept) = keep_and_negate(col, tau, &mut sums.rows[first..]);
            sums.columns[c] = sum;
            sums.positives += kept;
        }
        sums
    });
    // Degree of cell x: the kept affinities of its row (left of the diagonal) and of its
    // column (below it), added tile by tile in a fixed order.
    let mut degree = vec![0.0f64; n];
    let (mut total, mut positives) = (0.0, 0usize);
    for (&(i, j), s) in lower.iter().zip(&sums) {
        for (d, x) in degree[j * tile..].iter_mut().zip(&s.columns) {
            *d += x;
        }
        for (d, x) in degree[i * tile..].iter_mut().zip(&s.rows) {
            *d += x;
        }
        total += s.columns.iter().sum::<f64>();
        positives += s.positives;
    }
    if positives == 0 {
        return None;
    }
    let z = rules.ground * total / positives as f64;
    crew.single(|| {
        for (j, d) in degree.iter().enumerate() {
            // SAFETY: this single item is the only one of its phase.
            unsafe { m.column_mut(j, j)[0] = T::of(d + z) };
        }
    });
    // All kept entries are positive, so a cell is connected exactly when its degree is.
    Some(HeatSystem {
        connected: degree.iter().map(|&d| d > 0.0).collect(),
        z,
    })
}
