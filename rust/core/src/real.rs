//! The floating-point types the kernels are generic over: `f32` and `f64`.

use faer::traits::RealField;

/// A real scalar the kernels accept: `f32` or `f64`.
///
/// Gram products, Cholesky factors and triangular inverses run in `Self` (that is where the
/// flops are); the O(N^2) reductions (row sums, temperatures, descriptors) accumulate in
/// `f64` so that `f32` input stays accurate.
pub trait Real:
    RealField + num_traits::Float + Copy + Send + Sync + std::fmt::Debug + 'static
{
    /// The type's name as NumPy spells it ("float32", "float64"), for messages.
    const NAME: &'static str;
    /// Rounds an `f64` to `Self`.
    fn of(x: f64) -> Self;
    /// Widens `self` to `f64`.
    fn f64(self) -> f64;
}

impl Real for f32 {
    const NAME: &'static str = "float32";
    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    const NAME: &'static str = "float64";
    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
}
