//! `y = M x` for a symmetric `M` stored as the lower triangle of a column-major matrix: the
//! matrix-vector product that is the whole cost of HeR's conjugate gradient.
//!
//! Each column is read once, for a dot product (the row above the diagonal) and an update
//! (the column below it), with `f64` vectors whatever the matrix's type. In the baseline
//! (SSE2) build it took 1.75 ms a query instead of 1.2 ms (k = 800, `f32`), hence one copy per
//! level ([`super::dispatch`]); the arithmetic, and so the result, is bit for bit the same on every
//! level.

use faer::MatRef;

use crate::real::Real;
use crate::reduce::column;

/// Independent `f64` accumulators of the dot products (one AVX-512 register). The loop
/// streams the matrix (1.3 MB in `f32` at k = 800) from cache at about 4 entries per ns; 16
/// or 32 accumulators measured no faster.
const SYMV_LANES: usize = 8;

super::dispatch! {
    /// `y = M x`, reading only the lower triangle (diagonal included) of the column-major
    /// `m`. Eight `f64` lanes, in a fixed order.
    pub(crate) fn symv_lower<T: Real>(m: MatRef<'_, T>, x: &[f64], y: &mut [f64]) => body
}

#[inline(always)]
fn body<T: Real>(m: MatRef<'_, T>, x: &[f64], y: &mut [f64]) {
    let n = x.len();
    y.iter_mut().for_each(|v| *v = 0.0);
    for j in 0..n {
        let col = &column(m, j)[j..];
        let xj = x[j];
        let (below, xs, ys) = (&col[1..], &x[j + 1..], &mut y[j + 1..]);
        let mut acc = [0.0f64; SYMV_LANES];
        let split = below.len() - below.len() % SYMV_LANES;
        for ((a, xv), yv) in below[..split]
            .chunks_exact(SYMV_LANES)
            .zip(xs[..split].chunks_exact(SYMV_LANES))
            .zip(ys[..split].chunks_exact_mut(SYMV_LANES))
        {
            for l in 0..SYMV_LANES {
                let aij = a[l].f64();
                acc[l] += aij * xv[l];
                yv[l] += aij * xj;
            }
        }
        let mut tail = 0.0;
        for ((a, xv), yv) in below[split..]
            .iter()
            .zip(&xs[split..])
            .zip(&mut ys[split..])
        {
            let aij = a.f64();
            tail += aij * xv;
            *yv += aij * xj;
        }
        y[j] += col[0].f64() * xj + acc.iter().sum::<f64>() + tail;
    }
}
