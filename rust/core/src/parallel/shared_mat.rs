//! A column-major matrix whose disjoint blocks are written by different threads of a
//! [`crate::parallel::team`] at once.
//!
//! Blocks are handed out as ordinary faer views; the phases of the team are what keeps them
//! disjoint (an item writes only its own block, and reads only blocks that no item of the
//! same phase writes), so creating a view is `unsafe` and each call site says why it is
//! sound.

use std::marker::PhantomData;

use faer::{MatMut, MatRef};

/// A matrix with unit row stride shared by the participants of a team.
pub(crate) struct SharedMat<'a, T> {
    ptr: *mut T,
    nrows: usize,
    ncols: usize,
    col_stride: isize,
    _borrow: PhantomData<&'a mut T>,
}

// SAFETY: a SharedMat is a `&mut` to the matrix split into blocks by the team's phases; the
// callers of `block_mut` and `block` guarantee that no block is written while another view
// of it is alive.
unsafe impl<T: Send> Send for SharedMat<'_, T> {}
unsafe impl<T: Send + Sync> Sync for SharedMat<'_, T> {}

impl<'a, T> SharedMat<'a, T> {
    /// Shares `m`, which must have unit row stride (column-major).
    pub(crate) fn new(m: MatMut<'a, T>) -> Self {
        assert_eq!(m.row_stride(), 1, "a SharedMat must be column-major");
        Self {
            ptr: m.as_ptr_mut(),
            nrows: m.nrows(),
            ncols: m.ncols(),
            col_stride: m.col_stride(),
            _borrow: PhantomData,
        }
    }

    pub(crate) fn nrows(&self) -> usize {
        self.nrows
    }

    fn check(&self, row: usize, col: usize, nrows: usize, ncols: usize) {
        assert!(
            row + nrows <= self.nrows && col + ncols <= self.ncols,
            "block ({row}, {col}) of shape ({nrows}, {ncols}) outside a ({}, {}) matrix",
            self.nrows,
            self.ncols
        );
    }

    /// The block of `nrows x ncols` at (`row`, `col`), writable.
    ///
    /// # Safety
    /// No other view of any part of the block may be alive while this one is.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn block_mut(
        &self,
        row: usize,
        col: usize,
        nrows: usize,
        ncols: usize,
    ) -> MatMut<'_, T> {
        self.check(row, col, nrows, ncols);
        // SAFETY: `check` keeps the block inside the matrix; the caller guarantees that no
        // other view of it is alive.
        MatMut::from_raw_parts_mut(
            self.ptr
                .offset(row as isize + col as isize * self.col_stride),
            nrows,
            ncols,
            1,
            self.col_stride,
        )
    }

    /// The block of `nrows x ncols` at (`row`, `col`), read-only.
    ///
    /// # Safety
    /// No writable view of any part of the block may be alive while this one is.
    pub(crate) unsafe fn block(
        &self,
        row: usize,
        col: usize,
        nrows: usize,
        ncols: usize,
    ) -> MatRef<'_, T> {
        self.check(row, col, nrows, ncols);
        // SAFETY: `check` keeps the block inside the matrix; the caller guarantees that no
        // writable view of it is alive.
        MatRef::from_raw_parts(
            self.ptr
                .offset(row as isize + col as isize * self.col_stride),
            nrows,
            ncols,
            1,
            self.col_stride,
        )
    }

    /// Column `j` from row `row` on, writable.
    ///
    /// # Safety
    /// As for [`Self::block_mut`].
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn column_mut(&self, j: usize, row: usize) -> &mut [T] {
        self.check(row, j, self.nrows - row, 1);
        // SAFETY: as for `block_mut`; a column of unit row stride is contiguous.
        std::slice::from_raw_parts_mut(
            self.ptr.offset(row as isize + j as isize * self.col_stride),
            self.nrows - row,
        )
    }

    /// Column `j` from row `row` on, read-only.
    ///
    /// # Safety
    /// As for [`Self::block`].
    pub(crate) unsafe fn column(&self, j: usize, row: usize) -> &[T] {
        self.check(row, j, self.nrows - row, 1);
        // SAFETY: as for `block`; a column of unit row stride is contiguous.
        std::slice::from_raw_parts(
            self.ptr.offset(row as isize + j as isize * self.col_stride),
            self.nrows - row,
        )
    }
}
