//! The conjugate gradient of the crate's two sparse-or-small SPD solves: HeR's heat system
//! `M x = D e_q` (Jacobi-preconditioned, `rerank`) and diffusion's `(I - alpha S) f = y`
//! (plain, `diffusion`).
//!
//! The matrix is an operator (`apply(p, out)`: `out = A p`), so the same iteration serves a
//! dense lower triangle ([`crate::simd::symv`]) and a sparse subgraph. Vectors are `f64`
//! whatever the matrix's type, which is what makes HeR's `f32` solves accurate.
//!
//! Without a preconditioner the iteration is SciPy's `scipy.sparse.linalg.cg(A, b,
//! rtol=tol, atol=0, maxiter)` step for step (diffusion's results are compared with it):
//! start from `x = 0`; check `||r|| < tol ||b||` before every step, the first included (here:
//! after each step and once before the first, which stops at the same iterate); return the
//! last iterate when the steps run out; `b = 0` gives `x = 0`. The residual used for stopping
//! is always the true recursive residual `r`, not the preconditioned one.

use crate::reduce::dot;

/// When the iteration has converged: `||r|| < relative ||b||` (`strict`, SciPy's rule) or
/// `||r|| <= relative ||b||`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Tolerance {
    pub(crate) relative: f64,
    pub(crate) strict: bool,
}

/// How the iteration ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The residual reached the tolerance.
    Converged,
    /// The steps ran out first.
    StepsExhausted,
    /// `p^T A p` was not positive and finite: `A` is not SPD to working precision, or the
    /// residual is already at the rounding level. `x` is the last good iterate.
    Breakdown,
}

/// The last iterate and how it was reached.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Solution {
    pub(crate) x: Vec<f64>,
    /// Steps taken (matrix-vector products that updated `x`).
    pub(crate) steps: usize,
    pub(crate) outcome: Outcome,
}

/// Solves `A x = b` from `x = 0` with at most `max_steps` steps; `apply(p, out)` sets
/// `out = A p` (A symmetric positive definite); `inverse_diagonal`, if any, is the Jacobi
/// preconditioner `1 / A_ii`.
///
/// Dot products are [`dot`]'s (eight `f64` lanes, a fixed order): the result does not depend
/// on the thread that runs it.
pub(crate) fn solve(
    mut apply: impl FnMut(&[f64], &mut [f64]),
    b: &[f64],
    inverse_diagonal: Option<&[f64]>,
    tolerance: Tolerance,
    max_steps: usize,
) -> Solution {
    let n = b.len();
    let mut x = vec![0.0f64; n];
    let b_norm = dot(b, b).sqrt();
    let stop = tolerance.relative * b_norm;
    let converged = |rr: f64| {
        if tolerance.strict {
            rr.sqrt() < stop
        } else {
            rr.sqrt() <= stop
        }
    };
    let done = |x, steps, outcome| Solution { x, steps, outcome };
    let mut r = b.to_vec();
    let mut rr = dot(&r, &r);
    if b_norm == 0.0 || converged(rr) {
        return done(x, 0, Outcome::Converged);
    }
    // z = P r; without a preconditioner z is r itself and r^T z is r^T r.
    let mut z: Option<Vec<f64>> =
        inverse_diagonal.map(|d| r.iter().zip(d).map(|(ri, di)| ri * di).collect());
    let mut rz = match &z {
        Some(z) => dot(&r, z),
        None => rr,
    };
    let mut p: Vec<f64> = z.clone().unwrap_or_else(|| r.clone());
    let mut ap = vec![0.0f64; n];
    for step in 1..=max_steps {
        apply(&p, &mut ap);
        let pap = dot(&p, &ap);
        if !(pap.is_finite() && pap > 0.0) {
            return done(x, step - 1, Outcome::Breakdown);
        }
        let alpha = rz / pap;
        for ((xi, ri), (pi, api)) in x.iter_mut().zip(r.iter_mut()).zip(p.iter().zip(&ap)) {
            *xi += alpha * pi;
            *ri -= alpha * api;
        }
        rr = dot(&r, &r);
        if converged(rr) {
            return done(x, step, Outcome::Converged);
        }
        let rz_next = match (&mut z, inverse_diagonal) {
            (Some(z), Some(d)) => {
                for ((zi, ri), di) in z.iter_mut().zip(&r).zip(d) {
                    *zi = ri * di;
                }
                dot(&r, z)
            }
            _ => rr,
        };
        let beta = rz_next / rz;
        rz = rz_next;
        let preconditioned = z.as_deref().unwrap_or(&r);
        for (pi, zi) in p.iter_mut().zip(preconditioned) {
            *pi = zi + beta * *pi;
        }
    }
    done(x, max_steps, Outcome::StepsExhausted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `A = [[4, 1, 0], [1, 3, 1], [0, 1, 2]]`.
    fn apply(p: &[f64], out: &mut [f64]) {
        out[0] = 4.0 * p[0] + p[1];
        out[1] = p[0] + 3.0 * p[1] + p[2];
        out[2] = p[1] + 2.0 * p[2];
    }

    const B: [f64; 3] = [1.0, 2.0, 3.0];
    /// `A^-1 b` (det A = 18).
    const X: [f64; 3] = [4.0 / 18.0, 2.0 / 18.0, 26.0 / 18.0];

    fn strict(relative: f64) -> Tolerance {
        Tolerance {
            relative,
            strict: true,
        }
    }

    #[test]
    fn plain_and_preconditioned_solve_a_small_spd_system() {
        let inv = [0.25, 1.0 / 3.0, 0.5];
        for pre in [None, Some(&inv[..])] {
            let s = solve(apply, &B, pre, strict(1e-14), 10);
            assert_eq!(s.outcome, Outcome::Converged);
            // Exact arithmetic converges in n = 3 steps.
            assert!(s.steps <= 4, "{s:?}");
            for (a, b) in s.x.iter().zip(X) {
                assert!((a - b).abs() < 1e-13, "{:?}", s.x);
            }
        }
    }

    #[test]
    fn scipy_semantics_zero_rhs_loose_tolerance_and_step_cap() {
        // b = 0: x = 0 at once.
        let s = solve(apply, &[0.0; 3], None, strict(1e-6), 10);
        assert_eq!(
            (s.x, s.steps, s.outcome),
            (vec![0.0; 3], 0, Outcome::Converged)
        );
        // tol >= 1: ||b|| < tol ||b|| before the first step, x = 0.
        let s = solve(apply, &B, None, strict(1.0 + 1e-9), 10);
        assert_eq!((s.steps, s.outcome), (0, Outcome::Converged));
        // ... but not with tol = 1 (strict) ...
        assert_eq!(solve(apply, &B, None, strict(1.0), 10).steps, 1);
        // ... unless `<=` is asked for.
        let at_most = Tolerance {
            relative: 1.0,
            strict: false,
        };
        assert_eq!(solve(apply, &B, None, at_most, 10).steps, 0);
        // One step allowed: the first iterate, alpha b with alpha = b.b / b.Ab.
        let s = solve(apply, &B, None, strict(0.0), 1);
        assert_eq!((s.steps, s.outcome), (1, Outcome::StepsExhausted));
        let alpha = 14.0 / 50.0;
        for (a, b) in s.x.iter().zip(B) {
            assert!((a - alpha * b).abs() < 1e-15);
        }
    }

    #[test]
    fn a_matrix_that_is_not_positive_definite_breaks_down() {
        let negative = |p: &[f64], out: &mut [f64]| {
            for (o, v) in out.iter_mut().zip(p) {
                *o = -v;
            }
        };
        let s = solve(negative, &B, None, strict(1e-12), 10);
        assert_eq!((s.steps, s.outcome), (0, Outcome::Breakdown));
        assert_eq!(s.x, vec![0.0; 3]);
    }
}
