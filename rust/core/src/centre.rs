//! Centring of cells by a mean, the first step of both heat systems (docs/ALGORITHM.md section 1
//! step 1, section 2 step 1), with the one rule for a cell "equal to the mean".
//!
//! HeW centres a map's local features by a given or the map's own mean and scales them to
//! unit length ([`centre_columns`], shared by a team); HeR centres a query's candidates and
//! the query by their own mean, without scaling ([`centre_candidates`], one query per
//! thread). Either way the centred vectors are the columns of a `(C, N)` matrix whose Gram
//! matrix is the affinity, and the arithmetic is done in `f64` whatever the input's type.
//!
//! A cell whose centred vector is a few roundings of the mean is not a direction but noise:
//! normalised, it would be a full unit vector (the mean of three equal values can differ
//! from them in the last bit); unnormalised, its Gram products with the others would be
//! "affinities" of order `eps^2` that decide a ranking at random. Such a cell becomes a zero
//! column, affinity 0 to every other: `||f_i - mu|| <= 16 eps (||f_i|| + ||mu||)`, `eps` of
//! the input's type.

use faer::reborrow::ReborrowMut;
use faer::{MatMut, MatRef, RowRef};

use crate::parallel::shared_mat::SharedMat;
use crate::parallel::team::Crew;
use crate::real::Real;
use crate::reduce::{sum_squares, LANES};

/// Relative size below which a centred cell counts as zero, in units of the input type's
/// machine epsilon (see the module docs).
pub const EQUAL_TO_MEAN_ULPS: f64 = 16.0;

/// Columns per item of HeW's centring phase.
const COLUMNS_PER_ITEM: usize = 16;

/// Writes the rows of `f` (N x C), centred by `mu` and scaled to unit length, into the columns
/// of `out` (C x N, column-major), in one phase of the team. A row equal to `mu` up to
/// rounding becomes a zero column.
pub(crate) fn centre_columns<T: Real>(
    crew: &Crew<'_>,
    f: MatRef<'_, T>,
    mu: &[f64],
    out: &SharedMat<'_, T>,
) {
    let (n, c) = (f.nrows(), f.ncols());
    let mu_norm = sum_squares(mu).sqrt();
    crew.phase(n.div_ceil(COLUMNS_PER_ITEM), |item| {
        let mut centred = vec![0.0f64; c];
        let mut buf = Vec::new();
        for i in item * COLUMNS_PER_ITEM..((item + 1) * COLUMNS_PER_ITEM).min(n) {
            let (row_norm2, centred_norm2) =
                centre_row(row_slice(f.row(i), &mut buf), mu, &mut centred);
            let norm = centred_norm2.sqrt();
            let scale = if differs_from_mean::<T>(row_norm2, norm, mu_norm) {
                1.0 / norm
            } else {
                0.0
            };
            // SAFETY: column i is written by this item only, and nothing reads `out` in
            // this phase.
            let col = unsafe { out.column_mut(i, 0) };
            for (x, dk) in col.iter_mut().zip(&centred) {
                *x = T::of(dk * scale);
            }
        }
    });
}

/// Writes the candidates' rows (rows `candidates` of `x`) and the query (last), centred by
/// the mean of these `k + 1` rows, into the columns of `out` (`d x (k+1)`, column-major). A
/// row equal to the mean up to rounding becomes a zero column.
///
/// HeR's temperatures do not depend on the scale of the rows (`A`, `z` and `D` all scale by
/// its square), so rows far from unit scale are brought near it by a power of two
/// ([`power_of_two_scale`]): `f32` descriptors of size 1e19 no longer overflow the Gram
/// products, nor do ones of size 1e-25 underflow them. A power of two is exact, and rows
/// near unit scale are not scaled at all: their results are unchanged to the bit.
pub(crate) fn centre_candidates<T: Real>(
    x: MatRef<'_, T>,
    query: RowRef<'_, T>,
    candidates: &[usize],
    mut out: MatMut<'_, T>,
) {
    let d = x.ncols();
    let size = candidates.len() + 1;
    let row_of = |j: usize| {
        if j < candidates.len() {
            x.row(candidates[j])
        } else {
            query
        }
    };
    let mut mean = vec![0.0f64; d];
    let mut largest = 0.0f64;
    for j in 0..size {
        largest = largest.max(add_row(row_of(j), &mut mean));
    }
    mean.iter_mut().for_each(|v| *v /= size as f64);
    let mean_norm = sum_squares(&mean).sqrt();
    let scale = power_of_two_scale(largest);
    let mut buf = Vec::new();
    let mut centred = vec![0.0f64; d];
    for j in 0..size {
        let (row_norm2, centred_norm2) =
            centre_row(row_slice(row_of(j), &mut buf), &mean, &mut centred);
        let col = out
            .rb_mut()
            .col_mut(j)
            .try_as_col_major_mut()
            .expect("workspace columns are contiguous")
            .as_slice_mut();
        if differs_from_mean::<T>(row_norm2, centred_norm2.sqrt(), mean_norm) {
            col.iter_mut()
                .zip(&centred)
                .for_each(|(o, c)| *o = T::of(*c * scale));
        } else {
            col.iter_mut().for_each(|o| *o = T::of(0.0));
        }
    }
}

/// The power of two that brings values whose largest magnitude is `largest` near 1, or 1
/// when they are within `2^±20` of it (then nothing is rescaled).
fn power_of_two_scale(largest: f64) -> f64 {
    if largest == 0.0 || !largest.is_finite() {
        return 1.0;
    }
    let e = largest.log2().floor();
    if e.abs() <= 20.0 {
        1.0
    } else {
        (-e).exp2()
    }
}

/// Whether a centred cell of norm `centred_norm` is a direction rather than rounding noise of
/// the mean (of norm `mean_norm`); `row_norm2`: the squared norm of the cell before centring.
#[inline]
fn differs_from_mean<T: Real>(row_norm2: f64, centred_norm: f64, mean_norm: f64) -> bool {
    centred_norm > EQUAL_TO_MEAN_ULPS * T::epsilon().f64() * (row_norm2.sqrt() + mean_norm)
}

/// A row as a slice: itself when contiguous, else copied into `buf`.
fn row_slice<'a, T: Real>(row: RowRef<'a, T>, buf: &'a mut Vec<T>) -> &'a [T] {
    match row.try_as_row_major() {
        Some(r) => r.as_slice(),
        None => {
            buf.clear();
            buf.extend((0..row.ncols()).map(|c| row[c]));
            buf
        }
    }
}

/// Adds a row to an `f64` accumulator.
fn add_row<T: Real>(row: RowRef<'_, T>, acc: &mut [f64]) -> f64 {
    let mut largest = 0.0f64;
    let mut add = |a: &mut f64, v: f64| {
        *a += v;
        largest = largest.max(v.abs());
    };
    match row.try_as_row_major() {
        Some(r) => acc
            .iter_mut()
            .zip(r.as_slice())
            .for_each(|(a, v)| add(a, v.f64())),
        None => acc
            .iter_mut()
            .enumerate()
            .for_each(|(c, a)| add(a, row[c].f64())),
    }
    largest
}

/// `centred = row - mean` in `f64`, in one pass with the squared norms of the row and of its
/// centred version, `(||row||^2, ||centred||^2)`: eight lanes each, the last `len % 8`
/// entries added to the first lanes, so that the sums are taken in a fixed order.
#[inline(always)]
fn centre_row<T: Real>(row: &[T], mean: &[f64], centred: &mut [f64]) -> (f64, f64) {
    let (mut r2, mut c2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let split = row.len() - row.len() % LANES;
    for ((xs, ms), cs) in row[..split]
        .chunks_exact(LANES)
        .zip(mean[..split].chunks_exact(LANES))
        .zip(centred[..split].chunks_exact_mut(LANES))
    {
        for l in 0..LANES {
            let x = xs[l].f64();
            cs[l] = x - ms[l];
            r2[l] += x * x;
            c2[l] += cs[l] * cs[l];
        }
    }
    for (l, ((x, m), c)) in row[split..]
        .iter()
        .zip(&mean[split..])
        .zip(&mut centred[split..])
        .enumerate()
    {
        let x = x.f64();
        *c = x - m;
        r2[l] += x * x;
        c2[l] += *c * *c;
    }
    (r2.iter().sum(), c2.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_equal_to_the_mean_up_to_rounding_is_a_zero_column() {
        // Three equal f64 rows: their mean may differ from them in the last bit.
        let v = [0.1f64, 0.7, 0.3, 0.9, 0.2, 0.5, 0.4, 0.8, 0.6];
        let x = faer::Mat::from_fn(3, v.len(), |_, j| v[j]);
        let query = faer::Mat::from_fn(1, v.len(), |_, j| v[j] + if j == 0 { 1.0 } else { 0.0 });
        let mut out = faer::Mat::<f64>::zeros(v.len(), 4);
        centre_candidates(x.as_ref(), query.row(0), &[0, 1, 2], out.as_mut());
        // Mean = v + e_0 / 4: the candidates are -e_0 / 4, the query 3 e_0 / 4, up to rounding.
        for j in 0..3 {
            assert!((out[(0, j)] + 0.25).abs() < 1e-15);
        }
        assert!((out[(0, 3)] - 0.75).abs() < 1e-15);
        // With the query equal to them too, every centred row is noise: all zero.
        let same = faer::Mat::from_fn(1, v.len(), |_, j| v[j]);
        centre_candidates(x.as_ref(), same.row(0), &[0, 1, 2], out.as_mut());
        assert!(out.col_iter().all(|c| c.iter().all(|&x| x == 0.0)));
    }
}
