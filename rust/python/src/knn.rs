//! The exact kNN graph of a database: `knn_graph`.

use pyo3::prelude::*;

use crate::arrays::{mat_ref, to_array, with_dtype, Matrix, Ranked};
use crate::errors::kernel;

/// `(indices (n, k') int64, similarities (n, k'))`, `k' = min(neighbors, n - 1)`, self
/// excluded.
#[pyfunction]
#[pyo3(signature = (x, *, neighbors))]
fn knn_graph<'py>(py: Python<'py>, x: Matrix<'py>, neighbors: usize) -> PyResult<Ranked<'py>> {
    with_dtype!(x, T => {
        let xv = x.as_array();
        let xm = mat_ref(&xv);
        let g = kernel(py, || heatsearch_core::knn_graph::<T>(xm, neighbors))?;
        Ok((
            to_array(py, g.indices, g.n, g.k).into_any(),
            to_array(py, g.similarities, g.n, g.k).into_any(),
        ))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(knn_graph, m)?)?;
    m.add("KNN_NEIGHBORS", heatsearch_core::knn::DEFAULT_NEIGHBORS)?;
    Ok(())
}
