//! NumPy arrays in and out, without copies on the way in.

use faer::MatRef;
use numpy::ndarray::ArrayView2;
use numpy::{PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

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
