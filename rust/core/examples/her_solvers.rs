//! Measures HeR's two solvers of the per-query heat system `M x = D e_q` (the choice of
//! `HerSolver`'s default): time per query on one thread (candidate gathering, centring, Gram,
//! threshold and solve: all of one query's work) and accuracy against an `f64` Cholesky solve
//! on the same candidates, at `k = 800`, `d = 512`, for `f32` and `f64` input.
//!
//! `cargo run --release -p heatsearch-core --example her_solvers [FILE]`
//!
//! Without FILE: a synthetic database of clustered unit vectors (4000 x 512, 40 clusters) and
//! 20 queries (database rows plus noise), first pass by inner product. FILE: a raw dump of a
//! real case, little-endian: `u64 n, d, nq, k`, then `X` (n x d, f32, row-major), `Q`
//! (nq x d, f32), `ranks` (nq x k, i64). (`benches/her_solvers_dump.py` writes one for the
//! authors' Holidays vectors.)

use std::time::Instant;

use faer::{Mat, MatRef};
use heatsearch_core::rerank::{
    build_heat_system, heat_temperatures_traced, solve_heat_system, HerSolver,
};
use heatsearch_core::Real;

struct Case {
    x: Mat<f64>,
    q: Mat<f64>,
    ranks: Vec<Vec<usize>>,
}

fn lcg(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

fn gaussian(state: &mut u64) -> f64 {
    let (u, v) = (lcg(state).max(1e-300), lcg(state));
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn normalise(m: &mut Mat<f64>) {
    for i in 0..m.nrows() {
        let norm = (0..m.ncols())
            .map(|j| m[(i, j)] * m[(i, j)])
            .sum::<f64>()
            .sqrt();
        for j in 0..m.ncols() {
            m[(i, j)] /= norm;
        }
    }
}

fn first_pass(x: &Mat<f64>, q: &Mat<f64>, k: usize) -> Vec<Vec<usize>> {
    (0..q.nrows())
        .map(|i| {
            let s: Vec<f64> = (0..x.nrows())
                .map(|r| (0..x.ncols()).map(|c| x[(r, c)] * q[(i, c)]).sum())
                .collect();
            let mut order: Vec<usize> = (0..x.nrows()).collect();
            order.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).unwrap());
            order.truncate(k);
            order
        })
        .collect()
}

fn synthetic(k: usize) -> Case {
    let (n, d, nq, clusters) = (4000, 512, 20, 40);
    let mut state = 42u64;
    let centres = Mat::from_fn(clusters, d, |_, _| gaussian(&mut state));
    let mut x = Mat::from_fn(n, d, |i, j| {
        centres[(i % clusters, j)] + 1.5 * gaussian(&mut state)
    });
    normalise(&mut x);
    let mut q = Mat::from_fn(nq, d, |i, j| x[(97 * i, j)] + 0.02 * gaussian(&mut state));
    normalise(&mut q);
    let ranks = first_pass(&x, &q, k);
    Case { x, q, ranks }
}

fn from_file(path: &str) -> Case {
    let bytes = std::fs::read(path).expect("readable dump");
    let u = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap()) as usize;
    let (n, d, nq, k) = (u(0), u(1), u(2), u(3));
    let f = |i: usize| f32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as f64;
    let x0 = 32;
    let q0 = x0 + 4 * n * d;
    let r0 = q0 + 4 * nq * d;
    let x = Mat::from_fn(n, d, |i, j| f(x0 + 4 * (i * d + j)));
    let q = Mat::from_fn(nq, d, |i, j| f(q0 + 4 * (i * d + j)));
    let ranks = (0..nq)
        .map(|i| {
            (0..k)
                .map(|p| {
                    i64::from_le_bytes(
                        bytes[r0 + 8 * (i * k + p)..r0 + 8 * (i * k + p) + 8]
                            .try_into()
                            .unwrap(),
                    ) as usize
                })
                .collect()
        })
        .collect();
    Case { x, q, ranks }
}

fn max_relative_error(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs() / scale))
}

fn run<T: Real>(case: &Case, name: &str, truth: &[Vec<f64>]) {
    // Row-major, as NumPy's C order (faer's `Mat` is column-major: store the transposes).
    let xt: Mat<T> = Mat::from_fn(case.x.ncols(), case.x.nrows(), |j, i| T::of(case.x[(i, j)]));
    let qt: Mat<T> = Mat::from_fn(case.q.ncols(), case.q.nrows(), |j, i| T::of(case.q[(i, j)]));
    let (x, q) = (xt.transpose(), qt.transpose());
    let (d, size) = (x.ncols(), case.ranks[0].len() + 1);
    let mut cells = Mat::<T>::zeros(d, size);
    let mut m = Mat::<T>::zeros(size, size);
    for solver in [HerSolver::Cholesky, HerSolver::ConjugateGradient] {
        let reps = 5;
        let (mut build, mut solve) = (Vec::new(), Vec::new());
        let mut iterations = Vec::new();
        let mut error = 0.0f64;
        for _ in 0..reps {
            for (i, cand) in case.ranks.iter().enumerate() {
                let start = Instant::now();
                build_heat_system(x, q.row(i), cand, 0.1, cells.as_mut(), m.as_mut())
                    .expect("not degenerate");
                let built = Instant::now();
                let (mut t, it) = solve_heat_system(m.as_mut(), solver).unwrap();
                solve.push(built.elapsed().as_secs_f64() * 1e3);
                build.push((built - start).as_secs_f64() * 1e3);
                t.truncate(size - 1);
                iterations.extend(it);
                error = error.max(max_relative_error(&t, &truth[i]));
            }
        }
        let (lo, hi) = (iterations.iter().min(), iterations.iter().max());
        println!(
            "{name} {solver:?}: build {:.2} / {:.2} ms + solve {:.2} / {:.2} ms per query (min / median), \
             max rel. error vs f64 Cholesky {error:.1e}, CG iterations {lo:?}..{hi:?}",
            min(&build),
            median(&mut build),
            min(&solve),
            median(&mut solve),
        );
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let k = 800;
    let case = match std::env::args().nth(1) {
        Some(path) => from_file(&path),
        None => synthetic(k),
    };
    let (x, q): (MatRef<'_, f64>, MatRef<'_, f64>) = (case.x.as_ref(), case.q.as_ref());
    let truth: Vec<Vec<f64>> = (0..case.ranks.len())
        .map(|i| {
            heat_temperatures_traced(x, q.row(i), &case.ranks[i], 0.1, HerSolver::Cholesky)
                .unwrap()
                .0
        })
        .collect();
    println!(
        "n = {}, d = {}, queries = {}, k = {}",
        x.nrows(),
        x.ncols(),
        case.ranks.len(),
        case.ranks[0].len()
    );
    run::<f32>(&case, "f32", &truth);
    run::<f64>(&case, "f64", &truth);
}
