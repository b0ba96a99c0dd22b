//! Thread-pool control: `set_num_threads`, `get_num_threads`, `gemm_buffer_bytes`.

use heatsearch_core::threads;
use pyo3::prelude::*;

use crate::errors::to_py;

/// Sets the number of threads heatsearch's kernels use.
#[pyfunction]
fn set_num_threads(py: Python<'_>, n: usize) -> PyResult<()> {
    threads::set_num_threads(n).map_err(|e| to_py(py, e))
}

/// The number of threads heatsearch's kernels use.
#[pyfunction]
fn get_num_threads(py: Python<'_>) -> PyResult<usize> {
    threads::num_threads().map_err(|e| to_py(py, e))
}

/// Bytes of address space each kernel thread takes for the matrix product's buffer.
#[pyfunction]
fn gemm_buffer_bytes() -> usize {
    threads::gemm_buffer_bytes()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(gemm_buffer_bytes, m)?)?;
    Ok(())
}
