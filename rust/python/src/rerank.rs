//! HeR re-ranking: `heat_rerank`.

use heatsearch_core::HerParams;
use numpy::PyReadonlyArray2;
use pyo3::prelude::*;

use crate::arrays::{mat_ref, ranking_to_py, typed, with_dtype, Matrix, Ranked};
use crate::errors::kernel;

/// HeR: re-ranked `(ranks (nq, m) int64, scores (nq, m))` of first-pass `ranks (nq, m)`.
#[pyfunction]
#[pyo3(signature = (x, q, ranks, *, depth, ground, scores))]
fn heat_rerank<'py>(
    py: Python<'py>,
    x: Matrix<'py>,
    q: Matrix<'py>,
    ranks: PyReadonlyArray2<'py, i64>,
    depth: usize,
    ground: f64,
    scores: Option<Matrix<'py>>,
) -> PyResult<Ranked<'py>> {
    let params = HerParams { depth, ground };
    with_dtype!(x, T => {
        let q = typed::<T>(py, q, "Q")?;
        let scores = scores.map(|s| typed::<T>(py, s, "scores")).transpose()?;
        let (xv, qv, rv) = (x.as_array(), q.as_array(), ranks.as_array());
        let sv = scores.as_ref().map(|s| s.as_array());
        let (xm, qm, rm) = (mat_ref(&xv), mat_ref(&qv), mat_ref(&rv));
        let sm = sv.as_ref().map(mat_ref);
        let r = kernel(py, || heatsearch_core::heat_rerank(xm, qm, rm, sm, params))?;
        Ok(ranking_to_py(py, r))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(heat_rerank, m)?)?;
    m.add("HER_DEPTH", heatsearch_core::rerank::DEFAULT_DEPTH)?;
    m.add("HER_GROUND", heatsearch_core::rerank::DEFAULT_GROUND)?;
    Ok(())
}
