//! HeR: heat-diffusion re-ranking of a first-pass ranking (docs/ALGORITHM.md, section 2).
//!
//! For each query, its `k` top-ranked database vectors and the query itself (last) form a
//! small graph: the `k + 1` rows are centred by their own mean (no re-normalisation), the
//! affinity is their Gram matrix with a zero diagonal and the negative entries removed, and a
//! ground node takes `z = ground * mean of the positive affinities`. The query is held at
//! temperature 1 as the only heat source; a candidate's score is its steady-state
//! temperature `G_{i,q}` (`G = L^-1`, `L = I - D^-1 A`), obtained with ONE solve of the SPD
//! system `M x = D e_q` (`M = D - A`), never an inverse. The top `k` are re-ordered by
//! descending temperature (ties by first-pass order); positions beyond `k` are kept.
//!
//! Degenerate cases follow from the maths and are documented rather than special-cased:
//! with no positive affinity at all `A = 0`, so `L = I`, `G = I` and every candidate's
//! temperature is exactly 0: the first-pass order of the top `k` is kept. A candidate with no
//! positive affinity (or none connecting it to the query) also has temperature 0 and goes
//! after the heated ones, in first-pass order.
//!
//! Why conjugate gradient, with Cholesky as its fallback: building `M` (centring, Gram,
//! threshold: 2.9-5.3 ms a query at `k = 800`, `d = 512`) dominates either way, and CG (20-29
//! iterations) was measured 13-17% faster than a Cholesky solve on Holidays and 8-20% slower
//! on clustered synthetic data (under 10% of a query either way); in `f32` it is 12-20 times
//! more accurate (its `f64` vectors solve the `f32` system to 1e-13, an `f32` Cholesky factor
//! is off by 1e-4, enough to reorder near-ties: a query's candidate temperatures typically
//! differ by under 1%).

use faer::reborrow::{Reborrow, ReborrowMut};
use faer::Mat;
use faer::{MatMut, MatRef, RowRef};
use rayon::prelude::*;

use crate::affinity::{heat_system, AffinityRules, HeatSystem};
use crate::centre::centre_candidates;
use crate::cg;
use crate::error::Result;
use crate::heat::solve_last_heated;
use crate::parallel::shared_mat::SharedMat;
use crate::parallel::team;
use crate::parallel::tiled_cholesky::tile_size;
use crate::parallel::workspace::with_workspace;
use crate::ranking::{assert_rerank_shapes, Ranking};
use crate::real::Real;
use crate::reduce::dot_with;
use crate::simd::symv;
use crate::{threads, validate};

/// Number of top-ranked candidates re-ranked per query (the paper's `k = 800`).
pub const DEFAULT_DEPTH: usize = 800;
/// Below this ground factor, `f32` input is re-ranked in `f64`. The ground conductance is the
/// heat system's smallest eigenvalue, and `f32` entries of `M` round it away as it shrinks:
/// measured on clustered unit vectors (depth 800, d = 64), `f32` against `f64` temperatures
/// differ by 1.5e-5 (0.3% of top-100 positions swapped, near-ties) at 0.05 and 0.1, but by
/// 8e-5 (2.7%) at 0.01 and 6e-4 (17%) at 0.001.
pub const F32_MIN_GROUND: f64 = 0.05;
/// Ground conductance factor: `z = 0.1 * mean of the positive affinities` (the paper).
pub const DEFAULT_GROUND: f64 = 0.1;

/// How each query's heat system `M x = D e_q` is solved. Both are exact to rounding; HeR
/// always uses [`Solver::ConjugateGradient`], which falls back to [`Solver::Cholesky`] when
/// it does not converge. The unit tests compare the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Solver {
    /// Dense Cholesky factor of the `(k+1) x (k+1)` matrix in the input's dtype (about
    /// `k^3 / 3` flops), then one triangular solve: the query is the LAST node, so the forward
    /// substitution of `D e_q` is a single division and only the back substitution remains.
    /// Asked for directly only by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    Cholesky,
    /// Jacobi-preconditioned conjugate gradient on the matrix in the input's dtype with `f64`
    /// vectors, to a residual of `1e-13 * ||D e_q||` (each iteration one pass over the lower
    /// triangle of `M`, `k^2 / 2` entries and `k^2` multiply-adds), falling back to
    /// [`Solver::Cholesky`] after [`CG_MAX_ITERATIONS`] iterations.
    ConjugateGradient,
}

/// Relative residual at which the conjugate gradient stops.
const CG_TOLERANCE: f64 = 1e-13;
/// Iterations after which the conjugate gradient gives up and the query is solved by Cholesky:
/// about four times what Holidays and clustered synthetic data need at `k = 800` (20 to 29);
/// each iteration costs about 1/20 of a Cholesky factor, so a query that hits the cap costs
/// about 6 times the usual solve, never unboundedly more.
const CG_MAX_ITERATIONS: usize = 100;

/// Parameters of HeR. `Default` gives the paper's `k = 800`, `ground = 0.1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HerParams {
    /// Number of top-ranked candidates re-ranked, the paper's `k` (clamped to the ranking's
    /// length; 0 returns the ranking unchanged).
    pub depth: usize,
    /// Ground conductance factor: `z = ground * mean of the positive affinities` (> 0).
    pub ground: f64,
}

impl Default for HerParams {
    fn default() -> Self {
        Self {
            depth: DEFAULT_DEPTH,
            ground: DEFAULT_GROUND,
        }
    }
}

/// HeR of every query (docs/ALGORITHM.md, section 2).
///
/// * `x`: database `(n, d)`; `q`: queries `(nq, d)`; any strides.
/// * `ranks`: first-pass rankings `(nq, m)`, 0-based indices into `x`, best first, `m <= n`,
///   no index twice in a row.
/// * `scores`: the first-pass scores `(nq, m)`; only the positions beyond `k` are read (they
///   are returned there unchanged). `None`: those positions get the inner product
///   `<q, x_i>` (accumulated in `f64`).
///
/// The query that heats the graph is `q`'s row, whatever produced `ranks`: pass an expanded
/// query with the ORIGINAL ranking for "QE + HeR".
///
/// Returns the re-ranked rankings `(nq, m)`: scores are heat temperatures (`f64` rounded to
/// `T`) in the top `k` of each row, first-pass scores after it.
///
/// Queries run in parallel on heatsearch's pool, each on one thread; the result does not
/// depend on the number of threads.
///
/// Errors: an entry of `ranks` out of `0..n` or repeated in its row, NaN or infinity in a row
/// of `x` that `ranks` names (no other row is read, nor checked), in `q` or `scores` (checked
/// in that order; see [`crate::validate`]).
///
/// # Panics
/// If the shapes do not agree ([`crate::ranking::assert_rerank_shapes`]), `x` is empty or
/// `ground <= 0`.
pub fn heat_rerank<T: Real>(
    x: MatRef<'_, T>,
    q: MatRef<'_, T>,
    ranks: MatRef<'_, i64>,
    scores: Option<MatRef<'_, T>>,
    params: HerParams,
) -> Result<Ranking<T>> {
    rerank_with(x, q, ranks, scores, params, Solver::ConjugateGradient)
}

/// [`heat_rerank`] with the given solver.
fn rerank_with<T: Real>(
    x: MatRef<'_, T>,
    q: MatRef<'_, T>,
    ranks: MatRef<'_, i64>,
    scores: Option<MatRef<'_, T>>,
    params: HerParams,
    solver: Solver,
) -> Result<Ranking<T>> {
    let (nq, m) = (ranks.nrows(), ranks.ncols());
    assert_rerank_shapes(x, q, ranks, scores);
    assert!(
        x.nrows() > 0 && x.ncols() > 0,
        "HeR needs a non-empty database"
    );
    assert!(
        params.ground > 0.0,
        "HeR needs ground > 0, got {}",
        params.ground
    );
    threads::install(|_| {
        validate::rerank_inputs(x, q, scores, ranks)?;
        let rows: Vec<(Vec<i64>, Vec<T>)> = (0..nq)
            .into_par_iter()
            .map(|i| rerank_one(x, q, i, ranks, scores, params, solver))
            .collect::<Result<_>>()?;
        Ok(Ranking::from_rows(rows, m))
    })?
}

/// One query's re-ranked row: `(ranks, scores)`, each of length m.
fn rerank_one<T: Real>(
    x: MatRef<'_, T>,
    q: MatRef<'_, T>,
    i: usize,
    ranks: MatRef<'_, i64>,
    scores: Option<MatRef<'_, T>>,
    params: HerParams,
    solver: Solver,
) -> Result<(Vec<i64>, Vec<T>)> {
    let m = ranks.ncols();
    let k = params.depth.min(m);
    let row: Vec<usize> = (0..m).map(|p| ranks[(i, p)] as usize).collect();
    let query = q.row(i);
    let mut out_ranks: Vec<i64> = row.iter().map(|&r| r as i64).collect();
    let mut out_scores: Vec<T> = match scores {
        Some(s) => (0..m)
            .map(|p| if p < k { T::of(0.0) } else { s[(i, p)] })
            .collect(),
        None => {
            let qf: Vec<f64> = row_f64(query);
            let tail: Vec<T> = (0..m)
                .map(|p| {
                    if p < k {
                        T::of(0.0)
                    } else {
                        T::of(dot_row(x.row(row[p]), &qf))
                    }
                })
                .collect();
            if !validate::all_finite(&tail) {
                return Err(validate::overflow::<T>("Q and X"));
            }
            tail
        }
    };
    let t = if std::mem::size_of::<T>() == 4 && params.ground < F32_MIN_GROUND {
        // The heat system of a small ground is too ill-conditioned for f32: solve it in f64.
        let cells = Mat::<f64>::from_fn(k, x.ncols(), |j, c| x[(row[j], c)].f64());
        let query = Mat::<f64>::from_fn(1, x.ncols(), |_, c| query[c].f64());
        let all: Vec<usize> = (0..k).collect();
        heat_temperatures(cells.as_ref(), query.row(0), &all, params.ground, solver)?
    } else {
        heat_temperatures(x, query, &row[..k], params.ground, solver)?
    };
    let mut order: Vec<usize> = (0..k).collect();
    // Stable: equal temperatures keep their first-pass order. Temperatures are finite.
    order.sort_by(|&a, &b| t[b].partial_cmp(&t[a]).unwrap_or(std::cmp::Ordering::Equal));
    for (p, &o) in order.iter().enumerate() {
        out_ranks[p] = row[o] as i64;
        // `+ 0.0` turns the -0.0 a substitution can leave into 0.0.
        out_scores[p] = T::of(t[o] + 0.0);
    }
    Ok((out_ranks, out_scores))
}

/// A row as `f64` values.
fn row_f64<T: Real>(row: RowRef<'_, T>) -> Vec<f64> {
    (0..row.ncols()).map(|c| row[c].f64()).collect()
}

/// `<row, y>` accumulated in `f64`.
fn dot_row<T: Real>(row: RowRef<'_, T>, y: &[f64]) -> f64 {
    match row.try_as_row_major() {
        Some(r) => dot_with(r.as_slice(), y, |a, b| a * b),
        None => (0..row.ncols()).map(|c| row[c].f64() * y[c]).sum(),
    }
}

/// Jacobi-preconditioned conjugate gradient for `M x = M_qq e_q` (`q` the last node), in
/// `f64` vectors over `M` as stored (its lower triangle): the solution, or `None` when it
/// has not converged within [`CG_MAX_ITERATIONS`] iterations (or broke down: `M` is SPD, so
/// only rounding can make `p^T M p <= 0`), and Cholesky takes over.
fn solve_cg<T: Real>(m: MatRef<'_, T>) -> Option<Vec<f64>> {
    let size = m.nrows();
    let inverse_diagonal: Vec<f64> = (0..size).map(|i| 1.0 / m[(i, i)].f64()).collect();
    let mut b = vec![0.0f64; size];
    b[size - 1] = m[(size - 1, size - 1)].f64();
    let tolerance = cg::Tolerance {
        relative: CG_TOLERANCE,
        strict: false,
    };
    let solution = cg::solve(
        |p, mp| symv::symv_lower(m, p, mp),
        &b,
        Some(&inverse_diagonal),
        tolerance,
        CG_MAX_ITERATIONS,
    );
    (solution.outcome == cg::Outcome::Converged).then_some(solution.x)
}

/// The heat temperature `G_{i,q}` of each candidate (rows `candidates` of `x`, in that order)
/// when `query` alone is heated, in `f64`; `x` and `query` validated, `query` of length `d`.
fn heat_temperatures<T: Real>(
    x: MatRef<'_, T>,
    query: RowRef<'_, T>,
    candidates: &[usize],
    ground: f64,
    solver: Solver,
) -> Result<Vec<f64>> {
    let (k, d) = (candidates.len(), x.ncols());
    if k == 0 {
        return Ok(Vec::new());
    }
    let size = k + 1;
    with_workspace::<T, _>(|ws| {
        let [cells, mut m, _, _] = ws.views([(d, size), (size, size), (0, 0), (0, 0)]);
        // No positive affinity: A = 0, G = I, every candidate's temperature is 0.
        let Some(system) = build_heat_system(x, query, candidates, ground, cells, m.rb_mut())
        else {
            return Ok(vec![0.0; k]);
        };
        let mut t = solve_heat_system(m, solver)?;
        t.truncate(k);
        // Exactly 0 already; written out so that the rule does not rest on rounding.
        for (ti, &c) in t.iter_mut().zip(&system.connected) {
            if !c {
                *ti = 0.0;
            }
        }
        Ok(t)
    })
}

/// Steps 1-3 of one query: `M = D - A` of the candidates and the query (last) into the lower
/// triangle of `m` (`(k+1) x (k+1)`, column-major), `cells` (`d x (k+1)`) as scratch; `None`
/// when no affinity is positive.
fn build_heat_system<T: Real>(
    x: MatRef<'_, T>,
    query: RowRef<'_, T>,
    candidates: &[usize],
    ground: f64,
    mut cells: MatMut<'_, T>,
    m: MatMut<'_, T>,
) -> Option<HeatSystem> {
    centre_candidates(x, query, candidates, cells.rb_mut());
    let rules = AffinityRules {
        threshold: 0.0,
        ground,
    };
    let m = SharedMat::new(m);
    team::run(team::Members::Caller, |crew| {
        heat_system(crew, cells.rb(), None, rules, &m, tile_size(m.nrows()))
    })
}

/// Step 4 of one query: `x` with `M x = M_qq e_q` (`q` the last node). The Cholesky solve
/// (asked for, or the fallback of a conjugate gradient that did not converge) overwrites `m`
/// with its factor.
fn solve_heat_system<T: Real>(m: MatMut<'_, T>, solver: Solver) -> Result<Vec<f64>> {
    let cg = match solver {
        Solver::Cholesky => None,
        Solver::ConjugateGradient => solve_cg(m.rb()),
    };
    match cg {
        Some(t) => Ok(t),
        None => solve_last_heated(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn mat(rows: &[&[f64]]) -> faer::Mat<f64> {
        faer::Mat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
    }

    fn rerank(
        x: &faer::Mat<f64>,
        q: &faer::Mat<f64>,
        ranks: &[i64],
        k: usize,
        solver: Solver,
    ) -> Ranking<f64> {
        let r = faer::Mat::from_fn(q.nrows(), ranks.len() / q.nrows(), |i, p| {
            ranks[i * (ranks.len() / q.nrows()) + p]
        });
        rerank_with(
            x.as_ref(),
            q.as_ref(),
            r.as_ref(),
            None,
            HerParams {
                depth: k,
                ground: 0.1,
            },
            solver,
        )
        .unwrap()
    }

    /// Worked by hand. Database x0 = (2, 0), x1 = (0, 2), x2 = (-2, 0); query (2, 0); first
    /// pass [1, 2, 0].
    /// Rows [x1, x2, x0, q] = [(0,2), (-2,0), (2,0), (2,0)], mean (0.5, 0.5), centred
    /// t1 = (-0.5, 1.5), t2 = (-2.5, -0.5), t0 = (1.5, -0.5), tq = (1.5, -0.5).
    /// Gram (order x1, x2, x0, q): t1.t2 = 0.5, t1.t0 = -1.5, t1.tq = -1.5, t2.t0 = -3.5,
    /// t2.tq = -3.5, t0.tq = 2.5. After the threshold: A_12 = 0.5 (x1-x2), A_0q = 2.5 (x0-q).
    /// Positive mean (0.5 + 2.5) / 2 = 1.5, z = 0.15. The query's component is {x0, q}:
    /// M restricted to it is [[2.65, -2.5], [-2.5, 2.65]], right-hand side D_qq e_q = (0, 2.65).
    /// det = 2.65^2 - 2.5^2 = 0.7725; x0 = 2.5 * 2.65 / 0.7725, x_q = 2.65^2 / 0.7725.
    /// x1, x2 are connected to each other but not to the query: temperature 0.
    /// Re-ranked: [0 (hot), 1, 2 (both 0, first-pass order)].
    #[test]
    fn small_case_worked_by_hand() {
        let x = mat(&[&[2.0, 0.0], &[0.0, 2.0], &[-2.0, 0.0]]);
        let q = mat(&[&[2.0, 0.0]]);
        for solver in [Solver::Cholesky, Solver::ConjugateGradient] {
            let out = rerank(&x, &q, &[1, 2, 0], 3, solver);
            assert_eq!(out.ranks, vec![0, 1, 2]);
            let expected = 2.5 * 2.65 / 0.7725;
            assert!(
                (out.scores[0] - expected).abs() < 1e-12 * expected,
                "{:?}",
                out.scores
            );
            assert_eq!(&out.scores[1..], &[0.0, 0.0]);
        }
    }

    /// The same query with k = 2 of m = 3: the tail keeps its position and gets the
    /// inner product; the head [x1, x2] with the query: rows (0,2), (-2,0), (2,0), mean (0, 2/3),
    /// centred (0, 4/3), (-2, -2/3), (2, -2/3): Gram t0.t1 = -8/9, t0.tq = -8/9,
    /// t1.tq = -4 + 4/9: nothing positive, so the order is kept and the temperatures are 0.
    #[test]
    fn degenerate_head_keeps_order_and_tail_is_untouched() {
        let x = mat(&[&[2.0, 0.0], &[0.0, 2.0], &[-2.0, 0.0]]);
        let q = mat(&[&[2.0, 0.0]]);
        let out = rerank(&x, &q, &[1, 2, 0], 2, Solver::ConjugateGradient);
        assert_eq!(out.ranks, vec![1, 2, 0]);
        assert_eq!(out.scores, vec![0.0, 0.0, 4.0]);
        // k = 0: unchanged, all first-pass inner products.
        let out = rerank(&x, &q, &[1, 2, 0], 0, Solver::ConjugateGradient);
        assert_eq!(out.ranks, vec![1, 2, 0]);
        assert_eq!(out.scores, vec![0.0, -4.0, 4.0]);
    }

    #[test]
    fn solvers_agree_on_a_larger_random_system() {
        // A deterministic pseudo-random database (LCG), 60 x 8, query = row 5 perturbed.
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let x = faer::Mat::from_fn(60, 8, |_, _| next());
        let q = faer::Mat::from_fn(1, 8, |_, j| x[(5, j)] + 0.01 * (j as f64));
        let ranks: Vec<i64> = (0..60).rev().collect();
        let a = rerank(&x, &q, &ranks, 50, Solver::Cholesky);
        let b = rerank(&x, &q, &ranks, 50, Solver::ConjugateGradient);
        for (s, t) in a.scores.iter().zip(&b.scores) {
            assert!((s - t).abs() <= 1e-10 * s.abs().max(1e-3), "{s} vs {t}");
        }
        assert_eq!(&a.ranks[50..], &ranks[50..]);
    }

    #[test]
    fn bad_rankings_are_errors() {
        let x = mat(&[&[2.0, 0.0], &[0.0, 2.0], &[-2.0, 0.0]]);
        let q = mat(&[&[2.0, 0.0]]);
        let run = |r: &[i64]| {
            let r = faer::Mat::from_fn(1, r.len(), |_, p| r[p]);
            heat_rerank(
                x.as_ref(),
                q.as_ref(),
                r.as_ref(),
                None,
                HerParams::default(),
            )
        };
        assert!(matches!(run(&[0, 3]), Err(Error::Value(_))));
        assert!(matches!(run(&[0, -1]), Err(Error::Value(_))));
        assert!(matches!(run(&[1, 1]), Err(Error::Value(_))));
        // The sort-based check of rankings much shorter than the database.
        let big = faer::Mat::from_fn(100, 2, |i, j| (i + j) as f64);
        let rank = |r: &[i64]| faer::Mat::from_fn(1, r.len(), |_, p| r[p]);
        let q2 = faer::Mat::from_fn(1, 2, |_, j| j as f64);
        let err = heat_rerank(
            big.as_ref(),
            q2.as_ref(),
            rank(&[7, 3, 7]).as_ref(),
            None,
            HerParams::default(),
        );
        assert_eq!(
            err,
            Err(Error::Value(
                "ranks must not hold an index twice in a row, got 7 again at row 0, column 2"
                    .into()
            ))
        );
        assert!(heat_rerank(
            big.as_ref(),
            q2.as_ref(),
            rank(&[7, 3, 8]).as_ref(),
            None,
            HerParams::default()
        )
        .is_ok());
    }

    #[test]
    #[should_panic(expected = "ranks must have at most n columns")]
    fn a_ranking_longer_than_the_database_is_a_broken_precondition() {
        let x = mat(&[&[2.0, 0.0], &[0.0, 2.0], &[-2.0, 0.0]]);
        let q = mat(&[&[2.0, 0.0]]);
        let r = faer::Mat::from_fn(1, 4, |_, p| [0i64, 1, 2, 0][p]);
        let _ = heat_rerank(
            x.as_ref(),
            q.as_ref(),
            r.as_ref(),
            None,
            HerParams::default(),
        );
    }

    #[test]
    #[should_panic(expected = "HeR needs ground > 0")]
    fn a_zero_ground_is_a_broken_precondition() {
        let x = mat(&[&[2.0, 0.0], &[0.0, 2.0]]);
        let q = mat(&[&[2.0, 0.0]]);
        let r = faer::Mat::from_fn(1, 1, |_, _| 0i64);
        let bad = HerParams {
            ground: 0.0,
            ..HerParams::default()
        };
        let _ = heat_rerank(x.as_ref(), q.as_ref(), r.as_ref(), None, bad);
    }
}
