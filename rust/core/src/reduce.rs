//! The `f64` reductions the kernels share: sums of products in eight independent lanes (so
//! that the compiler vectorises them without reassociating anything), each taken in a fixed
//! order, so that results do not depend on the number of threads; and the columns of
//! column-major matrices as the slices they read.

use faer::MatRef;

use crate::real::Real;

/// Lanes of the vectorised f64 sums.
pub(crate) const LANES: usize = 8;

/// Column `j` of a column-major matrix as a slice.
pub(crate) fn column<'a, T: Real>(m: MatRef<'a, T>, j: usize) -> &'a [T] {
    m.col(j)
        .try_as_col_major()
        .expect("columns of a column-major matrix are contiguous")
        .as_slice()
}

/// `sum_k op(x_k, y_k)` in `f64` over two equally long slices, in eight lanes.
#[inline(always)]
pub(crate) fn dot_with<T: Real>(x: &[T], y: &[f64], op: impl Fn(f64, f64) -> f64) -> f64 {
    debug_assert_eq!(x.len(), y.len());
    let mut acc = [0.0f64; LANES];
    let (xc, xr) = x.split_at(x.len() - x.len() % LANES);
    let (yc, yr) = y.split_at(xc.len());
    for (xs, ys) in xc.chunks_exact(LANES).zip(yc.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += op(xs[l].f64(), ys[l]);
        }
    }
    let mut tail = 0.0;
    for (a, b) in xr.iter().zip(yr) {
        tail += op(a.f64(), *b);
    }
    acc.iter().sum::<f64>() + tail
}

/// `sum_k x_k^2` in `f64`, in eight lanes.
#[inline(always)]
pub(crate) fn sum_squares<T: Real>(x: &[T]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|v| v.f64() * v.f64()).sum();
    for xs in chunks {
        for l in 0..LANES {
            acc[l] += xs[l].f64() * xs[l].f64();
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `sum_k a_k b_k` of two `f64` slices, in eight lanes.
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    dot_with(a, b, |x, y| x * y)
}
