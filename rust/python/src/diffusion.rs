//! Diffusion re-ranking (Iscen et al. 2017): `diffusion_rerank`.

use heatsearch_core::DiffusionParams;
use numpy::PyReadonlyArray2;
use pyo3::prelude::*;

use crate::arrays::{dtype_error, dtype_name, mat_ref, ranking_to_py, Float, Matrix};
use crate::errors::IntoPy;

/// The arrays of one call, all of the dtype `T`.
struct Inputs<'py, T: Float> {
    x: PyReadonlyArray2<'py, T>,
    q: PyReadonlyArray2<'py, T>,
    scores: Option<PyReadonlyArray2<'py, T>>,
    graph_similarities: PyReadonlyArray2<'py, T>,
}

fn run<'py, T: Float>(
    py: Python<'py>,
    a: Inputs<'py, T>,
    ranks: PyReadonlyArray2<'py, i64>,
    graph_indices: PyReadonlyArray2<'py, i64>,
    params: DiffusionParams,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let (xv, qv, rv, gi, gs) = (
        a.x.as_array(),
        a.q.as_array(),
        ranks.as_array(),
        graph_indices.as_array(),
        a.graph_similarities.as_array(),
    );
    let sv = a.scores.as_ref().map(|s| s.as_array());
    let (xm, qm, rm, gim, gsm) = (
        mat_ref(&xv),
        mat_ref(&qv),
        mat_ref(&rv),
        mat_ref(&gi),
        mat_ref(&gs),
    );
    let sm = sv.as_ref().map(mat_ref);
    let r = py
        .detach(|| heatsearch_core::diffusion_rerank(xm, qm, rm, sm, gim, gsm, params))
        .py_err(py)?;
    Ok(ranking_to_py(py, r))
}

/// Picks the `T` arrays out of the dtype-tagged ones, or an InvalidDTypeError.
fn same<'py, T: Float>(
    py: Python<'py>,
    name: &str,
    m: Matrix<'py>,
    pick: fn(Matrix<'py>) -> Result<PyReadonlyArray2<'py, T>, Matrix<'py>>,
) -> PyResult<PyReadonlyArray2<'py, T>> {
    pick(m).map_err(|m| {
        dtype_error(
            py,
            format!(
                "{name} must have the dtype of X ({}), got {}",
                T::NAME,
                dtype_name(&m)
            ),
        )
    })
}

fn f32s(m: Matrix<'_>) -> Result<PyReadonlyArray2<'_, f32>, Matrix<'_>> {
    match m {
        Matrix::F32(a) => Ok(a),
        other => Err(other),
    }
}

fn f64s(m: Matrix<'_>) -> Result<PyReadonlyArray2<'_, f64>, Matrix<'_>> {
    match m {
        Matrix::F64(a) => Ok(a),
        other => Err(other),
    }
}

#[allow(clippy::too_many_arguments)]
fn typed<'py, T: Float>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, T>,
    q: Matrix<'py>,
    scores: Option<Matrix<'py>>,
    graph_similarities: Matrix<'py>,
    ranks: PyReadonlyArray2<'py, i64>,
    graph_indices: PyReadonlyArray2<'py, i64>,
    params: DiffusionParams,
    pick: fn(Matrix<'py>) -> Result<PyReadonlyArray2<'py, T>, Matrix<'py>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let inputs = Inputs {
        x,
        q: same(py, "Q", q, pick)?,
        scores: scores.map(|s| same(py, "scores", s, pick)).transpose()?,
        graph_similarities: same(py, "the graph's similarities", graph_similarities, pick)?,
    };
    run(py, inputs, ranks, graph_indices, params)
}

/// Re-ranked `(ranks (nq, m) int64, scores (nq, m))` of first-pass `ranks (nq, m)`.
#[pyfunction]
#[pyo3(signature = (x, q, ranks, scores, graph_indices, graph_similarities, query_k, alpha, gamma, truncation, iterations, tol))]
#[allow(clippy::too_many_arguments)]
fn diffusion_rerank<'py>(
    py: Python<'py>,
    x: Matrix<'py>,
    q: Matrix<'py>,
    ranks: PyReadonlyArray2<'py, i64>,
    scores: Option<Matrix<'py>>,
    graph_indices: PyReadonlyArray2<'py, i64>,
    graph_similarities: Matrix<'py>,
    query_k: usize,
    alpha: f64,
    gamma: f64,
    truncation: Option<usize>,
    iterations: usize,
    tol: f64,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let params = DiffusionParams {
        query_k,
        alpha,
        gamma,
        truncation,
        iterations,
        tol,
    };
    match x {
        Matrix::F32(x) => typed(
            py,
            x,
            q,
            scores,
            graph_similarities,
            ranks,
            graph_indices,
            params,
            f32s,
        ),
        Matrix::F64(x) => typed(
            py,
            x,
            q,
            scores,
            graph_similarities,
            ranks,
            graph_indices,
            params,
            f64s,
        ),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(diffusion_rerank, m)?)?;
    Ok(())
}
