//! `heatsearch._core`: the PyO3 binding of `heatsearch-core`.
//!
//! This crate only converts: NumPy arrays in (float32 or float64, any strides, borrowed
//! without a copy), owned NumPy arrays out, core errors to `heatsearch.errors` exceptions and
//! panics to `InternalError` (`errors::kernel`). Every kernel runs with the GIL released.
//! Arguments come checked by the Python layer (`python/heatsearch/_validate.py`), keyword-only
//! in the order of the Python API; the core's defaults are exported as constants so that
//! Python reads them from the one place they are written.

use pyo3::prelude::*;

mod arrays;
mod diffusion;
mod errors;
mod hew;
mod knn;
mod rerank;
mod search;
mod threads;
mod validate;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    hew::register(m)?;
    search::register(m)?;
    knn::register(m)?;
    rerank::register(m)?;
    diffusion::register(m)?;
    threads::register(m)?;
    validate::register(m)?;
    Ok(())
}
