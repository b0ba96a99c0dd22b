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

/// Every entry must be finite; the message names the first bad entry. Reads in memory order
/// (row by row for NumPy's row-major arrays): a column-wise scan of a row-major map costs a
/// cache miss per entry.
pub(crate) fn finite<T: Real>(m: MatRef<'_, T>, what: &str) -> Result<()> {
    let bad = |i: usize, j: usize| {
        Err(Error::NonFinite(format!(
            "{what} must be finite, got {:?} at row {i}, column {j}",
            m[(i, j)]
        )))
    };
    let rows_first = m.col_stride().unsigned_abs() <= m.row_stride().unsigned_abs();
    if rows_first {
        for i in 0..m.nrows() {
            if let Some(j) = (0..m.ncols()).find(|&j| !m[(i, j)].is_finite()) {
                return bad(i, j);
            }
        }
    } else {
        for j in 0..m.ncols() {
            if let Some(i) = (0..m.nrows()).find(|&i| !m[(i, j)].is_finite()) {
                return bad(i, j);
            }
        }
    }
    Ok(())
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
