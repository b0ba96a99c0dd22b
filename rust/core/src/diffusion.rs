//! Diffusion re-ranking (Iscen, Tolias, Avrithis, Furon, Chum, "Efficient Diffusion on
//! Region Manifolds", CVPR 2017), as in docs/ALGORITHM.md section 3, with its truncation.
//!
//! The graph: item i and j are linked when each is among the other's k nearest neighbours
//! (mutual kNN), with weight `w_ij = max(s_ij, 0)^gamma` where `s_ij` is the mean of the two
//! similarities the kNN lists hold for the pair (they are the same inner product, computed in
//! two blocks, so they can differ in the last bit; the mean makes `W` exactly symmetric).
//! Non-positive similarities give no edge. `S = D^-1/2 W D^-1/2` with `D_ii = sum_j w_ij` is
//! normalised ONCE on the whole graph; an item without mutual neighbours has a zero row.
//!
//! Per query, only its top `truncation` items of the first-pass ranking take part: the system
//! is the principal submatrix of `I - alpha S` on those items (the subgraph they induce, with
//! the whole graph's normalisation: Iscen et al.'s truncation, fyang93/diffusion's
//! `lap_alpha[ids][:, ids]` solved by `cg(..., tol=1e-6, maxiter=20)`). It is symmetric
//! positive definite for `0 <= alpha < 1` (the spectral radius of `S` and of its principal
//! submatrices is at most 1).
//! The right-hand side `y` holds `max(<q, x_j>, 0)^gamma` at the query's top `query_neighbors` items
//! (the first `query_neighbors` of the ranking) and 0 elsewhere. `(I - alpha S) f = y` is solved by
//! plain conjugate gradient from `f = 0`, exactly as `scipy.sparse.linalg.cg` iterates (at
//! most `iterations` steps; stop when `||r|| < tol ||y||`), in `f64`.
//!
//! The output covers the whole input ranking: its first `truncation` items re-ordered by
//! descending `f` (ties by first-pass order), the rest in first-pass order with their
//! first-pass scores. The two parts' scores are on different scales.

use faer::MatRef;
use rayon::prelude::*;

use crate::cg;
use crate::error::Result;
use crate::ranking::{assert_rerank_shapes, Ranking};
use crate::real::Real;
use crate::threads;
use crate::validate;

/// Items of the first-pass ranking that hold the query's heat (Iscen et al.'s `kq`).
pub const DEFAULT_QUERY_NEIGHBORS: usize = 10;
/// Diffusion rate.
pub const DEFAULT_ALPHA: f64 = 0.99;
/// Power of the similarities.
pub const DEFAULT_GAMMA: f64 = 3.0;
/// Items of the first-pass ranking that the diffusion re-orders.
pub const DEFAULT_TRUNCATION: usize = 1000;
/// Conjugate-gradient iterations (fyang93/diffusion's `maxiter`).
pub const DEFAULT_ITERATIONS: usize = 20;
/// Relative residual at which the conjugate gradient stops.
pub const DEFAULT_TOL: f64 = 1e-6;

/// Parameters of diffusion. `Default` gives Iscen et al.'s (and fyang93/diffusion's): the
/// `DEFAULT_*` constants, `query_neighbors = 10`, `alpha = 0.99`, `gamma = 3`, `truncation = 1000`,
/// 20 iterations, `tol = 1e-6`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiffusionParams {
    /// Number of top-ranked items that hold the query's heat (`kq`); clamped to the truncation.
    pub query_neighbors: usize,
    /// Diffusion rate, `0 <= alpha < 1`.
    pub alpha: f64,
    /// Power of the similarities (> 0), in the graph and in `y`.
    pub gamma: f64,
    /// Items of the first-pass ranking the diffusion re-orders; `None`: all of them.
    pub truncation: Option<usize>,
    /// Maximum number of conjugate-gradient iterations.
    pub iterations: usize,
    /// Relative residual `||r|| / ||y||` at which the conjugate gradient stops (>= 0).
    pub tol: f64,
}

impl Default for DiffusionParams {
    fn default() -> Self {
        Self {
            query_neighbors: DEFAULT_QUERY_NEIGHBORS,
            alpha: DEFAULT_ALPHA,
            gamma: DEFAULT_GAMMA,
            truncation: Some(DEFAULT_TRUNCATION),
            iterations: DEFAULT_ITERATIONS,
            tol: DEFAULT_TOL,
        }
    }
}

/// The normalised affinity `S = D^-1/2 W D^-1/2` of a mutual kNN graph, symmetric, in CSR
/// form with sorted column indices and `f64` values.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Transition {
    /// Row `i`'s entries are `indptr[i]..indptr[i + 1]`.
    pub(crate) indptr: Vec<usize>,
    /// Column (neighbour) of each entry.
    pub(crate) indices: Vec<u32>,
    /// `S_ij` of each entry.
    pub(crate) values: Vec<f64>,
}

/// `S` of the mutual kNN graph given as neighbour lists: `indices (n, k)` (0-based, distinct
/// within a row; an item listed as its own neighbour is ignored) and their `similarities`.
pub(crate) fn transition<T: Real>(
    indices: MatRef<'_, i64>,
    similarities: MatRef<'_, T>,
    gamma: f64,
) -> Result<Transition> {
    let n = indices.nrows();
    assert_eq!(
        (similarities.nrows(), similarities.ncols()),
        (n, indices.ncols()),
        "the graph's similarities must have the shape of its indices"
    );
    assert!(n <= u32::MAX as usize, "at most 2^32 - 1 graph items");
    validate::finite(similarities, "the graph's similarities")?;
    validate::rankings(indices, Some(n), "the graph's indices")?;
    threads::install(|_| build_transition(indices, similarities, gamma))
}

fn build_transition<T: Real>(
    indices: MatRef<'_, i64>,
    similarities: MatRef<'_, T>,
    gamma: f64,
) -> Transition {
    let (n, k) = (indices.nrows(), indices.ncols());
    // Each row's neighbours sorted by index (for the mutual test), self links dropped, in
    // flat arrays: the binary searches into other rows then stay within a few MB. The indices
    // are checked (in range, distinct in a row).
    let rows: Vec<Vec<(u32, f64)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut row = Vec::with_capacity(k);
            for p in 0..k {
                let j = indices[(i, p)] as usize;
                if j != i {
                    row.push((j as u32, similarities[(i, p)].f64()));
                }
            }
            row.sort_unstable_by_key(|e| e.0);
            row
        })
        .collect();
    let mut start = Vec::with_capacity(n + 1);
    start.push(0usize);
    for row in &rows {
        start.push(start[start.len() - 1] + row.len());
    }
    let neighbour: Vec<u32> = rows.iter().flat_map(|r| r.iter().map(|e| e.0)).collect();
    let similarity: Vec<f64> = rows.iter().flat_map(|r| r.iter().map(|e| e.1)).collect();
    drop(rows);
    // x^gamma by multiplications for a small integer gamma (the default 3): libm's pow took
    // half of the graph's construction time.
    let integer = gamma == gamma.round() && gamma <= 16.0;
    let power = |s: f64| {
        if integer {
            s.powi(gamma as i32)
        } else {
            s.powf(gamma)
        }
    };
    // Who lists i: the reversed lists by a counting sort, each sorted by the listing item
    // (they are filled in increasing i). Row i's mutual neighbours are then the common
    // entries of two sorted lists, merged in one sequential pass (binary searches in the
    // other rows' lists waited on memory for most of the graph's construction time).
    let mut in_start = vec![0usize; n + 1];
    for &j in &neighbour {
        in_start[j as usize + 1] += 1;
    }
    for j in 0..n {
        in_start[j + 1] += in_start[j];
    }
    let mut fill = in_start.clone();
    let mut in_source = vec![0u32; neighbour.len()];
    let mut in_similarity = vec![0.0f64; neighbour.len()];
    for i in 0..n {
        for e in start[i]..start[i + 1] {
            let j = neighbour[e] as usize;
            in_source[fill[j]] = i as u32;
            in_similarity[fill[j]] = similarity[e];
            fill[j] += 1;
        }
    }
    let weights: Vec<Vec<(u32, f64)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (out_j, out_s) = (
                &neighbour[start[i]..start[i + 1]],
                &similarity[start[i]..start[i + 1]],
            );
            let (in_i, in_s) = (
                &in_source[in_start[i]..in_start[i + 1]],
                &in_similarity[in_start[i]..in_start[i + 1]],
            );
            let mut row = Vec::new();
            let (mut a, mut b) = (0, 0);
            while a < out_j.len() && b < in_i.len() {
                match out_j[a].cmp(&in_i[b]) {
                    std::cmp::Ordering::Less => a += 1,
                    std::cmp::Ordering::Greater => b += 1,
                    std::cmp::Ordering::Equal => {
                        let s = (out_s[a] + in_s[b]) * 0.5;
                        let w = if s > 0.0 { power(s) } else { 0.0 };
                        if w > 0.0 {
                            row.push((out_j[a], w));
                        }
                        a += 1;
                        b += 1;
                    }
                }
            }
            row
        })
        .collect();
    let degree: Vec<f64> = weights
        .iter()
        .map(|row| row.iter().map(|e| e.1).sum())
        .collect();
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0);
    for row in &weights {
        indptr.push(indptr[indptr.len() - 1] + row.len());
    }
    let mut cols = Vec::with_capacity(indptr[n]);
    let mut values = Vec::with_capacity(indptr[n]);
    for (i, row) in weights.iter().enumerate() {
        for &(j, w) in row {
            cols.push(j);
            // d_i * d_j, not two divisions: S stays exactly symmetric.
            values.push(w / (degree[i] * degree[j as usize]).sqrt());
        }
    }
    Transition {
        indptr,
        indices: cols,
        values,
    }
}

/// Diffusion re-ranking of first-pass rankings (see the module docs).
///
/// * `x`: database `(n, d)`; `q`: queries `(nq, d)`; any strides, same `T`.
/// * `ranks`: first-pass rankings `(nq, m)`, 0-based indices into `x`, best first, `m <= n`,
///   distinct within a row.
/// * `scores`: their first-pass scores `(nq, m)`, returned unchanged beyond the truncation;
///   `None`: the inner products `<q, x_i>` (accumulated in `f64`) are returned there.
/// * `graph`: the database's kNN graph as `indices (n, k)` and `similarities (n, k)`.
///
/// Queries run in parallel, each on one thread; the result does not depend on the number of
/// threads.
///
/// Errors, in this order: NaN or infinity in the graph's similarities, graph indices out of
/// `0..n` or repeated in a row, an entry of `ranks` out of `0..n` or repeated in its row, NaN
/// or infinity in a row of `x` that `ranks` names (no other row is read), in `q` or `scores`
/// (see [`crate::validate`]).
///
/// # Panics
/// If the shapes do not agree ([`crate::ranking::assert_rerank_shapes`], one graph row per item)
/// or the parameters are out of their domains (`0 <= alpha < 1`, `gamma > 0`, `tol >= 0`).
pub fn diffusion_rerank<T: Real>(
    x: MatRef<'_, T>,
    q: MatRef<'_, T>,
    ranks: MatRef<'_, i64>,
    scores: Option<MatRef<'_, T>>,
    graph_indices: MatRef<'_, i64>,
    graph_similarities: MatRef<'_, T>,
    params: DiffusionParams,
) -> Result<Ranking<T>> {
    let (n, nq, m) = (x.nrows(), ranks.nrows(), ranks.ncols());
    assert_rerank_shapes(x, q, ranks, scores);
    assert_eq!(
        graph_indices.nrows(),
        n,
        "the graph must have one row per database item"
    );
    assert!(
        (0.0..1.0).contains(&params.alpha) && params.gamma > 0.0 && params.tol >= 0.0,
        "diffusion needs 0 <= alpha < 1, gamma > 0, tol >= 0, got {params:?}"
    );
    let s = transition(graph_indices, graph_similarities, params.gamma)?;
    threads::install(|_| {
        validate::rerank_inputs(x, q, scores, ranks)?;
        let rows: Vec<(Vec<i64>, Vec<T>)> = (0..nq)
            .into_par_iter()
            .map_init(
                || vec![u32::MAX; n],
                |pos, i| diffuse_one(x, q, i, ranks, scores, &s, &params, pos),
            )
            .collect::<Result<_>>()?;
        Ok(Ranking::from_rows(rows, m))
    })?
}

/// `<x_i, q_row>` accumulated in `f64`.
fn dot<T: Real>(x: MatRef<'_, T>, i: usize, q: &[f64]) -> f64 {
    let row = x.row(i);
    match row.try_as_row_major() {
        Some(r) => r.as_slice().iter().zip(q).map(|(a, b)| a.f64() * b).sum(),
        None => q.iter().enumerate().map(|(c, b)| row[c].f64() * b).sum(),
    }
}

/// One query's re-ranked row. `pos` (length n, all `u32::MAX`) is scratch, restored.
#[allow(clippy::too_many_arguments)]
fn diffuse_one<T: Real>(
    x: MatRef<'_, T>,
    q: MatRef<'_, T>,
    i: usize,
    ranks: MatRef<'_, i64>,
    scores: Option<MatRef<'_, T>>,
    s: &Transition,
    params: &DiffusionParams,
    pos: &mut [u32],
) -> Result<(Vec<i64>, Vec<T>)> {
    let m = ranks.ncols();
    let t = params.truncation.unwrap_or(m).min(m);
    let kq = params.query_neighbors.min(t);
    let row: Vec<usize> = (0..m).map(|p| ranks[(i, p)] as usize).collect();
    let qf: Vec<f64> = (0..q.ncols()).map(|c| q[(i, c)].f64()).collect();
    let mut out_ranks: Vec<i64> = row.iter().map(|&r| r as i64).collect();
    let mut out_scores: Vec<T> = (0..m)
        .map(|p| match (p < t, scores) {
            (true, _) => T::of(0.0),
            (false, Some(sc)) => sc[(i, p)],
            (false, None) => T::of(dot(x, row[p], &qf)),
        })
        .collect();
    if !validate::all_finite(&out_scores) {
        return Err(validate::overflow::<T>("Q and X"));
    }
    if t == 0 {
        return Ok((out_ranks, out_scores));
    }
    let y: Vec<f64> = (0..t)
        .map(|a| {
            if a < kq {
                dot(x, row[a], &qf).max(0.0).powf(params.gamma)
            } else {
                0.0
            }
        })
        .collect();
    // The subgraph induced by the top t items, in local indices (positions in the ranking).
    // S's rows are read in increasing item order, a forward sweep the hardware prefetches
    // (reading them in ranking order, at random, left this loop waiting on memory); each
    // stored row remembers its local index.
    let mut items: Vec<(usize, u32)> = row[..t]
        .iter()
        .enumerate()
        .map(|(a, &r)| (r, a as u32))
        .collect();
    items.sort_unstable();
    for &(r, a) in &items {
        pos[r] = a;
    }
    let total: usize = items
        .iter()
        .map(|&(r, _)| s.indptr[r + 1] - s.indptr[r])
        .sum();
    let mut rows = Vec::with_capacity(t);
    let mut indptr = Vec::with_capacity(t + 1);
    let mut cols = vec![0u32; total];
    let mut vals = vec![0.0f64; total];
    let mut len = 0;
    indptr.push(0);
    for &(r, a) in &items {
        // Branch-free: every entry is written, only those inside the truncation are kept
        // (about half of them, at random: a branch mispredicted every other entry).
        for e in s.indptr[r]..s.indptr[r + 1] {
            let b = pos[s.indices[e] as usize];
            cols[len] = b;
            vals[len] = s.values[e];
            len += usize::from(b != u32::MAX);
        }
        rows.push(a);
        indptr.push(len);
    }
    cols.truncate(len);
    vals.truncate(len);
    for &(r, _) in &items {
        pos[r] = u32::MAX;
    }
    let sub = Csr {
        rows,
        indptr,
        indices: cols,
        values: vals,
    };
    let f = conjugate_gradient(&sub, params.alpha, &y, params.iterations, params.tol);
    let mut order: Vec<usize> = (0..t).collect();
    // Stable: equal diffusion scores keep their first-pass order.
    order.sort_by(|&a, &b| f[b].partial_cmp(&f[a]).unwrap_or(std::cmp::Ordering::Equal));
    for (p, &o) in order.iter().enumerate() {
        out_ranks[p] = row[o] as i64;
        out_scores[p] = T::of(f[o] + 0.0);
    }
    Ok((out_ranks, out_scores))
}

/// A square sparse matrix in CSR form over local indices, its rows stored in any order.
struct Csr {
    /// Local index of each stored row.
    rows: Vec<u32>,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f64>,
}

/// `out = (I - alpha S) p`.
fn apply(s: &Csr, alpha: f64, p: &[f64], out: &mut [f64]) {
    for (k, &a) in s.rows.iter().enumerate() {
        let (lo, hi) = (s.indptr[k], s.indptr[k + 1]);
        let sp: f64 = s.indices[lo..hi]
            .iter()
            .zip(&s.values[lo..hi])
            .map(|(&b, v)| v * p[b as usize])
            .sum();
        out[a as usize] = p[a as usize] - alpha * sp;
    }
}

/// Conjugate gradient for `(I - alpha S) f = y` from `f = 0`, step for step as
/// `scipy.sparse.linalg.cg(A, y, rtol=tol, atol=0, maxiter=iterations)` ([`cg::solve`]
/// without a preconditioner): before each step, stop when `||r|| < tol ||y||`; the last
/// iterate when the steps run out (or at a breakdown, which only rounding at convergence
/// causes); `y = 0` gives `f = 0`.
fn conjugate_gradient(s: &Csr, alpha: f64, y: &[f64], iterations: usize, tol: f64) -> Vec<f64> {
    let tolerance = cg::Tolerance {
        relative: tol,
        strict: true,
    };
    cg::solve(
        |p, out| apply(s, alpha, p, out),
        y,
        None,
        tolerance,
        iterations,
    )
    .x
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;

    #[test]
    fn mutual_graph_weights_and_normalisation() {
        // 0 <-> 1 mutual (s = 0.5 and 0.7: mean 0.6), 1 <-> 2 mutual (0.2), 2 -> 0 one-way.
        let idx = Mat::from_fn(3, 1, |i, _| [1i64, 0, 0][i]);
        let idx2 = Mat::from_fn(3, 2, |i, j| [[1i64, 2], [0, 2], [1, 0]][i][j]);
        let sim2 = Mat::from_fn(3, 2, |i, j| [[0.5, 0.1], [0.7, 0.2], [0.2, 0.9]][i][j]);
        let s = transition(idx2.as_ref(), sim2.as_ref(), 1.0).unwrap();
        // W: w01 = 0.6, w12 = 0.2, w02 = (0.1 + 0.9) / 2 = 0.5 (0 lists 2 and 2 lists 0).
        assert_eq!(s.indptr, vec![0, 2, 4, 6]);
        assert_eq!(s.indices, vec![1, 2, 0, 2, 0, 1]);
        let d: [f64; 3] = [1.1, 0.8, 0.7];
        let want = [0.6 / (d[0] * d[1]).sqrt(), 0.5 / (d[0] * d[2]).sqrt()];
        assert!((s.values[0] - want[0]).abs() < 1e-15 && (s.values[1] - want[1]).abs() < 1e-15);
        assert_eq!(s.values[0], s.values[2]);
        // One-way links only: no edge.
        let sim1 = Mat::from_fn(3, 1, |_, _| 1.0f64);
        let s1 = transition(idx.as_ref(), sim1.as_ref(), 3.0).unwrap();
        assert_eq!(s1.indices, vec![1, 0]);
        assert_eq!(s1.values, vec![1.0, 1.0]);
    }

    #[test]
    fn conjugate_gradient_solves_a_two_node_system() {
        // S = [[0, 1], [1, 0]], alpha = 0.5: (I - 0.5 S) f = (1, 0) -> f = (4/3, 2/3).
        let s = Csr {
            rows: vec![1, 0],
            indptr: vec![0, 1, 2],
            indices: vec![0, 1],
            values: vec![1.0, 1.0],
        };
        let f = conjugate_gradient(&s, 0.5, &[1.0, 0.0], 20, 1e-12);
        assert!((f[0] - 4.0 / 3.0).abs() < 1e-12 && (f[1] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            conjugate_gradient(&s, 0.5, &[0.0, 0.0], 20, 1e-12),
            vec![0.0, 0.0]
        );
    }

    #[test]
    fn rerank_reorders_the_truncated_part_only() {
        // Items 0, 1, 2 form a mutual triangle; 3 is far. The query is nearest to 0.
        let xs = [[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]];
        let x = Mat::from_fn(4, 2, |i, j| xs[i][j]);
        let q = Mat::from_fn(1, 2, |_, j| [1.0, 0.0][j]);
        let g = crate::knn::knn_graph(x.as_ref(), 2).unwrap();
        let gi = Mat::from_fn(4, 2, |i, j| g.indices[i * 2 + j]);
        let gs = Mat::from_fn(4, 2, |i, j| g.similarities[i * 2 + j]);
        let ranks = Mat::from_fn(1, 4, |_, j| [2i64, 3, 0, 1][j]);
        let params = DiffusionParams {
            query_neighbors: 1,
            truncation: Some(3),
            ..Default::default()
        };
        let r = diffusion_rerank(
            x.as_ref(),
            q.as_ref(),
            ranks.as_ref(),
            None,
            gi.as_ref(),
            gs.as_ref(),
            params,
        )
        .unwrap();
        // y heats item 2 (the ranking's first); inside the top 3 {2, 3, 0} only 2 - 0 is a
        // mutual link, so f_2 > f_0 > f_3 = 0; item 1 stays last with its inner product 0.9.
        assert_eq!(r.ranks, vec![2, 0, 3, 1]);
        assert!(r.scores[0] > r.scores[1] && r.scores[1] > 0.0);
        assert_eq!((r.scores[2], r.scores[3]), (0.0, 0.9));
        let bad = Mat::from_fn(1, 4, |_, j| [3i64, 3, 1, 2][j]);
        assert!(diffusion_rerank(
            x.as_ref(),
            q.as_ref(),
            bad.as_ref(),
            None,
            gi.as_ref(),
            gs.as_ref(),
            params
        )
        .is_err());
    }
}
