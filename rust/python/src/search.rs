//! Exact inner-product search: `search`. Also the helpers the kNN and diffusion bindings
//! share (dtype dispatch of a pair of matrices, rankings out as NumPy arrays).

use heatsearch_core::{Ranking, Real};
use numpy::ndarray::Array2;
use numpy::{Element, IntoPyArray, PyArray2};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::arrays::{mat_ref, Matrix};
use crate::errors::IntoPy;

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

/// `heatsearch.errors.InvalidDTypeError(message)`.
pub fn dtype_error(py: Python<'_>, message: String) -> PyErr {
    match py.import("heatsearch.errors").and_then(|m| m.getattr("InvalidDTypeError")).and_then(|c| Ok(c.cast_into::<PyType>()?)) {
        Ok(class) => PyErr::from_type(class, message),
        Err(e) => e,
    }
}

/// The dtype name of a matrix.
pub fn dtype_name(m: &Matrix<'_>) -> &'static str {
    match m {
        Matrix::F32(_) => "float32",
        Matrix::F64(_) => "float64",
    }
}

/// A `(rows, cols)` row-major vector as a NumPy array (no copy).
pub fn to_array<T: Element>(py: Python<'_>, v: Vec<T>, rows: usize, cols: usize) -> Bound<'_, PyArray2<T>> {
    Array2::from_shape_vec((rows, cols), v).expect("rows * cols entries").into_pyarray(py)
}

/// A ranking as `(ranks int64, scores)` arrays.
pub fn ranking_to_py<'py, T: Float>(py: Python<'py>, r: Ranking<T>) -> (Bound<'py, PyAny>, Bound<'py, PyAny>) {
    let (rows, cols) = (r.rows, r.cols);
    (to_array(py, r.ranks, rows, cols).into_any(), to_array(py, r.scores, rows, cols).into_any())
}

fn run<'py, T: Float>(
    py: Python<'py>,
    x: numpy::PyReadonlyArray2<'py, T>,
    q: numpy::PyReadonlyArray2<'py, T>,
    k: Option<usize>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let (xv, qv) = (x.as_array(), q.as_array());
    let (xm, qm) = (mat_ref(&xv), mat_ref(&qv));
    let r = py.detach(|| heatsearch_core::search(xm, qm, k)).py_err(py)?;
    Ok(ranking_to_py(py, r))
}

/// Top k `(ranks (nq, k) int64, scores (nq, k))` of queries `(nq, d)` in a database `(n, d)`
/// by inner product; `k = None` ranks all n.
#[pyfunction]
#[pyo3(signature = (x, q, k))]
fn search<'py>(
    py: Python<'py>,
    x: Matrix<'py>,
    q: Matrix<'py>,
    k: Option<usize>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    match (x, q) {
        (Matrix::F32(x), Matrix::F32(q)) => run(py, x, q, k),
        (Matrix::F64(x), Matrix::F64(q)) => run(py, x, q, k),
        (x, q) => Err(dtype_error(
            py,
            format!("Q must have the dtype of X ({}), got {}", dtype_name(&x), dtype_name(&q)),
        )),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(search, m)?)?;
    Ok(())
}
