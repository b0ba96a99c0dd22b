//! Exact inner-product search: blocked matrix products fused with a top-k selection.
//!
//! The scores `S = Q X^T` are never materialised whole: the queries are cut into blocks of at
//! most `QUERY_BLOCK` rows and the database into blocks whose score block (queries x items)
//! takes about `SCORE_BLOCK_BYTES`; each score block is computed by one sequential faer
//! product into a per-thread buffer that stays in the L2 cache, and scanned at once against
//! each query's running threshold (the k-th best score so far), so only candidates that can
//! still enter the top k are kept. NumPy's `argsort(-(Q @ X.T))` (what cirtorch does) writes
//! and re-reads the whole `(nq, n)` matrix instead.
//!
//! Why it is deterministic: the block grid depends on the problem's shape only (never on the
//! number of threads), so every score is computed by the same product whatever thread runs
//! it; runs of consecutive blocks (chunks, a few per thread) keep their own candidate lists,
//! candidates are ordered by the total order (score descending, database index ascending) and
//! the chunks' lists are merged exactly, so the result does not depend on which chunk found
//! what. Ties are broken by the lower database index.
//!
//! Finiteness of the database is checked on the fly: a NaN or infinity anywhere in `x_i`
//! makes every score of item i non-finite (IEEE arithmetic propagates them through the
//! products), and the scan already looks at every score. Only if a non-finite score shows up
//! is `X` scanned for the bad entry; a non-finite score from finite input (an overflow) is an
//! error too. This saves a full extra pass over `X`: 200 MB at
//! `n = 100k, d = 512`, 24 ms on one core of the 2-core VM, against 88 ms for the whole
//! search (100 queries, k = 100) on that core.

use faer::linalg::matmul::matmul;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, MatRef, Par};
use rayon::prelude::*;

use crate::error::Result;
use crate::memory;
use crate::parallel::workspace::with_workspace;
use crate::ranking::Ranking;
use crate::real::Real;
use crate::select::{
    assert_size, list_capacity, write_rows, Candidate, Selection, SharedThresholds, LIST_START,
};
use crate::simd::few_rows;
use crate::threads;
use crate::validate;

pub use crate::select::MAX_ITEMS;

/// Queries per block: one product's left-hand side. A multiple of faer's row strips (96 `f32`,
/// 48 `f64` rows with AVX-512): its product ran at 172 GFLOP/s per core against 154 for 96
/// queries and 127 for 100 (d = 512, 2.5k items per block, 2-core AVX-512 VM).
const QUERY_BLOCK: usize = 192;
/// Target size of one block of scores (queries x database items), per thread: small enough to
/// stay in L2 between the product that writes it and the scan that reads it. faer's `f32`
/// product runs at the same speed for score blocks from 256 KB to 8 MB (measured on the 2-core
/// AVX-512 VM: 127 GFLOP/s per core at 100 queries x 512 to 8192 items, d = 512).
const SCORE_BLOCK_BYTES: usize = 1 << 20;
/// Target size of the database rows of one block when some queries go to the few-row kernel (see
/// `simd::few_rows`): they must still be in L2 when it reads them after the product. 100 queries, n
/// = 100k, d = 512 on one core: 88 ms with 1 MB of rows per block, 81 ms with 256 KB, which costs
/// faer's product 3 to 5% (156 GFLOP/s for 96 queries against 160 with 2.5k rows).
const ROWS_BLOCK_BYTES: usize = 1 << 18;
/// Tasks (query block x database chunk) per thread: enough to balance the load on a busy
/// machine. Only the grouping of blocks into chunks depends on the number of threads, never
/// the products, and chunks are merged exactly: results do not depend on it.
const TASKS_PER_THREAD: usize = 4;

/// The top `k` database items of every query by inner product, best first (exact).
///
/// * `x`: database `(n, d)`; `q`: queries `(nq, d)`; any strides, same `T`.
/// * `k`: number of results per query, clamped to `n`; `None` ranks the whole database.
///
/// Scores are the products in `T` (faer's blocked GEMM). Ties (equal scores) go to the lower
/// database index. The result does not depend on the number of threads.
///
/// Errors: NaN or infinity in `q` (checked first) or `x` ([`crate::Error::NonFinite`]); inner
/// products of finite vectors that overflow `T` ([`crate::Error::Value`]).
///
/// # Panics
/// If `q` has another dimension than `x`, or `x` more than [`MAX_ITEMS`] rows.
pub fn search<T: Real>(x: MatRef<'_, T>, q: MatRef<'_, T>, k: Option<usize>) -> Result<Ranking<T>> {
    let n = x.nrows();
    assert_eq!(q.ncols(), x.ncols(), "Q must have the dimension of X");
    assert_size(n);
    let k = k.map_or(n, |k| k.min(n));
    let (ranks, scores) = threads::install(|threads| top_k(x, q, k, threads))??;
    Ok(Ranking {
        ranks,
        scores,
        rows: q.nrows(),
        cols: k,
    })
}

/// Top `k <= n` of every query, `(ranks, scores)` row-major `(nq, k)`, on the current rayon
/// pool (of `threads` threads).
fn top_k<T: Real>(
    x: MatRef<'_, T>,
    q: MatRef<'_, T>,
    k: usize,
    threads: usize,
) -> Result<(Vec<i64>, Vec<T>)> {
    let (n, nq) = (x.nrows(), q.nrows());
    validate::finite(q, "Q")?;
    if k == 0 || nq == 0 {
        // Nothing is computed, so the database is checked on its own.
        validate::finite(x, "X")?;
        return Ok((Vec::new(), Vec::new()));
    }
    let plan = Plan::new(nq, n, x.ncols(), std::mem::size_of::<T>(), threads);
    let cap = list_capacity(k, n);
    memory::ensure(
        search_bytes::<T>(&plan, nq, n, k, cap, threads),
        &format!(
            "the candidate lists and results of a search of {nq} queries (k = {k} of {n} items)"
        ),
    )?;
    let shared = SharedThresholds::new(nq);
    let tasks = (0..plan.qblocks * plan.chunks)
        .into_par_iter()
        .map(|t| {
            scan_task(
                x,
                q,
                &plan,
                t / plan.chunks,
                t % plan.chunks,
                k,
                cap,
                &shared,
            )
        })
        .collect::<Vec<_>>();
    if tasks.iter().any(|t| t.nonfinite) {
        validate::finite(x, "X")?;
        return Err(validate::overflow::<T>("Q and X"));
    }
    let mut ranks = vec![0i64; nq * k];
    let mut scores = vec![T::of(0.0); nq * k];
    let gathered = (0..nq).into_par_iter().map(|g| {
        let (a, i) = (g / plan.qb, g % plan.qb);
        let lists = || (0..plan.chunks).map(|c| &tasks[a * plan.chunks + c].lists[i]);
        let mut all: Vec<Candidate<T>> = Vec::with_capacity(lists().map(|l| l.len()).sum());
        lists().for_each(|l| all.extend_from_slice(l));
        all
    });
    write_rows(&mut ranks, &mut scores, k, gathered);
    Ok((ranks, scores))
}

/// An upper bound of the bytes a search allocates besides its per-thread score blocks: each
/// query's candidate lists in every chunk (a list starts at `min(cap, LIST_START)` and, past
/// `LIST_START`, grows by doubling up to twice what it holds: at most `cap` and the chunk's
/// items), the merged list of each query being written (one per thread at a time), and the
/// `(nq, k)` ranks and scores.
fn search_bytes<T: Real>(
    plan: &Plan,
    nq: usize,
    n: usize,
    k: usize,
    cap: usize,
    threads: usize,
) -> usize {
    let held = plan.chunks.saturating_mul(cap).min(n);
    let lists = if cap <= LIST_START {
        plan.chunks.saturating_mul(cap)
    } else {
        plan.chunks
            .saturating_mul(LIST_START)
            .saturating_add(held.saturating_mul(2))
    };
    let candidates = nq
        .saturating_mul(lists)
        .saturating_add(threads.saturating_mul(held));
    candidates
        .saturating_mul(std::mem::size_of::<Candidate<T>>())
        .saturating_add(
            nq.saturating_mul(k)
                .saturating_mul(8 + std::mem::size_of::<T>()),
        )
}

/// The block grid of a search: a function of the shape only.
struct Plan {
    /// Queries per block and number of query blocks.
    qb: usize,
    qblocks: usize,
    /// Database items per block.
    nb: usize,
    /// Database blocks per chunk and number of chunks (per query block).
    chunk_blocks: usize,
    chunks: usize,
    n: usize,
    nq: usize,
}

impl Plan {
    fn new(nq: usize, n: usize, d: usize, size: usize, threads: usize) -> Self {
        let qb = nq.clamp(1, QUERY_BLOCK);
        let qblocks = nq.div_ceil(qb);
        // With a few-row tail (see `simd::few_rows`), the block's database rows must stay in L2 for
        // it.
        let lanes = 64 / size;
        let tail = few_rows::available() && (qb % lanes != 0 || (nq % qb) % lanes != 0);
        let rows = if tail {
            ROWS_BLOCK_BYTES / (d.max(1) * size)
        } else {
            usize::MAX
        };
        let budget = (SCORE_BLOCK_BYTES / (qb * size)).min(rows);
        let nb = budget.clamp(256, 16384) / 64 * 64;
        let nb = nb.min(n.max(1));
        let dblocks = n.div_ceil(nb).max(1);
        let chunks = (TASKS_PER_THREAD * threads)
            .div_ceil(qblocks)
            .clamp(1, dblocks);
        let chunk_blocks = dblocks.div_ceil(chunks);
        let chunks = dblocks.div_ceil(chunk_blocks);
        Self {
            qb,
            qblocks,
            nb,
            chunk_blocks,
            chunks,
            n,
            nq,
        }
    }
}

/// What one task (a query block x a database chunk) found.
struct TaskResult<T> {
    /// One candidate list per query of the block, each at most `cap` long, holding (at least)
    /// the chunk's top `k`.
    lists: Vec<Vec<Candidate<T>>>,
    /// A non-finite score was seen.
    nonfinite: bool,
}

/// Scans database chunk `c` for query block `a`.
#[allow(clippy::too_many_arguments)]
fn scan_task<T: Real>(
    x: MatRef<'_, T>,
    q: MatRef<'_, T>,
    plan: &Plan,
    a: usize,
    c: usize,
    k: usize,
    cap: usize,
    shared: &SharedThresholds,
) -> TaskResult<T> {
    let q0 = a * plan.qb;
    let qlen = plan.qb.min(plan.nq - q0);
    let qs = q.subrows(q0, qlen);
    // The last rows of a block that do not fill a SIMD strip go to the few-row kernel.
    // (Rows of no column are not contiguous slices, and their products are 0 anyway.)
    let few = few_rows::available() && x.ncols() > 0 && x.col_stride() == 1;
    let main = if few {
        qlen - qlen % (64 / std::mem::size_of::<T>())
    } else {
        qlen
    };
    let tail: Vec<T> = (main..qlen)
        .flat_map(|i| (0..x.ncols()).map(move |c| qs[(i, c)]))
        .collect();
    let mut sel = Selection::new(qlen, k, cap, true);
    let first = c * plan.chunk_blocks * plan.nb;
    let last = ((c + 1) * plan.chunk_blocks * plan.nb).min(plan.n);
    with_workspace::<T, _>(|ws| {
        let mut i0 = first;
        while i0 < last {
            let len = plan.nb.min(last - i0);
            sel.raise_thresholds(shared.of(q0..q0 + qlen));
            let mut s = ws.score_block(qlen, len);
            let xs = x.subrows(i0, len);
            if main > 0 {
                matmul(
                    s.rb_mut().subrows_mut(0, main),
                    Accum::Replace,
                    qs.subrows(0, main),
                    xs.transpose(),
                    T::of(1.0),
                    Par::Seq,
                );
            }
            if few && main < qlen {
                few_rows::scores(&tail, xs, s.rb_mut().subrows_mut(main, qlen - main));
            }
            for j in 0..len {
                let col = s
                    .rb()
                    .col(j)
                    .try_as_col_major()
                    .expect("workspace columns are contiguous");
                sel.scan(col.as_slice(), i0 + j, usize::MAX);
            }
            i0 += len;
        }
    });
    TaskResult {
        nonfinite: sel.nonfinite(),
        lists: sel.into_lists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use faer::Mat;

    fn mat(rows: &[&[f64]]) -> Mat<f64> {
        Mat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
    }

    #[test]
    fn ranks_by_inner_product_with_ties_to_the_lower_index() {
        // Scores of q = (1, 0): 1, 0, 1, -1, 2 -> order 4, 0, 2, 1, 3.
        let x = mat(&[
            &[1.0, 5.0],
            &[0.0, 1.0],
            &[1.0, -3.0],
            &[-1.0, 0.0],
            &[2.0, 0.0],
        ]);
        let q = mat(&[&[1.0, 0.0], &[0.0, 1.0]]);
        let r = search(x.as_ref(), q.as_ref(), Some(3)).unwrap();
        assert_eq!((r.rows, r.cols), (2, 3));
        assert_eq!(r.ranks, vec![4, 0, 2, 0, 1, 3]);
        assert_eq!(r.scores, vec![2.0, 1.0, 1.0, 5.0, 1.0, 0.0]);
        let all = search(x.as_ref(), q.as_ref(), None).unwrap();
        assert_eq!(&all.ranks[..5], &[4, 0, 2, 1, 3]);
        let none = search(x.as_ref(), q.as_ref(), Some(0)).unwrap();
        assert_eq!((none.rows, none.cols, none.ranks.len()), (2, 0, 0));
    }

    #[test]
    fn many_equal_scores_keep_the_lowest_indices() {
        // 3000 equal vectors (several blocks), top 5 = indices 0..5 for every query.
        let x = Mat::from_fn(3000, 3, |_, j| j as f64);
        let q = Mat::from_fn(4, 3, |i, _| i as f64);
        let r = search(x.as_ref(), q.as_ref(), Some(5)).unwrap();
        for row in r.ranks.chunks(5) {
            assert_eq!(row, &[0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn few_row_tail_matches_exact_products() {
        // 21 queries: 16 go to faer's product, 5 to the few-row kernel (on AVX2/AVX-512);
        // small integers make every product exact, whichever kernel computes it.
        let x = Mat::from_fn(700, 37, |i, j| ((i * 7 + j * 3) % 5) as f32 - 2.0);
        let q = Mat::from_fn(21, 37, |i, j| ((i * 5 + j) % 3) as f32 - 1.0);
        let r = search(x.as_ref(), q.as_ref(), None).unwrap();
        for (i, (ranks, scores)) in r.ranks.chunks(700).zip(r.scores.chunks(700)).enumerate() {
            for (&item, &s) in ranks.iter().zip(scores) {
                let exact: f32 = (0..37).map(|c| q[(i, c)] * x[(item as usize, c)]).sum();
                assert_eq!(s, exact);
            }
            assert!(ranks
                .windows(2)
                .zip(scores.windows(2))
                .all(|(r, s)| s[0] > s[1] || (s[0] == s[1] && r[0] < r[1])));
        }
    }

    #[test]
    fn rejects_bad_input() {
        let x = mat(&[&[1.0, 2.0], &[3.0, f64::NAN]]);
        let q = mat(&[&[1.0, 0.0]]);
        let e = search(x.as_ref(), q.as_ref(), Some(1)).unwrap_err();
        assert_eq!(
            e,
            Error::NonFinite("X must be finite, got NaN at row 1, column 1".into())
        );
        let e = search(x.as_ref(), mat(&[&[f64::INFINITY, 0.0]]).as_ref(), Some(1)).unwrap_err();
        assert_eq!(
            e,
            Error::NonFinite("Q must be finite, got inf at row 0, column 0".into()),
            "Q is checked first"
        );
    }

    #[test]
    #[should_panic(expected = "Q must have the dimension of X")]
    fn queries_of_another_dimension_are_a_broken_precondition() {
        let x = mat(&[&[1.0, 2.0]]);
        let _ = search(x.as_ref(), mat(&[&[1.0, 0.0, 0.0]]).as_ref(), None);
    }
}
