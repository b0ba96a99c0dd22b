//! Exact inner-product search: `search`.

use pyo3::prelude::*;

use crate::arrays::{dtype_error, dtype_name, mat_ref, ranking_to_py, Float, Matrix};
use crate::errors::IntoPy;

fn run<'py, T: Float>(
    py: Python<'py>,
    x: numpy::PyReadonlyArray2<'py, T>,
    q: numpy::PyReadonlyArray2<'py, T>,
    k: Option<usize>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let (xv, qv) = (x.as_array(), q.as_array());
    let (xm, qm) = (mat_ref(&xv), mat_ref(&qv));
    let r = py
        .detach(|| heatsearch_core::search(xm, qm, k))
        .py_err(py)?;
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
            format!(
                "Q must have the dtype of X ({}), got {}",
                dtype_name(&x),
                dtype_name(&q)
            ),
        )),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(search, m)?)?;
    Ok(())
}
