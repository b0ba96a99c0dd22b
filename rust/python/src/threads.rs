//! Thread-pool control.

use heatsearch_core::threads;
use pyo3::prelude::*;

use crate::errors::IntoPy;

/// Sets the number of threads heatsearch's kernels use.
#[pyfunction]
fn set_num_threads(py: Python<'_>, n: usize) -> PyResult<()> {
    threads::set_num_threads(n).py_err(py)
}

/// The number of threads heatsearch's kernels use.
#[pyfunction]
fn get_num_threads(py: Python<'_>) -> PyResult<usize> {
    threads::num_threads().py_err(py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    Ok(())
}
