//! The Cholesky factor of HeW's heat system and its inverse, tile by tile, as one task graph
//! shared by a team ([`crate::parallel::task_graph`], [`crate::parallel::team::Crew::graph`]).
//!
//! `M = L L^T` (N x N, SPD) and `V = L^-1`, both lower triangular, on square tiles of side
//! `tile` (the last row of tiles may be shorter). Four kinds of task, all of them tile
//! products but the diagonal factorisations:
//!
//! * `Factor(k)`: `L_kk` (faer, in `f64` whatever the input: see [`factor_tile`]) and
//!   `V_kk = L_kk^-1` (faer) of diagonal tile k, on one core;
//! * `Panel(i, k)`, i > k: `L_ik = A_ik V_kk^T` (the triangular solve as a product);
//! * `Update(i, j, k)`, k < j <= i: `A_ij -= L_ik L_jk^T` (right-looking, so the next
//!   diagonal tile is ready as early as possible);
//! * `Invert(i, j)`, j < i: `V_ij = -V_ii (sum_{j <= m < i} L_im V_mj)` (left-looking: one
//!   product with a long inner dimension, and each tile of V written once).
//!
//! `N^3/3 + N^3/3` flops, plus the diagonal tiles' triangles multiplied as full squares.
//! Results do not depend on the number of threads: each tile's sequence of operations is
//! fixed by the graph (the updates of a tile run in the order of k).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, MatMut, Par};

use super::shared_mat::SharedMat;
use super::task_graph::TaskGraph;
use super::team::Crew;
use crate::error::Result;
use crate::heat::not_positive_definite;
use crate::real::Real;

/// The side of the tiles for an N x N system. Measured on 2 cores (f32): 96 is fastest at
/// N = 768 (a 96 x 96 tile product runs at about 180 GFLOP/s on one core and there are
/// enough of them to share; 64, 128 and 192 were slower), larger tiles pay off from N = 1536
/// on.
pub(crate) fn tile_size(n: usize) -> usize {
    if n <= 1024 {
        96
    } else {
        192
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Task {
    Factor(usize),
    Panel(usize, usize),
    Update(usize, usize, usize),
    Invert(usize, usize),
}

/// The tasks for `tiles` tiles a side and their run order for a team of `workers`.
pub(crate) struct Plan {
    tasks: Vec<Task>,
    graph: TaskGraph,
}

impl Plan {
    fn new(tiles: usize, workers: usize) -> Self {
        let mut tasks = Vec::new();
        let mut needs: Vec<Vec<usize>> = Vec::new();
        let mut cost = Vec::new();
        let mut id: HashMap<Task, usize> = HashMap::new();
        // Costs in half tile products (tile^3 flops): a product costs 2. A diagonal
        // factorisation and inverse is 2/3 of a product in flops but took as long as about
        // 2.5 products (measured), so it costs 5.
        let mut add = |task: Task, before: &[Task], c: u64| {
            needs.push(before.iter().map(|b| id[b]).collect());
            id.insert(task, tasks.len());
            tasks.push(task);
            cost.push(c);
        };
        // Ids in a topological order: step by step.
        for k in 0..tiles {
            let updated = |i: usize, j: usize| {
                if k == 0 {
                    vec![]
                } else {
                    vec![Task::Update(i, j, k - 1)]
                }
            };
            add(Task::Factor(k), &updated(k, k), 5);
            for j in 0..k {
                let mut before = vec![Task::Factor(k), Task::Factor(j)];
                before.extend((j..k).map(|m| Task::Panel(k, m)));
                before.extend((j + 1..k).map(|m| Task::Invert(m, j)));
                add(Task::Invert(k, j), &before, 2 * (k - j + 1) as u64);
            }
            for i in k + 1..tiles {
                let mut before = updated(i, k);
                before.push(Task::Factor(k));
                add(Task::Panel(i, k), &before, 2);
            }
            for j in k + 1..tiles {
                for i in j..tiles {
                    let mut before = updated(i, j);
                    before.push(Task::Panel(i, k));
                    if j != i {
                        before.push(Task::Panel(j, k));
                    }
                    add(Task::Update(i, j, k), &before, 2);
                }
            }
        }
        Self {
            graph: TaskGraph::schedule(&needs, &cost, workers),
            tasks,
        }
    }

    /// The plan for `tiles` tiles a side and `workers` threads, from a small cache: a batch
    /// of maps of one size schedules the graph once.
    pub(crate) fn get(tiles: usize, workers: usize) -> Arc<Plan> {
        /// `((tiles, workers), plan)`, in the order they were made.
        type Cache = Mutex<Vec<((usize, usize), Arc<Plan>)>>;
        const KEPT: usize = 8;
        static CACHE: Cache = Mutex::new(Vec::new());
        let key = (tiles, workers);
        if let Some((_, plan)) = CACHE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(k, _)| *k == key)
        {
            return Arc::clone(plan);
        }
        let plan = Arc::new(Plan::new(tiles, workers));
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() == KEPT {
            cache.remove(0);
        }
        cache.push((key, Arc::clone(&plan)));
        plan
    }
}

/// Overwrites the lower triangle of `m` (N x N) with its Cholesky factor `L` and the lower triangle
/// of `v` with `V = L^-1`, running `plan` (made for `N.div_ceil(tile)` tiles) on the team.
/// `scratch` (N x `tile`) holds the sums `L[i, j..i] V[j..i, j]` that `V_ii` multiplies; M's upper
/// triangle is left as it was, but for its diagonal tiles. Returns the row sums of V's strict lower
/// triangle (`f64`), added tile by tile in a fixed order.
///
/// Fails when a diagonal tile is not positive definite (`M` is then not SPD).
pub(crate) fn cholesky_inverse<T: Real>(
    crew: &Crew<'_>,
    plan: &Plan,
    m: &SharedMat<'_, T>,
    v: &SharedMat<'_, T>,
    scratch: &SharedMat<'_, T>,
    tile: usize,
) -> Result<Vec<f64>> {
    let n = m.nrows();
    let start = |t: usize| t * tile;
    let size = |t: usize| tile.min(n - t * tile);
    let one = T::of(1.0);
    // SAFETY (every block below): a task writes only its own output tile, and the graph
    // orders it after the tasks that write what it reads and before those that read what it
    // writes. Shared buffers: `Panel(i, k)` copies `A_ik` into V's tile (i, k), which only
    // `Invert(i, k)` writes later (and it needs `Panel(i, k)`); `Invert(i, j)` uses the rows
    // of tile j of `scratch`, and `Invert(i, j)` for the same j run one after the other.
    let row_sums = crew.graph(&plan.graph, |id| unsafe {
        match plan.tasks[id] {
            Task::Factor(k) => {
                let (s, b) = (start(k), size(k));
                if !factor_tile(m.block_mut(s, s, b, b), v.block_mut(s, s, b, b)) {
                    crew.raise();
                }
                Vec::new()
            }
            Task::Panel(i, k) => {
                let mut copy = v.block_mut(start(i), start(k), size(i), size(k));
                copy.copy_from(m.block(start(i), start(k), size(i), size(k)));
                let vkk = v.block(start(k), start(k), size(k), size(k));
                let out = m.block_mut(start(i), start(k), size(i), size(k));
                matmul(
                    out,
                    Accum::Replace,
                    copy.rb(),
                    vkk.transpose(),
                    one,
                    Par::Seq,
                );
                crate::simd::zero_upper();
                Vec::new()
            }
            Task::Update(i, j, k) => {
                let lik = m.block(start(i), start(k), size(i), size(k));
                let ljk = m.block(start(j), start(k), size(j), size(k));
                let out = m.block_mut(start(i), start(j), size(i), size(j));
                matmul(out, Accum::Add, lik, ljk.transpose(), -one, Par::Seq);
                crate::simd::zero_upper();
                Vec::new()
            }
            Task::Invert(i, j) => {
                let width = start(i) - start(j);
                let mut sum = scratch.block_mut(start(j), 0, size(i), size(j));
                let lrow = m.block(start(i), start(j), size(i), width);
                let vcol = v.block(start(j), start(j), width, size(j));
                matmul(sum.rb_mut(), Accum::Replace, lrow, vcol, one, Par::Seq);
                crate::simd::zero_upper();
                let vii = v.block(start(i), start(i), size(i), size(i));
                let mut out = v.block_mut(start(i), start(j), size(i), size(j));
                matmul(out.rb_mut(), Accum::Replace, vii, sum.rb(), -one, Par::Seq);
                crate::simd::zero_upper();
                let mut rows = vec![0.0f64; size(i)];
                for c in 0..size(j) {
                    for (r, x) in rows.iter_mut().zip(out.rb().col(c).iter()) {
                        *r += x.f64();
                    }
                }
                rows
            }
        }
    });
    if crew.raised() {
        return Err(not_positive_definite(
            "a diagonal tile is not positive definite",
        ));
    }
    let mut off = vec![0.0f64; n];
    for (task, rows) in plan.tasks.iter().zip(&row_sums) {
        if let Task::Invert(i, _) = *task {
            for (o, x) in off[start(i)..].iter_mut().zip(rows) {
                *o += x;
            }
        }
    }
    for k in 0..n.div_ceil(tile) {
        // SAFETY: the graph is finished; V is read-only from here on.
        let diagonal = unsafe { v.block(start(k), start(k), size(k), size(k)) };
        for c in 0..size(k) {
            for (o, x) in off[start(k) + c + 1..]
                .iter_mut()
                .zip(diagonal.col(c).iter().skip(c + 1))
            {
                *o += x.f64();
            }
        }
    }
    Ok(off)
}

/// Factors a diagonal tile `M_kk = L_kk L_kk^T` in place (lower triangle) and writes
/// `V_kk = L_kk^-1` into `vk` as a full square (zeros above the diagonal, as the products
/// use it). Returns false if the tile is not positive definite.
///
/// The factor is computed in `f64` whatever `T`, then rounded to `T`. The pivots of the
/// factorisation carry `M`'s smallest eigenvalue, the ground `z` (a tenth of a mean
/// affinity, against diagonal entries of about N/2 mean affinities), and faer's `f32`
/// Cholesky loses it: on a HeW system of N = 3072 its last pivot was 3.2e-4 off and
/// `diag(M^-1)` 6.7e-4, against 6.1e-7 for LAPACK's `spotrf` on the same `f32` matrix; the
/// tile products (`f32` GEMM, as accurate as OpenBLAS's here) are not the cause. With the
/// factor in `f64` the weights of such a map are within 1e-5 of the `f64` computation at
/// N = 3072 (3.5e-4 before; `tests/test_hew.py`). It costs about 2% of a map at N = 768
/// (the diagonal tiles are `N tile^2 / 3` of the `2 N^3 / 3` flops); the triangular inverse
/// of the rounded factor stays in `T` (as accurate, measured).
fn factor_tile<T: Real>(mut mk: MatMut<'_, T>, mut vk: MatMut<'_, T>) -> bool {
    let b = mk.nrows();
    let mut l = Mat::<f64>::from_fn(b, b, |i, j| if i >= j { mk[(i, j)].f64() } else { 0.0 });
    let mut mem = MemBuffer::new(cholesky_in_place_scratch::<f64>(
        b,
        Par::Seq,
        Default::default(),
    ));
    let factored = cholesky_in_place(
        l.as_mut(),
        Default::default(),
        Par::Seq,
        MemStack::new(&mut mem),
        Default::default(),
    );
    crate::simd::zero_upper();
    if factored.is_err() {
        return false;
    }
    for j in 0..b {
        for i in j..b {
            mk[(i, j)] = T::of(l[(i, j)]);
        }
    }
    invert_lower_triangular(vk.rb_mut(), mk.rb(), Par::Seq);
    crate::simd::zero_upper();
    for j in 1..b {
        for i in 0..j {
            vk[(i, j)] = T::of(0.0);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::team::{self, Members};
    use faer::Mat;

    /// A diagonally dominant SPD matrix like HeW's: `D - A` with `A >= 0`.
    fn heat_like(n: usize) -> Mat<f64> {
        let a = Mat::<f64>::from_fn(n, n, |i, j| {
            if i == j {
                0.0
            } else {
                (((i * 7 + j * 7 + i * j) % 13) as f64) / 13.0
            }
        });
        Mat::from_fn(n, n, |i, j| {
            if i == j {
                (0..n).map(|k| a[(i, k)]).sum::<f64>() + 0.5
            } else {
                -a[(i, j)]
            }
        })
    }

    fn run(n: usize, tile: usize, threads: usize) -> (Mat<f64>, Mat<f64>, Vec<f64>) {
        let mut m = heat_like(n);
        let mut v = Mat::<f64>::zeros(n, n);
        let mut scratch = Mat::<f64>::zeros(n, tile);
        let plan = Plan::get(n.div_ceil(tile), threads);
        let (ms, vs, ss) = (
            SharedMat::new(m.as_mut()),
            SharedMat::new(v.as_mut()),
            SharedMat::new(scratch.as_mut()),
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        // A team of one runs on the calling thread alone, as `Members::Caller` does.
        let members = Members::Pool(&pool, threads);
        let off = team::run(members, |crew| {
            cholesky_inverse(crew, &plan, &ms, &vs, &ss, tile)
        })
        .unwrap();
        (m, v, off)
    }

    #[test]
    fn factor_and_inverse_match_the_definition_on_odd_sizes() {
        for (n, tile) in [(1, 4), (5, 4), (13, 4), (17, 5), (40, 8)] {
            let a = heat_like(n);
            for threads in [1, 2, 3] {
                let (m, v, off) = run(n, tile, threads);
                let l = Mat::from_fn(n, n, |i, j| if i >= j { m[(i, j)] } else { 0.0 });
                let vl = Mat::from_fn(n, n, |i, j| if i >= j { v[(i, j)] } else { 0.0 });
                let llt = &l * l.transpose();
                let lv = &l * &vl;
                for i in 0..n {
                    for j in 0..n {
                        assert!(
                            (llt[(i, j)] - a[(i, j)]).abs() < 1e-9 * a[(i, i)],
                            "L L^T != M at ({i}, {j}), n = {n}"
                        );
                        let id = if i == j { 1.0 } else { 0.0 };
                        assert!(
                            (lv[(i, j)] - id).abs() < 1e-9,
                            "L V != I at ({i}, {j}), n = {n}"
                        );
                    }
                    let strict: f64 = (0..i).map(|j| vl[(i, j)]).sum();
                    assert!(
                        (off[i] - strict).abs() < 1e-12 * (1.0 + strict.abs()),
                        "row sum {i}, n = {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn results_are_bit_identical_across_team_sizes() {
        let (m1, v1, o1) = run(50, 8, 1);
        for threads in [2, 4] {
            let (m, v, o) = run(50, 8, threads);
            assert!(
                m == m1 && v == v1 && o == o1,
                "{threads} threads differ from one"
            );
        }
    }

    #[test]
    fn a_matrix_that_is_not_positive_definite_is_an_error() {
        let n = 12;
        let mut m = heat_like(n);
        m[(9, 9)] = -1.0;
        let mut v = Mat::<f64>::zeros(n, n);
        let mut scratch = Mat::<f64>::zeros(n, 4);
        let plan = Plan::get(3, 1);
        let (ms, vs, ss) = (
            SharedMat::new(m.as_mut()),
            SharedMat::new(v.as_mut()),
            SharedMat::new(scratch.as_mut()),
        );
        let result = team::run(Members::Caller, |crew| {
            cholesky_inverse(crew, &plan, &ms, &vs, &ss, 4)
        });
        assert!(result.is_err());
    }
}
