//! NumPy arrays in and out, without copies on the way in; the dtype dispatch every binding
//! shares.

use faer::MatRef;
use heatsearch_core::{Ranking, Real};
use numpy::ndarray::{Array2, ArrayView2};
use numpy::{Element, IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyType;

/// A scalar type the kernels take, with its NumPy name.
pub trait Float: Real + Element {
    const NAME: &'static str;
}
impl Float for f32 {
    const NAME: &'static str = "float32";
}
impl Float for f64 {
    const NAME: &'static str = "float64";
}

/// A 2-D float array of either accepted dtype.
#[derive(FromPyObject)]
pub enum Matrix<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
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

/// Borrows an optional 1-D array of element type `T` as a slice (copying only when it is
/// not contiguous). A mean of another dtype is a TypeError naming the expected one.
pub fn vector<T: numpy::Element + Copy>(
    v: Option<&Bound<'_, PyAny>>,
    what: &str,
    dtype: &str,
) -> PyResult<Option<Vec<T>>> {
    let Some(v) = v else { return Ok(None) };
    let arr: PyReadonlyArray1<'_, T> = v.extract().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "{what} must be a 1-D {dtype} array (the dtype of the feature maps)"
        ))
    })?;
    Ok(Some(arr.as_array().iter().copied().collect()))
}

/// The dtype name of a matrix.
pub fn dtype_name(m: &Matrix<'_>) -> &'static str {
    match m {
        Matrix::F32(_) => f32::NAME,
        Matrix::F64(_) => f64::NAME,
    }
}

/// `heatsearch.errors.InvalidDTypeError(message)`.
pub fn dtype_error(py: Python<'_>, message: String) -> PyErr {
    match py
        .import("heatsearch.errors")
        .and_then(|m| m.getattr("InvalidDTypeError"))
        .and_then(|c| Ok(c.cast_into::<PyType>()?))
    {
        Ok(class) => PyErr::from_type(class, message),
        Err(e) => e,
    }
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

/// A ranking as `(ranks int64, scores)` arrays.
pub fn ranking_to_py<'py, T: Float>(
    py: Python<'py>,
    r: Ranking<T>,
) -> (Bound<'py, PyAny>, Bound<'py, PyAny>) {
    let (rows, cols) = (r.rows, r.cols);
    (
        to_array(py, r.ranks, rows, cols).into_any(),
        to_array(py, r.scores, rows, cols).into_any(),
    )
}
