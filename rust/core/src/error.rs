//! The core's error type. Every failure a caller can cause is an `Error`, never a panic.

use thiserror::Error as ThisError;

/// What went wrong, worded as "expected ..., got ..." so that the binding can pass the
/// message on unchanged.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
pub enum Error {
    /// An argument has the wrong size or shape (maps the binding to `ValueError`).
    #[error("{0}")]
    Shape(String),
    /// An argument has a value outside its domain, e.g. `ground <= 0` (`ValueError`).
    #[error("{0}")]
    Value(String),
    /// The input holds NaN or infinity (`ValueError`).
    #[error("{0}")]
    NonFinite(String),
    /// A numerical failure that valid input cannot cause (reported, never a panic).
    #[error("{0}")]
    Numerical(String),
    /// Memory a kernel needs could not be allocated (a memory limit): reported instead of
    /// Rust's abort on allocation failure (see `memory`).
    #[error("{0}")]
    Memory(String),
    /// The thread pool could not be built or resized.
    #[error("{0}")]
    Threads(String),
}

/// `Result` with the core's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
