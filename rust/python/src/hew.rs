//! HeW aggregation: `hew_weights`, `hew_pool`, `hew_pool_batch`, `local_mean`.

use heatsearch_core::HewParams;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::arrays::{self, mat_ref, Float, Matrix};
use crate::errors::IntoPy;

/// A core kernel on one `(N, C)` map: `hew_weights` or `hew_pool`.
type MapKernel<T> =
    fn(faer::MatRef<'_, T>, Option<&[T]>, HewParams) -> heatsearch_core::Result<Vec<T>>;

fn one_map<'py, T: Float>(
    py: Python<'py>,
    fmap: PyReadonlyArray2<'py, T>,
    mean: Option<&Bound<'py, PyAny>>,
    params: HewParams,
    kernel: MapKernel<T>,
) -> PyResult<Bound<'py, PyAny>> {
    let mean = arrays::vector::<T>(mean, "mean", T::NAME)?;
    let view = fmap.as_array();
    let f = mat_ref(&view);
    let out = py
        .detach(|| kernel(f, mean.as_deref(), params))
        .py_err(py)?;
    Ok(PyArray1::from_vec(py, out).into_any())
}

/// HeW weights `(N,)` of one `(N, C)` map.
#[pyfunction]
#[pyo3(signature = (fmap, mean, threshold, ground))]
fn hew_weights<'py>(
    py: Python<'py>,
    fmap: Matrix<'py>,
    mean: Option<Bound<'py, PyAny>>,
    threshold: f64,
    ground: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let params = HewParams { threshold, ground };
    match fmap {
        Matrix::F32(a) => one_map(
            py,
            a,
            mean.as_ref(),
            params,
            heatsearch_core::hew_weights::<f32>,
        ),
        Matrix::F64(a) => one_map(
            py,
            a,
            mean.as_ref(),
            params,
            heatsearch_core::hew_weights::<f64>,
        ),
    }
}

/// HeW descriptor `(C,)` of one `(N, C)` map.
#[pyfunction]
#[pyo3(signature = (fmap, mean, threshold, ground))]
fn hew_pool<'py>(
    py: Python<'py>,
    fmap: Matrix<'py>,
    mean: Option<Bound<'py, PyAny>>,
    threshold: f64,
    ground: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let params = HewParams { threshold, ground };
    match fmap {
        Matrix::F32(a) => one_map(
            py,
            a,
            mean.as_ref(),
            params,
            heatsearch_core::hew_pool::<f32>,
        ),
        Matrix::F64(a) => one_map(
            py,
            a,
            mean.as_ref(),
            params,
            heatsearch_core::hew_pool::<f64>,
        ),
    }
}

/// All maps of a batch as arrays of one dtype, or a TypeError.
fn same_dtype<'py, T: Float>(
    maps: Vec<Matrix<'py>>,
    pick: fn(Matrix<'py>) -> Option<PyReadonlyArray2<'py, T>>,
) -> PyResult<Vec<PyReadonlyArray2<'py, T>>> {
    maps.into_iter()
        .enumerate()
        .map(|(b, m)| {
            pick(m).ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "every feature map of a batch must have the dtype of the first ({}); map {b} differs",
                    T::NAME
                ))
            })
        })
        .collect()
}

fn pick_f32(m: Matrix<'_>) -> Option<PyReadonlyArray2<'_, f32>> {
    match m {
        Matrix::F32(a) => Some(a),
        Matrix::F64(_) => None,
    }
}

fn pick_f64(m: Matrix<'_>) -> Option<PyReadonlyArray2<'_, f64>> {
    match m {
        Matrix::F64(a) => Some(a),
        Matrix::F32(_) => None,
    }
}

fn batch<'py, T: Float>(
    py: Python<'py>,
    maps: Vec<PyReadonlyArray2<'py, T>>,
    mean: Option<&Bound<'py, PyAny>>,
    params: Option<HewParams>,
) -> PyResult<Bound<'py, PyAny>> {
    let mean = arrays::vector::<T>(mean, "mean", T::NAME)?;
    let views: Vec<_> = maps.iter().map(|m| m.as_array()).collect();
    let refs: Vec<_> = views.iter().map(mat_ref).collect();
    let c = refs.first().map_or(0, |f| f.ncols());
    match params {
        Some(params) => {
            let rows = py
                .detach(|| heatsearch_core::hew_pool_batch(&refs, mean.as_deref(), params))
                .py_err(py)?;
            let flat: Vec<T> = rows.into_iter().flatten().collect();
            let out = Array2::from_shape_vec((refs.len(), c), flat)
                .expect("one descriptor of length C per map");
            Ok(out.into_pyarray(py).into_any())
        }
        None => {
            let mu = py
                .detach(|| heatsearch_core::local_mean(&refs))
                .py_err(py)?;
            Ok(PyArray1::from_vec(py, mu).into_any())
        }
    }
}

fn dispatch<'py>(
    py: Python<'py>,
    maps: Vec<Matrix<'py>>,
    mean: Option<&Bound<'py, PyAny>>,
    params: Option<HewParams>,
) -> PyResult<Bound<'py, PyAny>> {
    match maps.first() {
        Some(Matrix::F64(_)) => batch(py, same_dtype(maps, pick_f64)?, mean, params),
        _ => batch(py, same_dtype(maps, pick_f32)?, mean, params),
    }
}

/// HeW descriptors `(B, C)` of B maps `(N_b, C)`.
#[pyfunction]
#[pyo3(signature = (fmaps, mean, threshold, ground))]
fn hew_pool_batch<'py>(
    py: Python<'py>,
    fmaps: Vec<Matrix<'py>>,
    mean: Option<Bound<'py, PyAny>>,
    threshold: f64,
    ground: f64,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch(
        py,
        fmaps,
        mean.as_ref(),
        Some(HewParams { threshold, ground }),
    )
}

/// Mean `(C,)` of all local features of all maps.
#[pyfunction]
fn local_mean<'py>(py: Python<'py>, fmaps: Vec<Matrix<'py>>) -> PyResult<Bound<'py, PyAny>> {
    dispatch(py, fmaps, None, None)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hew_weights, m)?)?;
    m.add_function(wrap_pyfunction!(hew_pool, m)?)?;
    m.add_function(wrap_pyfunction!(hew_pool_batch, m)?)?;
    m.add_function(wrap_pyfunction!(local_mean, m)?)?;
    Ok(())
}
