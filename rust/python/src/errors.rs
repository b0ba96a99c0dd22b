//! Core errors as the exceptions of `heatsearch.errors`, and the boundary every kernel call
//! crosses: the GIL is released, and a Rust panic (a bug: valid or invalid input must never
//! cause one) comes back as `InternalError`, never as pyo3's `PanicException` (a
//! `BaseException` that `except Exception` does not catch).

use std::panic::{catch_unwind, AssertUnwindSafe};

use heatsearch_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// `heatsearch.errors.<name>(message)`.
fn exception(py: Python<'_>, name: &str, message: String) -> PyErr {
    let class = py
        .import("heatsearch.errors")
        .and_then(|m| m.getattr(name))
        .and_then(|c| Ok(c.cast_into::<PyType>()?));
    match class {
        Ok(class) => PyErr::from_type(class, message),
        Err(e) => e,
    }
}

/// Converts a core error to its Python exception.
pub fn to_py(py: Python<'_>, error: Error) -> PyErr {
    let name = match error {
        Error::Shape(_) | Error::Value(_) | Error::NonFinite(_) => "InvalidInputError",
        Error::Numerical(_) => "NumericalError",
        Error::Threads(_) => "ThreadPoolError",
        Error::Memory(_) => "MemoryLimitError",
    };
    exception(py, name, error.to_string())
}

/// `heatsearch.errors.InvalidDTypeError(message)`.
pub fn dtype_error(py: Python<'_>, message: String) -> PyErr {
    exception(py, "InvalidDTypeError", message)
}

/// Runs a core kernel with the GIL released: its error as the matching exception, a panic
/// as `InternalError` saying it is a bug and where to report it.
pub fn kernel<R: Send>(
    py: Python<'_>,
    op: impl FnOnce() -> heatsearch_core::Result<R> + Send,
) -> PyResult<R> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(op))) {
        Ok(result) => result.map_err(|e| to_py(py, e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let url = py
                .import("heatsearch.errors")
                .and_then(|m| m.getattr("ISSUES_URL"))
                .and_then(|u| u.extract::<String>())
                .unwrap_or_else(|_| "the heatsearch issue tracker".into());
            Err(exception(
                py,
                "InternalError",
                format!(
                    "heatsearch's Rust core failed an internal check ({what}). This is a bug in \
                     heatsearch, not in your input: please report it at {url} with the call \
                     that caused it (shapes and dtypes of the arrays) and heatsearch.__version__"
                ),
            ))
        }
    }
}
