//! Inner products of a few queries (fewer than one SIMD strip) with database rows.
//!
//! faer's GEMM computes the query rows of a score block in strips of 16 `f32` (8 `f64`) SIMD
//! lanes, and a partial strip costs as much as a full one: 100 queries (96 + 4) ran at 127
//! GFLOP/s per core against 154 for 96, the 4-row strip taking a fifth of the time for 4% of
//! the work (d = 512, 2-core AVX-512 VM). This kernel computes those rows instead, one
//! database row at a time while it is in L1, up to 4 queries per pass with 16-lane fused
//! multiply-adds and a fixed summation order (deterministic, whatever the thread). It needs
//! contiguous database rows, and pays only with AVX2 + FMA or AVX-512 ([`available`]);
//! otherwise the search leaves the whole block to faer.

use faer::reborrow::ReborrowMut;
use faer::{MatMut, MatRef};

use super::Level;
use crate::real::Real;

/// Whether the kernel runs vectorised on this CPU (in baseline code its fused multiply-adds
/// would be library calls).
pub(crate) fn available() -> bool {
    super::level() >= Level::Avx2
}

super::dispatch! {
    /// `out[(j, i)] = <q_j, x_i>`: `q` holds `out.nrows()` queries of length `x.ncols()`,
    /// row after row; `x`'s rows are contiguous. The same bits on every level.
    pub(crate) fn scores<T: Real>(q: &[T], x: MatRef<'_, T>, out: MatMut<'_, T>) => kernel
}

/// Lanes of the accumulators.
const L: usize = 16;

/// Asks for `v` in L1 (the rows come from L2 or further, and the kernel waited on them).
#[inline(always)]
fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(v);
        let p = v.as_ptr().cast::<i8>();
        for off in (0..bytes).step_by(64) {
            // SAFETY: a prefetch is a hint; `off < bytes` keeps the address inside `v`.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.add(off))
            };
        }
    }
}

#[inline(always)]
fn kernel<T: Real>(q: &[T], x: MatRef<'_, T>, mut out: MatMut<'_, T>) {
    let (r, d) = (out.nrows(), x.ncols());
    let mut j0 = 0;
    while j0 < r {
        let g = (r - j0).min(4);
        let qg = &q[j0 * d..(j0 + g) * d];
        let o = out.rb_mut().subrows_mut(j0, g);
        match g {
            4 => group::<T, 4>(qg, x, o),
            3 => group::<T, 3>(qg, x, o),
            2 => group::<T, 2>(qg, x, o),
            _ => group::<T, 1>(qg, x, o),
        }
        j0 += g;
    }
}

#[inline(always)]
fn group<T: Real, const G: usize>(q: &[T], x: MatRef<'_, T>, mut out: MatMut<'_, T>) {
    let d = x.ncols();
    let pairs = d / (2 * L);
    let zero = T::of(0.0);
    for i in 0..out.ncols() {
        let row = x
            .row(i)
            .try_as_row_major()
            .expect("contiguous database rows");
        let xr = row.as_slice();
        if i + 2 < out.ncols() {
            prefetch(
                x.row(i + 2)
                    .try_as_row_major()
                    .expect("contiguous database rows")
                    .as_slice(),
            );
        }
        // Two accumulators per query (even and odd chunks of L lanes): 2G independent
        // chains of fused multiply-adds hide their latency.
        let mut even = [[zero; L]; G];
        let mut odd = [[zero; L]; G];
        for c in 0..pairs {
            let (x0, x1) = xr[2 * c * L..(2 * c + 2) * L].split_at(L);
            for g in 0..G {
                let (q0, q1) = q[g * d + 2 * c * L..g * d + (2 * c + 2) * L].split_at(L);
                for l in 0..L {
                    even[g][l] = num_traits::Float::mul_add(x0[l], q0[l], even[g][l]);
                    odd[g][l] = num_traits::Float::mul_add(x1[l], q1[l], odd[g][l]);
                }
            }
        }
        for g in 0..G {
            let mut a = [zero; L];
            for l in 0..L {
                a[l] = even[g][l] + odd[g][l];
            }
            let mut half = L / 2;
            while half > 0 {
                for l in 0..half {
                    a[l] += a[l + half];
                }
                half /= 2;
            }
            let mut s = a[0];
            for t in pairs * 2 * L..d {
                s = num_traits::Float::mul_add(xr[t], q[g * d + t], s);
            }
            out[(g, i)] = s;
        }
    }
}
