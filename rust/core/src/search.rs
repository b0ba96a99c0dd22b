//! Exact inner-product search: blocked matrix products fused with a top-k selection.
//!
//! The scores `S = Q X^T` are never materialised whole: the queries are cut into blocks of at
//! most [`QUERY_BLOCK`] rows and the database into blocks whose score block (queries x items)
//! takes about [`SCORE_BLOCK_BYTES`]; each score block is computed by one sequential faer
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
//! is `X` scanned for the bad entry; a non-finite score from finite input (an overflow) is
//! kept, with NaN ranked as `-inf`. This saves a full extra pass over `X`: 200 MB at
//! `n = 100k, d = 512`, 24 ms on one core of the 2-core VM, against 88 ms for the whole
//! search (100 queries, k = 100) on that core.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use faer::linalg::matmul::matmul;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, MatRef, Par};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::parallel::workspace::with_workspace;
use crate::real::Real;
use crate::threads;
use crate::validate;

/// Queries per block: one product's left-hand side. A multiple of faer's row strips (96 `f32`,
/// 48 `f64` rows with AVX-512): its product ran at 172 GFLOP/s per core against 154 for 96
/// queries and 127 for 100 (d = 512, 2.5k items per block, 2-core AVX-512 VM).
const QUERY_BLOCK: usize = 192;
/// Target size of one block of scores (queries x database items), per thread: small enough to
/// stay in L2 between the product that writes it and the scan that reads it. faer's `f32`
/// product runs at the same speed for score blocks from 256 KB to 8 MB (measured on the 2-core
/// AVX-512 VM: 127 GFLOP/s per core at 100 queries x 512 to 8192 items, d = 512).
const SCORE_BLOCK_BYTES: usize = 1 << 20;
/// Target size of the database rows of one block when some queries go to the few-row kernel
/// (see `few`): they must still be in L2 when it reads them after the product. 100 queries,
/// n = 100k, d = 512 on one core: 88 ms with 1 MB of rows per block, 81 ms with 256 KB, which
/// costs faer's product 3 to 5% (156 GFLOP/s for 96 queries against 160 with 2.5k rows).
const ROWS_BLOCK_BYTES: usize = 1 << 18;
/// Tasks (query block x database chunk) per thread: enough to balance the load on a busy
/// machine. Only the grouping of blocks into chunks depends on the number of threads, never
/// the products, and chunks are merged exactly: results do not depend on it.
const TASKS_PER_THREAD: usize = 4;
/// Lanes of the vectorised threshold scan.
const SCAN: usize = 16;

/// A ranking per query: `rows x cols`, row-major, best first.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranking<T> {
    /// 0-based database indices, `rows * cols`, row-major.
    pub ranks: Vec<i64>,
    /// `scores[p]` belongs to `ranks[p]`.
    pub scores: Vec<T>,
    /// Number of queries.
    pub rows: usize,
    /// Entries per query.
    pub cols: usize,
}

impl<T> Ranking<T> {
    /// One ranking from per-query rows `(ranks, scores)`, each of length `cols`.
    pub fn from_rows(rows: Vec<(Vec<i64>, Vec<T>)>, cols: usize) -> Self {
        let mut out = Ranking {
            ranks: Vec::with_capacity(rows.len() * cols),
            scores: Vec::with_capacity(rows.len() * cols),
            rows: rows.len(),
            cols,
        };
        for (r, s) in rows {
            debug_assert!(r.len() == cols && s.len() == cols);
            out.ranks.extend(r);
            out.scores.extend(s);
        }
        out
    }
}

/// The top `k` database items of every query by inner product, best first (exact).
///
/// * `x`: database `(n, d)`; `q`: queries `(nq, d)`; any strides, same `T`.
/// * `k`: number of results per query, clamped to `n`; `None` ranks the whole database.
///
/// Scores are the products in `T` (faer's blocked GEMM). Ties (equal scores) go to the lower
/// database index; a NaN score (only an overflow of finite input can make one) ranks as
/// `-inf`. The result does not depend on the number of threads.
///
/// Errors: `q` of another dimension than `x`, NaN or infinity in `x` or `q`.
pub fn search<T: Real>(x: MatRef<'_, T>, q: MatRef<'_, T>, k: Option<usize>) -> Result<Ranking<T>> {
    let (n, d) = (x.nrows(), x.ncols());
    if q.ncols() != d {
        return Err(Error::Shape(format!(
            "Q must have d = {d} columns (the dimension of X), got {}",
            q.ncols()
        )));
    }
    check_size(n)?;
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

/// Candidate lists are cut back to their best k when they reach this length (`n` when all n
/// items are kept anyway).
pub(crate) fn list_capacity(k: usize, n: usize) -> usize {
    if k >= n {
        n
    } else {
        2 * k + SCAN
    }
}

/// Row g of the `(rows, k)` outputs: the best k of the g-th candidate list, sorted (in
/// parallel).
pub(crate) fn write_rows<T: Real>(
    ranks: &mut [i64],
    scores: &mut [T],
    k: usize,
    candidates: impl IndexedParallelIterator<Item = Vec<Candidate<T>>>,
) {
    ranks
        .par_chunks_mut(k)
        .zip(scores.par_chunks_mut(k))
        .zip(candidates)
        .for_each(|((r, s), mut all)| {
            for (p, c) in select_sorted(&mut all, k).iter().enumerate() {
                r[p] = c.index as i64;
                s[p] = c.score;
            }
        });
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
        // With a few-row tail (see `few`), the block's database rows must stay in L2 for it.
        let lanes = 64 / size;
        let tail = few::isa().is_some() && (qb % lanes != 0 || (nq % qb) % lanes != 0);
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

/// A candidate result: a score and its database index (32 bits: a candidate list of `f32`
/// scores takes 8 bytes per entry; databases are limited to [`MAX_ITEMS`] items).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<T> {
    pub(crate) score: T,
    pub(crate) index: u32,
}

/// The largest database the search and the kNN graph take.
pub(crate) const MAX_ITEMS: usize = u32::MAX as usize;

/// A database of more than [`MAX_ITEMS`] items is an error.
pub(crate) fn check_size(n: usize) -> Result<()> {
    if n > MAX_ITEMS {
        return Err(Error::Shape(format!(
            "X may have at most {MAX_ITEMS} rows (database items), got {n}"
        )));
    }
    Ok(())
}

/// The total order of results as a key, ascending from the best: higher score first, then
/// lower index. Scores are never NaN here (the scan maps NaN to `-inf`); `-0.0` and `0.0` are
/// equal, as in IEEE comparisons (`+ 0.0` turns the former into the latter). An integer key
/// is a total order by construction, which `select_nth_unstable` and the sorts require.
#[inline(always)]
pub(crate) fn rank_key<T: Real>(c: &Candidate<T>) -> (u64, u32) {
    (!order_key(c.score.f64() + 0.0), c.index)
}

/// Keeps the best `k` of `all` and returns them sorted.
fn select_sorted<T: Real>(all: &mut Vec<Candidate<T>>, k: usize) -> &[Candidate<T>] {
    if all.len() > k {
        all.select_nth_unstable_by_key(k - 1, rank_key);
        all.truncate(k);
    }
    all.sort_unstable_by_key(rank_key);
    all
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
    let few = few::isa().filter(|_| x.ncols() == 0 || x.col_stride() == 1);
    let main = if few.is_some() {
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
            sel.raise_thresholds(&shared.of[q0..q0 + qlen]);
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
            if let Some(isa) = few.filter(|_| main < qlen) {
                few::scores(isa, &tail, xs, s.rb_mut().subrows_mut(main, qlen - main));
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

/// The running top k of a block of queries.
pub(crate) struct Selection<T> {
    lists: Vec<Vec<Candidate<T>>>,
    /// `thresholds[i]`: scores below it cannot enter query i's top k any more.
    thresholds: Vec<T>,
    k: usize,
    cap: usize,
    nonfinite: bool,
    /// Queries whose threshold rose since the last [`Selection::raise_thresholds`] (when
    /// thresholds are shared with other selections).
    raised: Option<Vec<usize>>,
    /// The scans run compiled for AVX-512 when the CPU has it (the crate is compiled for the
    /// x86-64 baseline, SSE2).
    avx512: bool,
}

impl<T: Real> Selection<T> {
    /// The selection of `queries` queries; `shared`: its thresholds will be exchanged with
    /// other selections' ([`Selection::raise_thresholds`]).
    pub(crate) fn new(queries: usize, k: usize, cap: usize, shared: bool) -> Self {
        Self {
            lists: (0..queries)
                .map(|_| Vec::with_capacity(cap.min(4096)))
                .collect(),
            thresholds: vec![T::neg_infinity(); queries],
            k,
            cap,
            nonfinite: false,
            raised: shared.then(Vec::new),
            avx512: few::isa() == Some(few::Isa::Avx512),
        }
    }

    /// Offers database item `item`'s scores for every query of the block (`scores[i]` for
    /// query i); query `skip` (if in range) does not see it.
    #[inline]
    pub(crate) fn scan(&mut self, scores: &[T], item: usize, skip: usize) {
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            // SAFETY: `avx512` is set only when the CPU has AVX-512F.
            return unsafe { self.scan_avx512(scores, item, skip) };
        }
        self.scan_items(scores, item, skip)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn scan_avx512(&mut self, scores: &[T], item: usize, skip: usize) {
        self.scan_items(scores, item, skip)
    }

    #[inline(always)]
    fn scan_items(&mut self, scores: &[T], item: usize, skip: usize) {
        let mut start = 0;
        while start < scores.len() {
            let end = (start + SCAN).min(scores.len());
            let s = &scores[start..end];
            let (mut hits, bad) = match (
                <&[T; SCAN]>::try_from(s),
                <&[T; SCAN]>::try_from(&self.thresholds[start..end]),
            ) {
                (Ok(v), Ok(th)) => lanes(v, |l| th[l]),
                _ => lanes_partial(s, |l| self.thresholds[start + l]),
            };
            if bad || skip.wrapping_sub(start) < s.len() {
                for (l, v) in s.iter().enumerate() {
                    if start + l != skip {
                        self.offer_any(start + l, *v, item);
                    }
                }
            } else {
                while hits != 0 {
                    let l = hits.trailing_zeros() as usize;
                    hits &= hits - 1;
                    self.push(start + l, s[l], item);
                }
            }
            start = end;
        }
    }

    /// Offers query i the scores of `scores.len()` consecutive database items, the first
    /// being `first_item` (a column of a score block read the other way round).
    #[inline]
    pub(crate) fn scan_query(&mut self, i: usize, scores: &[T], first_item: usize) {
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            // SAFETY: `avx512` is set only when the CPU has AVX-512F.
            return unsafe { self.scan_query_avx512(i, scores, first_item) };
        }
        self.scan_one(i, scores, first_item)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn scan_query_avx512(&mut self, i: usize, scores: &[T], first_item: usize) {
        self.scan_one(i, scores, first_item)
    }

    #[inline(always)]
    fn scan_one(&mut self, i: usize, scores: &[T], first_item: usize) {
        for (c, s) in scores.chunks(SCAN).enumerate() {
            let start = c * SCAN;
            let th = self.thresholds[i];
            let (mut hits, bad) = match <&[T; SCAN]>::try_from(s) {
                Ok(v) => lanes(v, |_| th),
                _ => lanes_partial(s, |_| th),
            };
            if bad {
                for (l, v) in s.iter().enumerate() {
                    self.offer_any(i, *v, first_item + start + l);
                }
            } else {
                while hits != 0 {
                    let l = hits.trailing_zeros() as usize;
                    hits &= hits - 1;
                    self.push(i, s[l], first_item + start + l);
                }
            }
        }
    }

    /// Whether a non-finite score was seen.
    pub(crate) fn nonfinite(&self) -> bool {
        self.nonfinite
    }

    /// The candidate lists, one per query (each holding at least the query's top k).
    pub(crate) fn into_lists(self) -> Vec<Vec<Candidate<T>>> {
        self.lists
    }

    /// Offers a score that may be non-finite (NaN ranks as `-inf`).
    #[cold]
    fn offer_any(&mut self, i: usize, mut score: T, item: usize) {
        if !score.is_finite() {
            self.nonfinite = true;
            if score.is_nan() {
                score = T::neg_infinity();
            }
        }
        if score >= self.thresholds[i] {
            self.push(i, score, item);
        }
    }

    /// Adds a candidate that reaches query i's threshold; a full list is cut to its best k.
    #[inline]
    fn push(&mut self, i: usize, score: T, item: usize) {
        let list = &mut self.lists[i];
        list.push(Candidate {
            score,
            index: item as u32,
        });
        if list.len() >= self.cap && self.cap > self.k {
            list.select_nth_unstable_by_key(self.k - 1, rank_key);
            list.truncate(self.k);
            self.thresholds[i] = list[self.k - 1].score;
            if let Some(raised) = &mut self.raised {
                raised.push(i);
            }
        }
    }

    /// Takes the other chunks' thresholds where they are higher, and publishes this chunk's
    /// raised ones.
    fn raise_thresholds(&mut self, shared: &[AtomicU64]) {
        for i in self.raised.iter_mut().flat_map(|r| r.drain(..)) {
            shared[i].fetch_max(order_key(self.thresholds[i].f64()), AtomicOrdering::Relaxed);
        }
        for (t, g) in self.thresholds.iter_mut().zip(shared) {
            let g = T::of(from_order_key(g.load(AtomicOrdering::Relaxed)));
            if g > *t {
                *t = g;
            }
        }
    }
}

/// Which of 16 scores reach their thresholds (a bit mask), and whether any is non-finite:
/// branch-free over a fixed number of lanes, so that it compiles to a few vector compares.
#[inline(always)]
fn lanes<T: Real>(v: &[T; SCAN], th: impl Fn(usize) -> T) -> (u32, bool) {
    let mut hits = 0u32;
    let mut bad = false;
    for (l, &x) in v.iter().enumerate() {
        hits |= u32::from(x >= th(l)) << l;
        bad |= !x.is_finite();
    }
    (hits, bad)
}

/// [`lanes`] for fewer than 16 scores.
#[inline(always)]
fn lanes_partial<T: Real>(v: &[T], th: impl Fn(usize) -> T) -> (u32, bool) {
    let mut hits = 0u32;
    let mut bad = false;
    for (l, x) in v.iter().enumerate() {
        hits |= u32::from(*x >= th(l)) << l;
        bad |= !x.is_finite();
    }
    (hits, bad)
}

/// The best threshold any chunk has reached, per query, as [`order_key`]s.
///
/// A chunk's threshold is the k-th best score among k of its items, so no item scoring below
/// it can be in the query's top k: another chunk may prune with it too. Which thresholds a
/// chunk sees first depends on timing, but only changes how many candidates it keeps, never
/// the merged top k (a top-k item reaches every such threshold and survives every cut, as
/// fewer than k items beat it). This keeps the chunks from each starting at `-inf`, which
/// cost a tenth of the search time at `k = 100`.
struct SharedThresholds {
    of: Vec<AtomicU64>,
}

impl SharedThresholds {
    fn new(queries: usize) -> Self {
        Self {
            of: (0..queries)
                .map(|_| AtomicU64::new(order_key(f64::NEG_INFINITY)))
                .collect(),
        }
    }
}

/// Maps `f64` to `u64` so that the integer order is the numeric order (non-NaN values).
fn order_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// Inner products of a few queries (fewer than one SIMD strip) with database rows.
///
/// faer's GEMM computes the query rows of a score block in strips of 16 `f32` (8 `f64`) SIMD
/// lanes, and a partial strip costs as much as a full one: 100 queries (96 + 4) ran at 127
/// GFLOP/s per core against 154 for 96, the 4-row strip taking a fifth of the time for 4% of
/// the work (d = 512, 2-core AVX-512 VM). This kernel computes those rows instead, one
/// database row at a time while it is in L1, up to 4 queries per pass with 16-lane fused
/// multiply-adds and a fixed summation order (deterministic, whatever the thread). It needs
/// contiguous database rows and AVX2+FMA or AVX-512 (checked at run time); otherwise the
/// whole block goes to faer.
mod few {
    use faer::reborrow::ReborrowMut;
    use faer::{MatMut, MatRef};

    use crate::real::Real;

    /// The instruction set the kernel is compiled for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Isa {
        Avx512,
        Avx2,
    }

    /// The best instruction set of this CPU for the kernel, if any.
    pub(super) fn isa() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Isa::Avx2);
            }
        }
        None
    }

    /// `out[(j, i)] = <q_j, x_i>`: `q` holds `out.nrows()` queries of length `x.ncols()`,
    /// row after row; `x`'s rows are contiguous.
    pub(super) fn scores<T: Real>(isa: Isa, q: &[T], x: MatRef<'_, T>, out: MatMut<'_, T>) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` comes from `isa()`, which checked that the CPU has these features.
        unsafe {
            match isa {
                Isa::Avx512 => avx512(q, x, out),
                Isa::Avx2 => avx2(q, x, out),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (isa, q, x, out);
            unreachable!("no few-row kernel off x86_64");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512<T: Real>(q: &[T], x: MatRef<'_, T>, out: MatMut<'_, T>) {
        kernel(q, x, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<T: Real>(q: &[T], x: MatRef<'_, T>, out: MatMut<'_, T>) {
        kernel(q, x, out)
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
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        p.add(off),
                    )
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
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn order_keys_sort_like_the_numbers() {
        let v = [
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            3.0,
            f64::INFINITY,
        ];
        let keys: Vec<u64> = v.iter().map(|&x| order_key(x)).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]));
        assert!(v
            .iter()
            .all(|&x| from_order_key(order_key(x)).to_bits() == x.to_bits()));
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
        let q3 = mat(&[&[1.0, 0.0, 0.0]]);
        assert!(matches!(
            search(x.as_ref(), q3.as_ref(), None),
            Err(Error::Shape(_))
        ));
    }
}
