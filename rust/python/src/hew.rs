//! HeW aggregation: `hew_weights`, `hew_pool`, `hew_pool_batch`, `local_mean`.

use heatsearch_core::HewParams;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use crate::arrays::{mat_ref, with_dtype, Float, Matrix, Vector};
use crate::errors::{dtype_error, kernel};

/// A core kernel on one `(N, C)` map: `hew_weights` or `hew_pool`.
type MapKernel<T> =
    fn(faer::MatRef<'_, T>, Option<&[T]>, HewParams) -> heatsearch_core::Result<Vec<T>>;

/// The mean as a `T` slice (copied only when it is not contiguous).
fn mean_of<T: Float>(py: Python<'_>, mean: Option<Vector<'_>>) -> PyResult<Option<Vec<T>>> {
    mean.map(|v| {
        T::vector(v)
            .map(|a| a.as_array().iter().copied().collect())
            .ok_or_else(|| dtype_error(py, format!("mean must have the maps' dtype ({})", T::NAME)))
    })
    .transpose()
}

fn one_map<'py, T: Float>(
    py: Python<'py>,
    fmap: PyReadonlyArray2<'py, T>,
    mean: Option<Vector<'py>>,
    params: HewParams,
    op: MapKernel<T>,
) -> PyResult<Bound<'py, PyAny>> {
    let mean = mean_of::<T>(py, mean)?;
    let view = fmap.as_array();
    let f = mat_ref(&view);
    let out = kernel(py, || op(f, mean.as_deref(), params))?;
    Ok(PyArray1::from_vec(py, out).into_any())
}

/// HeW weights `(N,)` of one `(N, C)` map.
#[pyfunction]
#[pyo3(signature = (fmap, mean, *, threshold, ground))]
fn hew_weights<'py>(
    py: Python<'py>,
    fmap: Matrix<'py>,
    mean: Option<Vector<'py>>,
    threshold: f64,
    ground: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let params = HewParams { threshold, ground };
    with_dtype!(fmap, T => one_map::<T>(py, fmap, mean, params, heatsearch_core::hew_weights))
}

/// HeW descriptor `(C,)` of one `(N, C)` map.
#[pyfunction]
#[pyo3(signature = (fmap, mean, *, threshold, ground))]
fn hew_pool<'py>(
    py: Python<'py>,
    fmap: Matrix<'py>,
    mean: Option<Vector<'py>>,
    threshold: f64,
    ground: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let params = HewParams { threshold, ground };
    with_dtype!(fmap, T => one_map::<T>(py, fmap, mean, params, heatsearch_core::hew_pool))
}

/// The maps of a batch, all of the first map's dtype `T`.
fn typed_maps<'py, T: Float>(
    py: Python<'py>,
    first: PyReadonlyArray2<'py, T>,
    rest: impl Iterator<Item = Matrix<'py>>,
) -> PyResult<Vec<PyReadonlyArray2<'py, T>>> {
    let mut maps = vec![first];
    for (b, m) in rest.enumerate() {
        maps.push(T::matrix(m).map_err(|m| {
            dtype_error(
                py,
                format!(
                    "every map in fmaps must have the same dtype: fmaps[0] is {}, fmaps[{}] is {}",
                    T::NAME,
                    b + 1,
                    m.dtype_name()
                ),
            )
        })?);
    }
    Ok(maps)
}

/// What to compute on a batch of maps.
enum Batch {
    Pool(HewParams),
    Mean,
}

fn batch<'py, T: Float>(
    py: Python<'py>,
    maps: Vec<PyReadonlyArray2<'py, T>>,
    mean: Option<Vector<'py>>,
    what: Batch,
) -> PyResult<Bound<'py, PyAny>> {
    let mean = mean_of::<T>(py, mean)?;
    let views: Vec<_> = maps.iter().map(|m| m.as_array()).collect();
    let refs: Vec<_> = views.iter().map(mat_ref).collect();
    match what {
        Batch::Pool(params) => {
            let c = refs.first().map_or(0, |f| f.ncols());
            let rows = kernel(py, || {
                heatsearch_core::hew_pool_batch(&refs, mean.as_deref(), params)
            })?;
            let flat: Vec<T> = rows.into_iter().flatten().collect();
            let out = Array2::from_shape_vec((refs.len(), c), flat)
                .expect("one descriptor of length C per map");
            Ok(out.into_pyarray(py).into_any())
        }
        Batch::Mean => {
            let mu = kernel(py, || heatsearch_core::local_mean(&refs))?;
            Ok(PyArray1::from_vec(py, mu).into_any())
        }
    }
}

fn dispatch<'py>(
    py: Python<'py>,
    fmaps: Vec<Matrix<'py>>,
    mean: Option<Vector<'py>>,
    what: Batch,
) -> PyResult<Bound<'py, PyAny>> {
    let mut maps = fmaps.into_iter();
    let Some(first) = maps.next() else {
        // Checked by the Python layer; an empty batch pools to nothing.
        return batch::<f32>(py, Vec::new(), mean, what);
    };
    with_dtype!(first, T => batch::<T>(py, typed_maps::<T>(py, first, maps)?, mean, what))
}

/// HeW descriptors `(B, C)` of B maps `(N_b, C)`.
#[pyfunction]
#[pyo3(signature = (fmaps, mean, *, threshold, ground))]
fn hew_pool_batch<'py>(
    py: Python<'py>,
    fmaps: Vec<Matrix<'py>>,
    mean: Option<Vector<'py>>,
    threshold: f64,
    ground: f64,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch(
        py,
        fmaps,
        mean,
        Batch::Pool(HewParams { threshold, ground }),
    )
}

/// Mean `(C,)` of all local features of all maps.
#[pyfunction]
#[pyo3(signature = (fmaps))]
fn local_mean<'py>(py: Python<'py>, fmaps: Vec<Matrix<'py>>) -> PyResult<Bound<'py, PyAny>> {
    dispatch(py, fmaps, None, Batch::Mean)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hew_weights, m)?)?;
    m.add_function(wrap_pyfunction!(hew_pool, m)?)?;
    m.add_function(wrap_pyfunction!(hew_pool_batch, m)?)?;
    m.add_function(wrap_pyfunction!(local_mean, m)?)?;
    m.add("HEW_THRESHOLD", heatsearch_core::hew::DEFAULT_THRESHOLD)?;
    m.add("HEW_GROUND", heatsearch_core::hew::DEFAULT_GROUND)?;
    m.add("GROUND_RANGE", heatsearch_core::hew::GROUND_RANGE)?;
    m.add(
        "EQUAL_TO_MEAN_ULPS",
        heatsearch_core::hew::EQUAL_TO_MEAN_ULPS,
    )?;
    Ok(())
}
