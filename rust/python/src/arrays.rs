//! NumPy arrays in and out, without copies on the way in, and the one float32/float64
//! dispatch every binding shares ([`with_dtype!`] and [`typed`]).
//!
//! The Python layer (`python/heatsearch/_validate.py`) has checked every argument's dtype
//! and shape before a binding is called; the dtype errors here only keep the binding total.

use faer::MatRef;
use heatsearch_core::{Ranking, Real};
use numpy::ndarray::{Array2, ArrayView2};
use numpy::{Element, IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use crate::errors::dtype_error;

/// A 2-D float array of either accepted dtype.
#[derive(FromPyObject)]
pub enum Matrix<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

/// A 1-D float array of either accepted dtype.
#[derive(FromPyObject)]
pub enum Vector<'py> {
    F32(PyReadonlyArray1<'py, f32>),
    F64(PyReadonlyArray1<'py, f64>),
}

impl Matrix<'_> {
    /// The NumPy name of the dtype.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Matrix::F32(_) => f32::NAME,
            Matrix::F64(_) => f64::NAME,
        }
    }
}

/// A scalar type the kernels take (`Real::NAME` is its NumPy name), and how to pick its
/// arrays out of the dtype-tagged ones.
pub trait Float: Real + Element {
    /// The array if it has this dtype, else the array back.
    fn matrix(m: Matrix<'_>) -> Result<PyReadonlyArray2<'_, Self>, Matrix<'_>>;
    /// The vector if it has this dtype, else `None`.
    fn vector(v: Vector<'_>) -> Option<PyReadonlyArray1<'_, Self>>;
}

impl Float for f32 {
    fn matrix(m: Matrix<'_>) -> Result<PyReadonlyArray2<'_, f32>, Matrix<'_>> {
        match m {
            Matrix::F32(a) => Ok(a),
            other => Err(other),
        }
    }
    fn vector(v: Vector<'_>) -> Option<PyReadonlyArray1<'_, f32>> {
        match v {
            Vector::F32(a) => Some(a),
            Vector::F64(_) => None,
        }
    }
}

impl Float for f64 {
    fn matrix(m: Matrix<'_>) -> Result<PyReadonlyArray2<'_, f64>, Matrix<'_>> {
        match m {
            Matrix::F64(a) => Ok(a),
            other => Err(other),
        }
    }
    fn vector(v: Vector<'_>) -> Option<PyReadonlyArray1<'_, f64>> {
        match v {
            Vector::F64(a) => Some(a),
            Vector::F32(_) => None,
        }
    }
}

/// Runs `$body` with the type `$T` bound to the dtype of the [`Matrix`] `$x`, and `$x`
/// rebound to the typed array: the one place a binding branches on float32/float64.
macro_rules! with_dtype {
    ($x:ident, $T:ident => $body:expr) => {
        match $x {
            $crate::arrays::Matrix::F32($x) => {
                type $T = f32;
                $body
            }
            $crate::arrays::Matrix::F64($x) => {
                type $T = f64;
                $body
            }
        }
    };
}
pub(crate) use with_dtype;

/// `m` as an array of `T` (the dtype of the database `X`), or an InvalidDTypeError naming it.
pub fn typed<'py, T: Float>(
    py: Python<'py>,
    m: Matrix<'py>,
    name: &str,
) -> PyResult<PyReadonlyArray2<'py, T>> {
    T::matrix(m).map_err(|m| {
        dtype_error(
            py,
            format!(
                "{name} must have the dtype of X ({}), got {}",
                T::NAME,
                m.dtype_name()
            ),
        )
    })
}

/// A faer view of a NumPy array with its strides (row-major, Fortran order, negative or
/// non-unit strides alike): no copy, no reordering.
pub fn mat_ref<'a, T>(a: &'a ArrayView2<'_, T>) -> MatRef<'a, T> {
    let (rows, cols) = a.dim();
    let strides = a.strides();
    // SAFETY: the pointer, shape and strides are the array's own, the view borrows the
    // array for 'a, and the array is read-only borrowed (PyReadonlyArray) for that long.
    unsafe { MatRef::from_raw_parts(a.as_ptr(), rows, cols, strides[0], strides[1]) }
}

/// A `(rows, cols)` row-major vector as a NumPy array (no copy).
pub fn to_array<T: Element>(
    py: Python<'_>,
    v: Vec<T>,
    rows: usize,
    cols: usize,
) -> Bound<'_, PyArray2<T>> {
    Array2::from_shape_vec((rows, cols), v)
        .expect("rows * cols entries")
        .into_pyarray(py)
}

/// `(ranks int64, scores)`, as the search and re-ranking bindings return them.
pub type Ranked<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// A ranking as `(ranks int64, scores)` arrays.
pub fn ranking_to_py<'py, T: Float>(py: Python<'py>, r: Ranking<T>) -> Ranked<'py> {
    let (rows, cols) = (r.rows, r.cols);
    (
        to_array(py, r.ranks, rows, cols).into_any(),
        to_array(py, r.scores, rows, cols).into_any(),
    )
}
