//! Heat solves on the SPD system `M = D - A` (ALGORITHM.md, section 1 steps 4-5, and the
//! "exact, cheaper computation" paragraph).
//!
//! With `G = L^-1 = M^-1 D` (`L = I - D^-1 A`), `G_ij / G_jj = (M^-1)_ij / (M^-1)_jj`, so the
//! system temperature of source j is
//! `T_j = (1 / (N+1)) * sum_{i != j} (M^-1)_ij / (M^-1)_jj`.
//! One Cholesky factor `M = R R^T` (R lower) and its inverse `V = R^-1` give all of it:
//! `M^-1 = V^T V`, so `(M^-1)_jj = ||V[:, j]||^2` (the squared norm of COLUMN j: R is lower)
//! and `sum_{i != j} (M^-1)_ij = sum_k V_kj (r_k - V_kj)` with `r_k` the k-th row sum of `V`.
//! `V` is entrywise non-negative (`M` is an M-matrix), so this sum of products has no
//! cancellation, unlike `s_j / g_j - 1` with `s = M^-1 1`: for weakly connected cells it keeps
//! `f32` input accurate. Cost: `N^3/3` (Cholesky) `+ N^3/3` (triangular inverse) flops.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{MatMut, MatRef, Par};

use crate::error::{Error, Result};
use crate::parallel::map_indices;
use crate::real::Real;
use crate::triangle::{self, column, dot_with, sum_squares};

/// Factors `M` (lower triangle read) in place into its lower Cholesky factor.
pub fn cholesky<T: Real>(m: MatMut<'_, T>, par: Par) -> Result<()> {
    let n = m.nrows();
    let mut mem = MemBuffer::new(cholesky_in_place_scratch::<T>(n, par, Default::default()));
    cholesky_in_place(m, Default::default(), par, MemStack::new(&mut mem), Default::default())
        .map(|_| ())
        .map_err(|e| {
            Error::Numerical(format!(
                "the heat system M = D - A should be positive definite but its Cholesky \
                 factorisation failed ({e:?}); please report this input"
            ))
        })
}

/// Per source j, `T_j = (1/(N+1)) sum_{i != j} (M^-1)_ij / (M^-1)_jj`, from the lower
/// Cholesky factor of `M`; `v` (N x N, column-major) is scratch for its inverse.
///
/// Entries are `f64`; a cell with no path to any other cell gets exactly 0.
pub fn system_temperatures<T: Real>(factor: MatRef<'_, T>, mut v: MatMut<'_, T>, par: Par) -> Vec<f64> {
    let n = factor.nrows();
    invert_lower_triangular(v.rb_mut(), factor, par);
    let v = v.rb();
    // r_k: row sums of V (strict lower part plus the diagonal).
    let off = triangle::row_sums(v, par);
    let r: Vec<f64> = (0..n).map(|k| off[k] + v[(k, k)].f64()).collect();
    let scale = 1.0 / (n as f64 + 1.0);
    map_indices(n, par, |j| {
        let col = column(v, j);
        let vjj = col[j].f64();
        let g = vjj * vjj + sum_squares(&col[j + 1..]);
        let h = vjj * off[j] + dot_with(&col[j + 1..], &r[j + 1..], |x, rk| x * (rk - x));
        h / g * scale
    })
}
