//! HeR re-ranking: `heat_rerank`.

use heatsearch_core::HerParams;
use numpy::PyReadonlyArray2;
use pyo3::prelude::*;

use crate::arrays::{dtype_error, dtype_name, mat_ref, ranking_to_py, Float, Matrix};
use crate::errors::IntoPy;

fn run<'py, T: Float>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, T>,
    q: PyReadonlyArray2<'py, T>,
    ranks: PyReadonlyArray2<'py, i64>,
    scores: Option<PyReadonlyArray2<'py, T>>,
    params: HerParams,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let (xv, qv, rv) = (x.as_array(), q.as_array(), ranks.as_array());
    let sv = scores.as_ref().map(|s| s.as_array());
    let (xm, qm, rm) = (mat_ref(&xv), mat_ref(&qv), mat_ref(&rv));
    let sm = sv.as_ref().map(mat_ref);
    let out = py
        .detach(|| heatsearch_core::heat_rerank(xm, qm, rm, sm, params))
        .py_err(py)?;
    Ok(ranking_to_py(py, out))
}

/// HeR: re-ranked `(ranks (nq, m) int64, scores (nq, m))` of first-pass `ranks (nq, m)`.
#[pyfunction]
#[pyo3(signature = (x, q, ranks, scores, k, ground))]
fn heat_rerank<'py>(
    py: Python<'py>,
    x: Matrix<'py>,
    q: Matrix<'py>,
    ranks: PyReadonlyArray2<'py, i64>,
    scores: Option<Matrix<'py>>,
    k: usize,
    ground: f64,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let params = HerParams { k, ground };
    match (x, q, scores) {
        (Matrix::F32(x), Matrix::F32(q), None) => run(py, x, q, ranks, None, params),
        (Matrix::F32(x), Matrix::F32(q), Some(Matrix::F32(s))) => {
            run(py, x, q, ranks, Some(s), params)
        }
        (Matrix::F64(x), Matrix::F64(q), None) => run(py, x, q, ranks, None, params),
        (Matrix::F64(x), Matrix::F64(q), Some(Matrix::F64(s))) => {
            run(py, x, q, ranks, Some(s), params)
        }
        (x, q, s) => {
            let (xn, qn) = (dtype_name(&x), dtype_name(&q));
            let (what, got) = match s {
                Some(s) if xn == qn => ("scores", dtype_name(&s)),
                _ => ("Q", qn),
            };
            Err(dtype_error(
                py,
                format!("{what} must have the dtype of X ({xn}), got {got}"),
            ))
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(heat_rerank, m)?)?;
    Ok(())
}
