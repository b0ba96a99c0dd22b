//! The top-k selection that search and the kNN graph share: candidate lists that a block of
//! scores is scanned into, each query's running threshold (the k-th best score so far) and
//! the exact merge of several lists into one ranked row.
//!
//! A scan keeps only the scores that reach their query's threshold (a few vector compares per
//! 16 scores, [`crate::simd`]); a list that grows to its capacity is cut back to its best k,
//! raising the threshold. Candidates are ordered by a total order (score descending, database
//! index ascending, [`rank_key`]), so lists merged in any order give the same top k: results
//! do not depend on which thread scanned what. A NaN score ranks as `-inf`, and any
//! non-finite score is reported so that the caller can look for a bad input entry.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use rayon::prelude::*;

use crate::real::Real;
use crate::simd;

/// Lanes of the vectorised threshold scan.
const SCAN: usize = 16;

/// A candidate result: a score and its database index (32 bits: a candidate list of `f32`
/// scores takes 8 bytes per entry; databases are limited to [`MAX_ITEMS`] items).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<T> {
    pub(crate) score: T,
    pub(crate) index: u32,
}

/// The largest database the search and the kNN graph take.
pub const MAX_ITEMS: usize = u32::MAX as usize;

/// Asserts that a database of `n` items fits the 32-bit indices of the candidate lists.
pub(crate) fn assert_size(n: usize) {
    assert!(
        n <= MAX_ITEMS,
        "at most {MAX_ITEMS} database items, got {n}"
    );
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

/// The capacity a candidate list starts with, at most (it grows by doubling past it).
pub(crate) const LIST_START: usize = 4096;

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
}

impl<T: Real> Selection<T> {
    /// The selection of `queries` queries; `shared`: its thresholds will be exchanged with
    /// other selections' ([`Selection::raise_thresholds`]).
    pub(crate) fn new(queries: usize, k: usize, cap: usize, shared: bool) -> Self {
        Self {
            lists: (0..queries)
                .map(|_| Vec::with_capacity(cap.min(LIST_START)))
                .collect(),
            thresholds: vec![T::neg_infinity(); queries],
            k,
            cap,
            nonfinite: false,
            raised: shared.then(Vec::new),
        }
    }

    /// Offers database item `item`'s scores for every query of the block (`scores[i]` for
    /// query i); query `skip` (if in range) does not see it.
    #[inline]
    pub(crate) fn scan(&mut self, scores: &[T], item: usize, skip: usize) {
        scan_items_dispatched(self, scores, item, skip)
    }

    /// [`Selection::scan`]'s body, compiled once per instruction set (`simd::dispatch!`).
    #[inline(always)]
    pub(crate) fn scan_items(&mut self, scores: &[T], item: usize, skip: usize) {
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
        scan_one_dispatched(self, i, scores, first_item)
    }

    /// [`Selection::scan_query`]'s body, compiled once per instruction set (`simd::dispatch!`).
    #[inline(always)]
    pub(crate) fn scan_one(&mut self, i: usize, scores: &[T], first_item: usize) {
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
    pub(crate) fn raise_thresholds(&mut self, shared: &[AtomicU64]) {
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

// The threshold scans, compiled once per instruction set (a few vector compares per 16
// scores); their bodies are the methods above.
simd::dispatch! {
    /// [`Selection::scan_items`] in the best instruction set of this CPU.
    fn scan_items_dispatched<T: Real>(
        sel: &mut Selection<T>,
        scores: &[T],
        item: usize,
        skip: usize,
    ) => Selection::scan_items
}

simd::dispatch! {
    /// [`Selection::scan_one`] in the best instruction set of this CPU.
    fn scan_one_dispatched<T: Real>(
        sel: &mut Selection<T>,
        i: usize,
        scores: &[T],
        first_item: usize,
    ) => Selection::scan_one
}

/// The best threshold any chunk has reached, per query, as [`order_key`]s.
///
/// A chunk's threshold is the k-th best score among k of its items, so no item scoring below
/// it can be in the query's top k: another chunk may prune with it too. Which thresholds a
/// chunk sees first depends on timing, but only changes how many candidates it keeps, never
/// the merged top k (a top-k item reaches every such threshold and survives every cut, as
/// fewer than k items beat it). This keeps the chunks from each starting at `-inf`, which
/// cost a tenth of the search time at `k = 100`.
pub(crate) struct SharedThresholds {
    of: Vec<AtomicU64>,
}

impl SharedThresholds {
    pub(crate) fn new(queries: usize) -> Self {
        Self {
            of: (0..queries)
                .map(|_| AtomicU64::new(order_key(f64::NEG_INFINITY)))
                .collect(),
        }
    }

    /// The thresholds of queries `range`.
    pub(crate) fn of(&self, range: std::ops::Range<usize>) -> &[AtomicU64] {
        &self.of[range]
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
