//! Heat solves on the SPD system `M = D - A` (docs/ALGORITHM.md, section 1 steps 4-5, and the
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
//! HeW computes `R` and `V` together, tile by tile, as one task graph that the cores share
//! (`parallel::tiled_cholesky`); this file turns them into temperatures
//! ([`system_temperatures`]). faer's own Cholesky and triangular inverse are faster on one
//! core at N = 768 than split over two (measured), because each of their parallel steps pays
//! a rayon wake-up. HeR solves one small system per query and thread, by conjugate gradient
//! (`cg`); its fallback is faer's Cholesky factor here ([`solve_last_heated`]).

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{MatMut, Par};

use crate::error::{Error, Result};
use crate::parallel::shared_mat::SharedMat;
use crate::parallel::team::Crew;
use crate::real::Real;
use crate::reduce::{column, dot_with, sum_squares};

pub(crate) fn not_positive_definite(detail: impl std::fmt::Debug) -> Error {
    Error::Numerical(format!(
        "the heat system M = D - A should be positive definite but its Cholesky \
         factorisation failed ({detail:?}); please report this input"
    ))
}

/// Factors `M` (lower triangle read) in place into its lower Cholesky factor.
fn cholesky<T: Real>(m: MatMut<'_, T>, par: Par) -> Result<()> {
    let n = m.nrows();
    let mut mem = MemBuffer::new(cholesky_in_place_scratch::<T>(n, par, Default::default()));
    let factored = cholesky_in_place(
        m,
        Default::default(),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    );
    crate::simd::zero_upper();
    factored.map(|_| ()).map_err(not_positive_definite)
}

/// Per source j, `T_j = (1/(N+1)) sum_{i != j} (M^-1)_ij / (M^-1)_jj`, from `V = L^-1` (the lower
/// triangle of `v`, N x N) with `M = L L^T`, and `off`, the row sums of V's strict lower triangle
/// (what [`crate::parallel::tiled_cholesky::cholesky_inverse`] returns). Nothing may write `v`
/// meanwhile.
///
/// Entries are `f64`; a cell with no path to any other cell gets exactly 0.
pub(crate) fn system_temperatures<T: Real>(
    crew: &Crew<'_>,
    v: &SharedMat<'_, T>,
    off: &[f64],
) -> Vec<f64> {
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
                // SAFETY: a read-only phase.
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

/// Solves `M x = M_qq e_q` (`q` the last node: HeR's query) with the lower Cholesky factor `M = L
/// L^T` in `T`, factoring `m` (its lower triangle) in place. Forward substitution of a multiple of
/// the last unit vector is one division: `y = (M_qq / L_qq) e_q`; back substitution `L^T x = y`
/// runs down the columns of `L` with `f64` accumulation.
pub(crate) fn solve_last_heated<T: Real>(mut m: MatMut<'_, T>) -> Result<Vec<f64>> {
    let size = m.nrows();
    let q = size - 1;
    let mqq = m[(q, q)].f64();
    cholesky(m.rb_mut(), Par::Seq)?;
    let l = m.rb();
    let mut x = vec![0.0f64; size];
    let lqq = l[(q, q)].f64();
    x[q] = mqq / (lqq * lqq);
    for i in (0..q).rev() {
        let col = column(l, i);
        x[i] = -dot_with(&col[i + 1..], &x[i + 1..], |a, b| a * b) / col[i].f64();
    }
    Ok(x)
}
