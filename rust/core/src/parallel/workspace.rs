//! Per-thread scratch matrices reused from one feature map (or score block) to the next.
//!
//! A map of N cells needs two N x N matrices, a C x N one and an N x 96 one (about 6 MB at
//! N = 768 in `f32`). Fresh allocations of that size are fresh pages from the kernel, and
//! faulting them in cost about a quarter of HeW's time per map (measured on a 2-core VM), so
//! each thread keeps the buffers of the largest map it has seen. A re-entrant call on the
//! same thread (rayon may run another task while one waits) gets temporary buffers instead.
//!
//! A thread keeps one workspace per scalar type; the one for `T` is picked by its type
//! ([`Any`]), so that the choice stays inside this module rather than in [`Real`]'s public
//! methods.

use std::any::Any;
use std::cell::RefCell;

use faer::MatMut;

use crate::real::Real;

/// Four growable buffers, viewed as column-major matrices.
pub(crate) struct Workspace<T> {
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

    /// A `rows x cols` column-major view for a block of scores, its columns starting on
    /// 64-byte boundaries: with 100 queries the product's stores into unaligned columns
    /// (stride 100 `f32`) made it 20% slower. Contents unspecified.
    pub(crate) fn score_block(&mut self, rows: usize, cols: usize) -> MatMut<'_, T> {
        let lanes = 64 / std::mem::size_of::<T>();
        let stride = rows.next_multiple_of(lanes).max(1);
        let [buf, _, _, _] = self.views([(stride * cols + lanes, 1), (0, 0), (0, 0), (0, 0)]);
        let all = buf
            .col_mut(0)
            .try_as_col_major_mut()
            .expect("a workspace column is contiguous")
            .as_slice_mut();
        let skip = all.as_ptr().align_offset(64).min(lanes);
        MatMut::from_column_major_slice_with_stride_mut(
            &mut all[skip..skip + stride * cols],
            rows,
            cols,
            stride,
        )
    }
}

/// The workspaces of one thread, one per scalar type.
#[derive(Default)]
struct Workspaces {
    f32: Workspace<f32>,
    f64: Workspace<f64>,
}

impl Workspaces {
    /// The workspace for `T`, if `T` is one of the types kept.
    fn of<T: Real>(&mut self) -> Option<&mut Workspace<T>> {
        let Self { f32, f64 } = self;
        (f32 as &mut dyn Any)
            .downcast_mut()
            .or_else(|| (f64 as &mut dyn Any).downcast_mut())
    }
}

thread_local! {
    static WORKSPACES: RefCell<Workspaces> = RefCell::new(Workspaces::default());
}

/// Runs `op` with this thread's workspace for `T` (or a temporary one when it is in use, or
/// for a scalar type other than `f32` and `f64`).
pub(crate) fn with_workspace<T: Real, R>(op: impl FnOnce(&mut Workspace<T>) -> R) -> R {
    WORKSPACES.with(|cell| match cell.try_borrow_mut() {
        Ok(mut all) => match all.of::<T>() {
            Some(ws) => op(ws),
            None => op(&mut Workspace::default()),
        },
        Err(_) => op(&mut Workspace::default()),
    })
}
