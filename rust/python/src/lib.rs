//! `heatsearch._core`: the PyO3 binding of `heatsearch-core`.
//!
//! This crate only converts types: NumPy arrays in (f32 or f64, any strides, borrowed without
//! a copy), owned NumPy arrays out, core errors to `heatsearch.errors` exceptions. Every
//! kernel runs with the GIL released. Argument checking with user-facing wording lives in the
//! core and in the Python layer, not here.

use pyo3::prelude::*;

mod arrays;
mod diffusion;
mod errors;
mod hew;
mod knn;
mod rerank;
mod search;
mod threads;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    hew::register(m)?;
    threads::register(m)?;
    search::register(m)?;
    knn::register(m)?;
    rerank::register(m)?;
    diffusion::register(m)?;
    Ok(())
}
