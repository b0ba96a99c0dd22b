//! The core's data checks for the Python layer: `check_finite`, `check_rankings`.
//!
//! The kernels run these checks inside their own passes; the Python functions that have no
//! kernel (the NumPy reference, query expansion, pooling, evaluation) call them here, so a
//! mistake gets the same message whichever path meets it.

use heatsearch_core::validate;
use numpy::{PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use crate::arrays::{mat_ref, with_dtype, Float, Matrix, Vector};
use crate::errors::kernel;

/// A float32/float64 vector or matrix.
#[derive(FromPyObject)]
enum FloatArray<'py> {
    Matrix(Matrix<'py>),
    Vector(Vector<'py>),
}

/// InvalidInputError naming the first NaN or infinity of `a` (a vector by index, a matrix by
/// row and column, in row-major order).
#[pyfunction]
#[pyo3(signature = (a, name))]
fn check_finite(py: Python<'_>, a: FloatArray<'_>, name: &str) -> PyResult<()> {
    match a {
        FloatArray::Matrix(m) => {
            with_dtype!(m, T => {
                let v = m.as_array();
                let mr = mat_ref(&v);
                kernel(py, || validate::finite::<T>(mr, name))
            })
        }
        FloatArray::Vector(Vector::F32(v)) => finite_vector(py, v, name),
        FloatArray::Vector(Vector::F64(v)) => finite_vector(py, v, name),
    }
}

fn finite_vector<T: Float>(py: Python<'_>, v: PyReadonlyArray1<'_, T>, name: &str) -> PyResult<()> {
    let copy: Vec<T>;
    let values = match v.as_slice() {
        Ok(s) => s,
        Err(_) => {
            copy = v.as_array().iter().copied().collect();
            &copy
        }
    };
    kernel(py, || validate::finite_vector(values, name))
}

/// InvalidInputError naming the first NaN or infinity (smallest row, then column) in the rows
/// of the matrix `a` that `ranks (nq, m)` names. The entries of `ranks` must be in
/// `0..a.nrows()`: checked here (a ValueError otherwise), as the kernel's precondition.
#[pyfunction]
#[pyo3(signature = (a, ranks, name))]
fn check_finite_rows(
    py: Python<'_>,
    a: Matrix<'_>,
    ranks: PyReadonlyArray2<'_, i64>,
    name: &str,
) -> PyResult<()> {
    let rv = ranks.as_array();
    let r = mat_ref(&rv);
    with_dtype!(a, T => {
        let v = a.as_array();
        let m = mat_ref(&v);
        kernel(py, || {
            validate::rankings(r, Some(m.nrows()), "ranks")?;
            validate::finite_rows::<T>(m, r, name)
        })
    })
}

/// InvalidInputError saying that the inner products `what` ("Q and X") overflow the dtype
/// when `products` (2-D) holds a non-finite value.
#[pyfunction]
#[pyo3(signature = (products, what))]
fn check_products(py: Python<'_>, products: Matrix<'_>, what: &str) -> PyResult<()> {
    with_dtype!(products, T => {
        let v = products.as_array();
        let m = mat_ref(&v);
        kernel(py, || validate::products::<T>(m, what))
    })
}

/// InvalidInputError naming the first entry (row-major) of the rankings `(nq, m)` outside
/// `[0, n)` (`< 0` for `n = None`) or repeated within its row.
#[pyfunction]
#[pyo3(signature = (ranks, n, name))]
fn check_rankings(
    py: Python<'_>,
    ranks: PyReadonlyArray2<'_, i64>,
    n: Option<usize>,
    name: &str,
) -> PyResult<()> {
    let v = ranks.as_array();
    let r = mat_ref(&v);
    kernel(py, || validate::rankings(r, n, name))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(check_finite, m)?)?;
    m.add_function(wrap_pyfunction!(check_rankings, m)?)?;
    m.add_function(wrap_pyfunction!(check_finite_rows, m)?)?;
    m.add_function(wrap_pyfunction!(check_products, m)?)?;
    Ok(())
}
