//! Per-thread scratch matrices reused from one feature map to the next.
//!
//! A map of N cells needs two N x N matrices, a C x N one and an N x 96 one (about 6 MB at
//! N = 768 in `f32`). Fresh allocations of that size are fresh pages from the kernel, and faulting them
//! in cost about a quarter of HeW's time per map (measured on a 2-core VM), so each thread
//! keeps the buffers of the largest map it has seen. A re-entrant call on the same thread
//! (rayon may run another task while one waits) gets temporary buffers instead.

use std::cell::RefCell;

use faer::MatMut;

use crate::real::Real;

/// Four growable buffers, viewed as column-major matrices.
pub struct Workspace<T> {
    bufs: [Vec<T>; 4],
}

impl<T> Default for Workspace<T> {
    fn default() -> Self {
        Self {
            bufs: [Vec::new(), Vec::new(), Vec::new(), Vec::new()],
        }
    }
}

fn view<T: Real>(buf: &mut Vec<T>, (rows, cols): (usize, usize)) -> MatMut<'_, T> {
    if buf.len() < rows * cols {
        buf.resize(rows * cols, T::of(0.0));
    }
    MatMut::from_column_major_slice_mut(&mut buf[..rows * cols], rows, cols)
}

impl<T: Real> Workspace<T> {
    /// Column-major views of the given shapes; contents are unspecified.
    pub(crate) fn views(&mut self, shapes: [(usize, usize); 4]) -> [MatMut<'_, T>; 4] {
        let [a, b, c, d] = &mut self.bufs;
        [
            view(a, shapes[0]),
            view(b, shapes[1]),
            view(c, shapes[2]),
            view(d, shapes[3]),
        ]
    }
}

/// The workspaces of one thread, one per scalar type.
#[derive(Default)]
#[doc(hidden)]
pub struct Workspaces {
    pub(crate) f32: Workspace<f32>,
    pub(crate) f64: Workspace<f64>,
}

thread_local! {
    static WORKSPACES: RefCell<Workspaces> = RefCell::new(Workspaces::default());
}

/// Runs `op` with this thread's workspace for `T` (or a temporary one when it is in use).
pub(crate) fn with_workspace<T: Real, R>(op: impl FnOnce(&mut Workspace<T>) -> R) -> R {
    WORKSPACES.with(|cell| match cell.try_borrow_mut() {
        Ok(mut all) => op(T::workspace(&mut all)),
        Err(_) => op(&mut Workspace::default()),
    })
}
