//! Argument checks shared by the public entry points. Messages say what was expected and
//! what came in.

use faer::MatRef;

use crate::error::{Error, Result};
use crate::real::Real;

/// A matrix of `what` must have at least one row and one column.
pub(crate) fn non_empty<T>(m: MatRef<'_, T>, what: &str) -> Result<()> {
    if m.nrows() == 0 || m.ncols() == 0 {
        return Err(Error::Shape(format!(
            "{what} must have at least one row and one column, got shape ({}, {})",
            m.nrows(),
            m.ncols()
        )));
    }
    Ok(())
}

/// NaN or infinity anywhere in `m` is an error naming the first bad entry in row-major
/// order. One branch-free pass in memory order (rows or columns, whichever is contiguous: a
/// column-wise scan of a row-major database costs a cache miss per entry); the entry is
/// located only when there is one.
pub(crate) fn finite<T: Real>(m: MatRef<'_, T>, what: &str) -> Result<()> {
    let ok = if let Some(r) = m.try_as_row_major() {
        (0..m.nrows()).all(|i| all_finite(r.row(i).as_slice()))
    } else if let Some(c) = m.try_as_col_major() {
        (0..m.ncols()).all(|j| all_finite(c.col(j).as_slice()))
    } else {
        (0..m.nrows()).all(|i| (0..m.ncols()).all(|j| m[(i, j)].is_finite()))
    };
    if ok {
        return Ok(());
    }
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            let v = m[(i, j)];
            if !v.is_finite() {
                return Err(Error::NonFinite(format!("{what} must be finite, got {v:?} at row {i}, column {j}")));
            }
        }
    }
    Ok(())
}

/// Whether every value is finite (branch-free within chunks of 64).
#[inline]
pub(crate) fn all_finite<T: Real>(v: &[T]) -> bool {
    v.chunks(64).all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
}

/// A vector must be finite and of length `len`.
pub(crate) fn vector<T: Real>(v: &[T], len: usize, what: &str) -> Result<()> {
    if v.len() != len {
        return Err(Error::Shape(format!(
            "{what} must have length {len} (the number of channels), got {}",
            v.len()
        )));
    }
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Error::NonFinite(format!("{what} must be finite, got {x:?} at index {i}")));
    }
    Ok(())
}

/// `threshold >= 0` and `ground > 0`, both finite: otherwise `M = D - A` is not SPD.
pub(crate) fn heat_params(threshold: f64, ground: f64) -> Result<()> {
    if !(threshold.is_finite() && threshold >= 0.0) {
        return Err(Error::Value(format!(
            "threshold must be a finite number >= 0 (a negative one keeps negative affinities \
             and the heat system is no longer positive definite), got {threshold}"
        )));
    }
    if !(ground.is_finite() && ground > 0.0) {
        return Err(Error::Value(format!(
            "ground must be a finite number > 0 (without a ground conductance the heat system \
             is singular), got {ground}"
        )));
    }
    Ok(())
}
