//! HeR re-ranking: `heat_rerank`.

use heatsearch_core::{HerParams, Real, Reranking};
use numpy::ndarray::Array2;
use numpy::{Element, IntoPyArray, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::arrays::{mat_ref, Matrix};
use crate::errors::IntoPy;

trait Float: Real + Element {
    const NAME: &'static str;
}
impl Float for f32 {
    const NAME: &'static str = "float32";
}
impl Float for f64 {
    const NAME: &'static str = "float64";
}

fn name(m: &Matrix<'_>) -> &'static str {
    match m {
        Matrix::F32(_) => f32::NAME,
        Matrix::F64(_) => f64::NAME,
    }
}

/// `heatsearch.errors.InvalidDTypeError` saying `what` must have the dtype of X.
fn dtype_error(py: Python<'_>, what: &str, x: &'static str, got: &'static str) -> PyErr {
    let message = format!("{what} must have the dtype of X ({x}), got {got}");
    match py.import("heatsearch.errors").and_then(|m| m.getattr("InvalidDTypeError")).and_then(|c| Ok(c.cast_into::<PyType>()?)) {
        Ok(class) => PyErr::from_type(class, message),
        Err(e) => e,
    }
}

fn to_py<T: Float>(py: Python<'_>, r: Reranking<T>) -> (Bound<'_, PyAny>, Bound<'_, PyAny>) {
    let shape = (r.rows, r.cols);
    let ranks = Array2::from_shape_vec(shape, r.ranks).expect("rows * cols ranks");
    let scores = Array2::from_shape_vec(shape, r.scores).expect("rows * cols scores");
    (ranks.into_pyarray(py).into_any(), scores.into_pyarray(py).into_any())
}

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
    let out = py.detach(|| heatsearch_core::heat_rerank(xm, qm, rm, sm, params)).py_err(py)?;
    Ok(to_py(py, out))
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
    let params = HerParams { k, ground, ..HerParams::default() };
    match (x, q, scores) {
        (Matrix::F32(x), Matrix::F32(q), None) => run(py, x, q, ranks, None, params),
        (Matrix::F32(x), Matrix::F32(q), Some(Matrix::F32(s))) => run(py, x, q, ranks, Some(s), params),
        (Matrix::F64(x), Matrix::F64(q), None) => run(py, x, q, ranks, None, params),
        (Matrix::F64(x), Matrix::F64(q), Some(Matrix::F64(s))) => run(py, x, q, ranks, Some(s), params),
        (x, q, s) => {
            let (xn, qn) = (name(&x), name(&q));
            Err(match s {
                Some(s) if xn == qn => dtype_error(py, "scores", xn, name(&s)),
                _ => dtype_error(py, "Q", xn, qn),
            })
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(heat_rerank, m)?)?;
    Ok(())
}
