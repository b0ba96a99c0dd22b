//! Loops that run on rayon's current pool when asked to (`Par::Rayon`) and sequentially
//! otherwise (`Par::Seq`: a map of a batch, already on a thread of its own). Either way each
//! item is computed the same way, so results do not depend on the number of threads.

use faer::{ColMut, MatMut, Par};
use rayon::prelude::*;

/// `(0..n).map(op)`, in parallel when `par` says so.
pub(crate) fn map_indices<R: Send>(n: usize, par: Par, op: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    match par {
        Par::Seq => (0..n).map(op).collect(),
        _ => (0..n).into_par_iter().map(op).collect(),
    }
}

/// `op(j, column j)` for every column of a column-major matrix, in parallel when `par` says so.
pub(crate) fn map_columns_mut<T: Send, R: Send>(
    m: MatMut<'_, T>,
    par: Par,
    op: impl Fn(usize, &mut [T]) -> R + Sync + Send,
) -> Vec<R> {
    match par {
        Par::Seq => m.col_iter_mut().enumerate().map(|(j, c)| op(j, slice(c))).collect(),
        _ => m.par_col_iter_mut().enumerate().map(|(j, c)| op(j, slice(c))).collect(),
    }
}

fn slice<T>(c: ColMut<'_, T>) -> &mut [T] {
    c.try_as_col_major_mut().expect("columns of a column-major matrix are contiguous").as_slice_mut()
}
