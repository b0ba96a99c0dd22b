//! The exact kNN graph of a database: `knn_graph`.

use numpy::PyReadonlyArray2;
use pyo3::prelude::*;

use crate::arrays::{mat_ref, to_array, Float, Matrix};
use crate::errors::IntoPy;

fn run<'py, T: Float>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, T>,
    k: usize,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let xv = x.as_array();
    let xm = mat_ref(&xv);
    let g = py.detach(|| heatsearch_core::knn_graph(xm, k)).py_err(py)?;
    Ok((
        to_array(py, g.indices, g.n, g.k).into_any(),
        to_array(py, g.similarities, g.n, g.k).into_any(),
    ))
}

/// `(indices (n, k') int64, similarities (n, k'))`, `k' = min(k, n - 1)`, self excluded.
#[pyfunction]
#[pyo3(signature = (x, k))]
fn knn_graph<'py>(
    py: Python<'py>,
    x: Matrix<'py>,
    k: usize,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    match x {
        Matrix::F32(x) => run(py, x, k),
        Matrix::F64(x) => run(py, x, k),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(knn_graph, m)?)?;
    Ok(())
}
