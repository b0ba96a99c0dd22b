//! Diffusion re-ranking (Iscen et al. 2017): `diffusion_rerank`.

use heatsearch_core::diffusion::{self, DiffusionParams};
use numpy::PyReadonlyArray2;
use pyo3::prelude::*;

use crate::arrays::{mat_ref, ranking_to_py, typed, with_dtype, Matrix, Ranked};
use crate::errors::kernel;

/// Re-ranked `(ranks (nq, m) int64, scores (nq, m))` of first-pass `ranks (nq, m)`.
#[pyfunction]
#[pyo3(signature = (
    x, q, ranks, *, scores, graph_indices, graph_similarities, query_neighbors, alpha, gamma,
    truncation, iterations, tol
))]
#[allow(clippy::too_many_arguments)]
fn diffusion_rerank<'py>(
    py: Python<'py>,
    x: Matrix<'py>,
    q: Matrix<'py>,
    ranks: PyReadonlyArray2<'py, i64>,
    scores: Option<Matrix<'py>>,
    graph_indices: PyReadonlyArray2<'py, i64>,
    graph_similarities: Matrix<'py>,
    query_neighbors: usize,
    alpha: f64,
    gamma: f64,
    truncation: Option<usize>,
    iterations: usize,
    tol: f64,
) -> PyResult<Ranked<'py>> {
    let params = DiffusionParams {
        query_neighbors,
        alpha,
        gamma,
        truncation,
        iterations,
        tol,
    };
    with_dtype!(x, T => {
        let q = typed::<T>(py, q, "Q")?;
        let scores = scores.map(|s| typed::<T>(py, s, "scores")).transpose()?;
        let gs = typed::<T>(py, graph_similarities, "the graph's similarities")?;
        let (xv, qv, rv) = (x.as_array(), q.as_array(), ranks.as_array());
        let (giv, gsv) = (graph_indices.as_array(), gs.as_array());
        let sv = scores.as_ref().map(|s| s.as_array());
        let (xm, qm, rm) = (mat_ref(&xv), mat_ref(&qv), mat_ref(&rv));
        let (gim, gsm) = (mat_ref(&giv), mat_ref(&gsv));
        let sm = sv.as_ref().map(mat_ref);
        let r = kernel(py, || {
            heatsearch_core::diffusion_rerank(xm, qm, rm, sm, gim, gsm, params)
        })?;
        Ok(ranking_to_py(py, r))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(diffusion_rerank, m)?)?;
    m.add(
        "DIFFUSION_QUERY_NEIGHBORS",
        diffusion::DEFAULT_QUERY_NEIGHBORS,
    )?;
    m.add("DIFFUSION_ALPHA", diffusion::DEFAULT_ALPHA)?;
    m.add("DIFFUSION_GAMMA", diffusion::DEFAULT_GAMMA)?;
    m.add("DIFFUSION_TRUNCATION", diffusion::DEFAULT_TRUNCATION)?;
    m.add("DIFFUSION_ITERATIONS", diffusion::DEFAULT_ITERATIONS)?;
    m.add("DIFFUSION_TOL", diffusion::DEFAULT_TOL)?;
    Ok(())
}
