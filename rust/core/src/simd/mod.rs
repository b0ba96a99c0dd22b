//! The hand-vectorised kernels, and the one place that decides which instruction set they run
//! in.
//!
//! The crate is compiled for the x86-64 baseline (SSE2), so that one wheel runs everywhere.
//! The few loops that carry a kernel's whole cost are compiled again for AVX2 + FMA and for
//! AVX-512 and picked at run time, as faer does for its own kernels:
//!
//! * [`few_rows`]: inner products of the last few queries of a block, which faer's GEMM
//!   would pad to a full SIMD strip (search);
//! * [`symv`]: `y = M x` with the lower triangle of a symmetric `M`, the whole cost of HeR's
//!   conjugate gradient;
//! * the threshold scans of the top-k selection, compiled per level by [`dispatch`] where
//!   they live (`select.rs`).
//!
//! [`level`] detects the CPU's features once. A level stands for every feature that its
//! kernels are compiled with (`Avx512`: AVX-512F, AVX2 and FMA; `Avx2`: AVX2 and FMA), so
//! that no kernel runs on a CPU that lacks one of them. [`dispatch`] compiles a kernel once
//! per level and picks the copy at run time; with [`zero_upper`], which cleans up after
//! faer's kernels, it is the only code with `#[target_feature]`. Rust never contracts a
//! multiplication and an addition into an FMA on its own, so every level computes the same
//! bits; only `few_rows` asks for fused multiply-adds, and gets them exactly rounded on every
//! level.

use std::sync::atomic::{AtomicU8, Ordering};

pub(crate) mod few_rows;
pub(crate) mod symv;

/// An instruction set the kernels are compiled for, from the least to the most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// What the crate is compiled for: SSE2 on x86-64, anything elsewhere.
    Baseline = 1,
    /// AVX2 and FMA.
    Avx2 = 2,
    /// AVX-512F, AVX2 and FMA.
    Avx512 = 3,
}

/// The detected level; 0 until the first call of [`level`].
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The best level this CPU supports: every feature of it checked, detected once.
#[inline]
pub(crate) fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        3 => Level::Avx512,
        2 => Level::Avx2,
        1 => Level::Baseline,
        _ => {
            let level = detect();
            LEVEL.store(level as u8, Ordering::Relaxed);
            level
        }
    }
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// Clears the upper halves of the vector registers (`vzeroupper`) after a faer kernel.
///
/// Some of faer's AVX-512 kernels return with them dirty, and the crate's own code is
/// compiled for SSE2: on the Xeon this was measured on, every legacy SSE instruction then
/// pays a false dependency on the upper half of its register, until the next `vzeroupper`.
/// HeW's centring loop ran 5 times slower after the remainder tile of a Gram product (N =
/// 104 to 110 cells, one thread: 0.36 ms a map instead of 0.16). One instruction, and a
/// no-op without AVX.
#[inline]
pub(crate) fn zero_upper() {
    #[cfg(target_arch = "x86_64")]
    if level() >= Level::Avx2 {
        #[target_feature(enable = "avx")]
        unsafe fn vzeroupper() {
            std::arch::x86_64::_mm256_zeroupper()
        }
        // SAFETY: `level()` checked AVX2, which implies AVX.
        unsafe { vzeroupper() }
    }
}

/// Defines `fn $name<T: Real>(args)`, which runs `$body(args)` compiled for the best level
/// of this CPU. `$body` must be `#[inline(always)]`, so that each level's copy compiles it
/// with that level's features (a body that is not inlined runs in baseline code). Each copy
/// takes the arguments as its own parameters, not in a struct: the compiler then knows that
/// the slices do not alias, which the vectoriser needs (measured: HeR's `symv_lower` passed
/// through a struct ran scalar, 2.3 times slower).
macro_rules! dispatch {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident<T: Real>($($arg:ident: $ty:ty),* $(,)?) => $body:path
    ) => {
        $(#[$meta])*
        #[inline]
        $vis fn $name<T: $crate::real::Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512<T: $crate::real::Real>($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<T: $crate::real::Real>($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match $crate::simd::level() {
                    // SAFETY: `level()` checked that the CPU has AVX-512F, AVX2 and FMA.
                    $crate::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `level()` checked that the CPU has AVX2 and FMA.
                    $crate::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Level::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_detected_once_and_checks_every_feature() {
        let level = level();
        assert_eq!(level, detect());
        assert_eq!(super::level(), level);
        #[cfg(target_arch = "x86_64")]
        if level >= Level::Avx2 {
            assert!(std::arch::is_x86_feature_detected!("avx2"));
            assert!(std::arch::is_x86_feature_detected!("fma"));
        }
        #[cfg(target_arch = "x86_64")]
        if level == Level::Avx512 {
            assert!(std::arch::is_x86_feature_detected!("avx512f"));
        }
    }
}
