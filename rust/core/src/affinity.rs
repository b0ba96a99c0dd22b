//! The affinity graph and its heat system `M = D - A` (ALGORITHM.md, section 1 steps 1-4;
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
use crate::triangle::{sum_squares, LANES};

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

/// Relative size below which a centred feature counts as zero ("equal to the mean"): a
/// difference of a few roundings of the mean is noise, not a direction (measured: the mean of
/// three equal values can differ from them in the last bit, and normalising that difference
/// would give a full unit vector).
pub(crate) const EQUAL_TO_MEAN_ULPS: f64 = 16.0;

/// Columns per item of the passes over columns.
const COLUMNS_PER_ITEM: usize = 16;

/// Writes the rows of `f` (N x C), centred by `mu` and, when `unit`, scaled to unit length,
/// into the columns of `out` (C x N, column-major). The arithmetic is done in `f64`.
///
/// With `unit`, a row equal to `mu` up to rounding (`||f_i - mu|| <= 16 eps (||f_i|| +
/// ||mu||)`, `eps` of `T`) becomes a zero column: its affinity to every cell is 0.
pub(crate) fn centre_columns<T: Real>(
    crew: &Crew<'_>,
    f: MatRef<'_, T>,
    mu: &[f64],
    unit: bool,
    out: &SharedMat<'_, T>,
) {
    let (n, c) = (f.nrows(), f.ncols());
    let mu_norm = sum_squares(mu).sqrt();
    let tolerance = EQUAL_TO_MEAN_ULPS * T::epsilon().f64();
    crew.phase(n.div_ceil(COLUMNS_PER_ITEM), |item| {
        let mut d = vec![0.0f64; c];
        for i in item * COLUMNS_PER_ITEM..((item + 1) * COLUMNS_PER_ITEM).min(n) {
            // One pass: the centred row and the squared norms of the row and of its centred
            // version, in eight lanes.
            let (mut f2, mut d2) = ([0.0f64; LANES], [0.0f64; LANES]);
            match f.row(i).try_as_row_major() {
                Some(r) => {
                    for ((ds, xs), ms) in d
                        .chunks_exact_mut(LANES)
                        .zip(r.as_slice().chunks_exact(LANES))
                        .zip(mu.chunks_exact(LANES))
                    {
                        for l in 0..LANES {
                            let x = xs[l].f64();
                            ds[l] = x - ms[l];
                            f2[l] += x * x;
                            d2[l] += ds[l] * ds[l];
                        }
                    }
                    let done = c - c % LANES;
                    centre_lanes(
                        &mut d[done..],
                        r.as_slice()[done..].iter().map(|x| x.f64()),
                        &mu[done..],
                        &mut f2,
                        &mut d2,
                    );
                }
                None => {
                    for k0 in (0..c).step_by(LANES) {
                        let k1 = (k0 + LANES).min(c);
                        centre_lanes(
                            &mut d[k0..k1],
                            (k0..k1).map(|k| f[(i, k)].f64()),
                            &mu[k0..k1],
                            &mut f2,
                            &mut d2,
                        );
                    }
                }
            }
            let f_norm2: f64 = f2.iter().sum();
            let norm = d2.iter().sum::<f64>().sqrt();
            let scale = if !unit {
                1.0
            } else if norm > tolerance * (f_norm2.sqrt() + mu_norm) {
                1.0 / norm
            } else {
                0.0
            };
            // SAFETY: column i is written by this item only, and nothing reads `out` in
            // this phase.
            let col = unsafe { out.column_mut(i, 0) };
            for (x, dk) in col.iter_mut().zip(&d) {
                *x = T::of(dk * scale);
            }
        }
    });
}

/// Up to `LANES` values `xs` centred by `ms` into `ds`; their squares and those of the
/// centred values are added to the lanes `f2` and `d2`.
#[inline(always)]
fn centre_lanes(
    ds: &mut [f64],
    xs: impl Iterator<Item = f64>,
    ms: &[f64],
    f2: &mut [f64; LANES],
    d2: &mut [f64; LANES],
) {
    for (l, ((dk, x), m)) in ds.iter_mut().zip(xs).zip(ms).enumerate() {
        *dk = x - m;
        f2[l] += x * x;
        d2[l] += *dk * *dk;
    }
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
