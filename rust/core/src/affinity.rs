//! The affinity graph and its heat system `M = D - A` (ALGORITHM.md, section 1 steps 1-4;
//! section 2 step 3).
//!
//! Cells (local features, or candidate images for HeR) are the columns of a `(C, N)` matrix
//! of centred vectors. The affinity is their Gram matrix with a zero diagonal, entries
//! between two "dead" cells removed and entries below the threshold removed. A ground node at
//! temperature 0 is attached to every cell with conductance `z = ground * mean{A_ij > 0}`, so
//! `M = D - A` with `D_ii = sum_j A_ij + z` is symmetric, strictly diagonally dominant with a
//! positive diagonal: symmetric positive definite.

use faer::linalg::matmul::triangular::{matmul, BlockStructure};
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, MatMut, MatRef, Par};

use crate::parallel::map_columns_mut;
use crate::real::Real;
use crate::triangle::{self, sum_lanes, sum_squares};

/// How the affinity entries are filtered and the ground conductance chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffinityRules {
    /// Entries below it are set to 0 (`tau`; must be >= 0).
    pub threshold: f64,
    /// The ground conductance is `ground * mean{A_ij : A_ij > 0}` (must be > 0).
    pub ground: f64,
}

/// What building the heat system found out besides `M` itself.
#[derive(Clone, Debug, PartialEq)]
pub struct HeatSystem {
    /// `connected[i]`: cell i has a positive affinity to at least one other cell.
    pub connected: Vec<bool>,
    /// The ground conductance `z`.
    pub z: f64,
}

/// Relative size below which a centred feature counts as zero ("equal to the mean"): a
/// difference of a few roundings of the mean is noise, not a direction (measured: the mean of
/// three equal values can differ from them in the last bit, and normalising that difference
/// would give a full unit vector).
pub const EQUAL_TO_MEAN_ULPS: f64 = 16.0;

/// Writes the rows of `f` (N x C), centred by `mu` and, when `unit`, scaled to unit length,
/// into the columns of `out` (C x N, column-major). The arithmetic is done in `f64`.
///
/// With `unit`, a row equal to `mu` up to rounding (`||f_i - mu|| <= 16 eps (||f_i|| +
/// ||mu||)`, `eps` of `T`) becomes a zero column: its affinity to every cell is 0.
pub fn centre_columns<T: Real>(f: MatRef<'_, T>, mu: &[f64], unit: bool, out: MatMut<'_, T>, par: Par) {
    let c = f.ncols();
    let mu_norm = sum_squares(mu).sqrt();
    let tolerance = EQUAL_TO_MEAN_ULPS * T::epsilon().f64();
    map_columns_mut(out, par, |i, col| {
        let mut d = vec![0.0f64; c];
        let mut f_norm2 = 0.0;
        let row = f.row(i);
        match row.try_as_row_major() {
            Some(r) => {
                for ((dk, x), m) in d.iter_mut().zip(r.as_slice()).zip(mu) {
                    *dk = x.f64() - m;
                }
                if unit {
                    f_norm2 = sum_squares(r.as_slice());
                }
            }
            None => {
                for (k, dk) in d.iter_mut().enumerate() {
                    *dk = row[k].f64() - mu[k];
                    f_norm2 += row[k].f64() * row[k].f64();
                }
            }
        }
        let norm = sum_squares(&d).sqrt();
        let scale = if !unit {
            1.0
        } else if norm > tolerance * (f_norm2.sqrt() + mu_norm) {
            1.0 / norm
        } else {
            0.0
        };
        for (x, dk) in col.iter_mut().zip(&d) {
            *x = T::of(dk * scale);
        }
    });
}

/// Builds `M = D - A` into `m` (N x N, column-major; only its lower triangle is written) from
/// the columns of `cells` (C x N): `A = cells^T cells` (in `T`), `A_ii = 0`, `A_ij = 0` when
/// both cells are dead (`dead`, HeW only) or when `A_ij < threshold`.
///
/// Returns `None` when no affinity is positive (the caller's degenerate case).
pub fn heat_system<T: Real>(
    cells: MatRef<'_, T>,
    dead: Option<&[bool]>,
    rules: AffinityRules,
    mut m: MatMut<'_, T>,
    par: Par,
) -> Option<HeatSystem> {
    let n = cells.ncols();
    matmul(
        m.rb_mut(),
        BlockStructure::StrictTriangularLower,
        Accum::Replace,
        cells.transpose(),
        BlockStructure::Rectangular,
        cells,
        BlockStructure::Rectangular,
        T::of(1.0),
        par,
    );
    let tau = T::of(rules.threshold);
    let zero = T::of(0.0);
    // Filter each column below the diagonal (branch-free: the signs are random) and sum what
    // is kept.
    let below: Vec<(f64, usize)> = map_columns_mut(m.rb_mut(), par, |j, col| {
        let col = &mut col[j + 1..];
        if let Some(dead) = dead.filter(|d| d[j]) {
            for (x, &d) in col.iter_mut().zip(&dead[j + 1..]) {
                if d {
                    *x = zero;
                }
            }
        }
        // tau >= 0, so "positive and not below tau" is one comparison.
        if tau > zero {
            col.iter_mut().for_each(|x| *x = if *x >= tau { *x } else { zero });
        } else {
            col.iter_mut().for_each(|x| *x = if *x > zero { *x } else { zero });
        }
        let count = col.iter().filter(|x| **x > zero).count();
        (sum_lanes(col), count)
    });
    let (total, positives) = below.iter().fold((0.0, 0usize), |(s, c), &(s2, c2)| (s + s2, c + c2));
    if positives == 0 {
        return None;
    }
    let z = rules.ground * total / positives as f64;
    // Row sums of the symmetric A: row i left of the diagonal plus column i below it.
    // All kept entries are positive, so a cell is connected exactly when its degree is.
    let left = triangle::row_sums(m.rb(), par);
    let degree: Vec<f64> = (0..n).map(|i| left[i] + below[i].0).collect();
    let connected = degree.iter().map(|&d| d > 0.0).collect();
    // M = D - A in place: negate the strict lower triangle, write the diagonal.
    map_columns_mut(m, par, |j, col| {
        col[j] = T::of(degree[j] + z);
        for x in &mut col[j + 1..] {
            *x = -*x;
        }
    });
    Some(HeatSystem { connected, z })
}
