//! Core errors as the exceptions of `heatsearch.errors` (all subclasses of `HeatsearchError`
//! and of the matching built-in: `ValueError`, `ArithmeticError`, `RuntimeError`).

use heatsearch_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyType;

fn exception_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(py
        .import("heatsearch.errors")?
        .getattr(name)?
        .cast_into::<PyType>()?)
}

/// Converts a core error to its Python exception.
pub fn to_py(py: Python<'_>, error: Error) -> PyErr {
    let name = match error {
        Error::Shape(_) | Error::Value(_) | Error::NonFinite(_) => "InvalidInputError",
        Error::Numerical(_) => "NumericalError",
        Error::Threads(_) => "ThreadPoolError",
    };
    match exception_class(py, name) {
        Ok(class) => PyErr::from_type(class, error.to_string()),
        Err(e) => e,
    }
}

/// `Result` conversion for binding functions.
pub trait IntoPy<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}
