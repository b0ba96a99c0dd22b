//! Exact inner-product search: `search`.

use pyo3::prelude::*;

use crate::arrays::{mat_ref, ranking_to_py, typed, with_dtype, Matrix, Ranked};
use crate::errors::kernel;

/// Top k `(ranks (nq, k) int64, scores (nq, k))` of queries `(nq, d)` in a database `(n, d)`
/// by inner product, `k <= n`.
#[pyfunction]
#[pyo3(signature = (x, q, *, k))]
fn search<'py>(py: Python<'py>, x: Matrix<'py>, q: Matrix<'py>, k: usize) -> PyResult<Ranked<'py>> {
    with_dtype!(x, T => {
        let q = typed::<T>(py, q, "Q")?;
        let (xv, qv) = (x.as_array(), q.as_array());
        let (xm, qm) = (mat_ref(&xv), mat_ref(&qv));
        let r = kernel(py, || heatsearch_core::search(xm, qm, Some(k)))?;
        Ok(ranking_to_py(py, r))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(search, m)?)?;
    m.add("MAX_ITEMS", heatsearch_core::search::MAX_ITEMS)?;
    Ok(())
}
