//! The checks that read the data: values must be finite, rankings must hold distinct
//! database indices in range. Messages say what was expected and what came in, so that a
//! binding passes them on unchanged, and the algorithms fold these checks into their own
//! passes over the data.
//!
//! What is not here, on purpose: checks of shapes and parameters. They cost nothing and are
//! done once by the caller (heatsearch's Python layer, `_validate.py`) before an algorithm
//! runs; for the algorithms they are documented preconditions, asserted (a violation is a bug
//! of the caller and panics, as a shape mismatch does in faer or ndarray).
//!
//! The public checks are for a caller that checks its data without calling an algorithm
//! (heatsearch's NumPy reference, its Python-only functions): [`finite`], [`finite_rows`],
//! [`finite_vector`] and [`rankings`]. They can be called from any thread: the first three
//! run on the calling thread, [`rankings`] runs its rows on heatsearch's pool (never on
//! rayon's global pool, which the host application may own).

use faer::MatRef;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::real::Real;
use crate::threads;

/// NaN or infinity anywhere in `m` is an [`Error::NonFinite`] naming `what` and the first bad
/// entry in row-major order ("X must be finite, got NaN at row 1, column 1").
///
/// Runs on the calling thread (inside or outside heatsearch's pool): one branch-free pass in
/// memory order (rows or columns, whichever is contiguous: a column-wise scan of a row-major
/// database costs a cache miss per entry); the entry is located only when there is one.
pub fn finite<T: Real>(m: MatRef<'_, T>, what: &str) -> Result<()> {
    let ok = if let Some(r) = m.try_as_row_major() {
        (0..m.nrows()).all(|i| all_finite(r.row(i).as_slice()))
    } else if let Some(c) = m.try_as_col_major() {
        (0..m.ncols()).all(|j| all_finite(c.col(j).as_slice()))
    } else {
        (0..m.nrows()).all(|i| (0..m.ncols()).all(|j| m[(i, j)].is_finite()))
    };
    if ok {
        return Ok(());
    }
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            let v = m[(i, j)];
            if !v.is_finite() {
                return Err(Error::NonFinite(format!(
                    "{what} must be finite, got {v:?} at row {i}, column {j}"
                )));
            }
        }
    }
    Ok(())
}

/// NaN or infinity in a row of `m` that `ranks` names is an [`Error::NonFinite`] worded as
/// [`finite`]'s ("X must be finite, got NaN at row 7, column 2"), for the smallest such row:
/// the check of a database a re-ranker reads only through a ranking. Rows no ranking names are
/// not read: a re-ranking of the top 20 of a million images checks 20 rows, not a million.
///
/// Precondition: the entries of `ranks` are in `0..m.nrows()` (checked by [`rankings`]
/// first); the error for a negative or too large entry is a panic.
pub fn finite_rows<T: Real>(m: MatRef<'_, T>, ranks: MatRef<'_, i64>, what: &str) -> Result<()> {
    let n = m.nrows();
    let entries = ranks.nrows().saturating_mul(ranks.ncols());
    // The rows named, in increasing order: a table of n flags when the rankings name many
    // rows (e.g. diffusion's full rankings), else the sorted entries.
    let rows: Vec<usize> = if entries.saturating_mul(16) >= n {
        let mut named = vec![false; n];
        for i in 0..ranks.nrows() {
            for p in 0..ranks.ncols() {
                named[ranks[(i, p)] as usize] = true;
            }
        }
        (0..n).filter(|&r| named[r]).collect()
    } else {
        let mut rows: Vec<usize> = (0..ranks.nrows())
            .flat_map(|i| (0..ranks.ncols()).map(move |p| ranks[(i, p)] as usize))
            .collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    };
    let row_finite = |r: usize| match m.row(r).try_as_row_major() {
        Some(row) => all_finite(row.as_slice()),
        None => (0..m.ncols()).all(|j| m[(r, j)].is_finite()),
    };
    match rows.into_iter().find(|&r| !row_finite(r)) {
        None => Ok(()),
        Some(r) => {
            let j = (0..m.ncols())
                .find(|&j| !m[(r, j)].is_finite())
                .expect("a value is not finite");
            Err(Error::NonFinite(format!(
                "{what} must be finite, got {:?} at row {r}, column {j}",
                m[(r, j)]
            )))
        }
    }
}

/// Every map of a batch must be finite: an error naming the first bad map by its position,
/// `fmaps[i]` as the Python API calls it, and its first bad entry in row-major order. The
/// maps are scanned in parallel on the current pool.
pub(crate) fn finite_maps<T: Real>(maps: &[MatRef<'_, T>]) -> Result<()> {
    let ok: Vec<bool> = maps.par_iter().map(|m| finite(*m, "").is_ok()).collect();
    first_bad_map(maps, &ok)
}

/// The error of [`finite_maps`] for the first map whose `ok` is false (`Ok` if none is).
pub(crate) fn first_bad_map<T: Real>(maps: &[MatRef<'_, T>], ok: &[bool]) -> Result<()> {
    match ok.iter().position(|ok| !ok) {
        Some(i) => finite(maps[i], &format!("fmaps[{i}]")),
        None => Ok(()),
    }
}

/// Whether every value is finite (branch-free within chunks of 64).
#[inline]
pub(crate) fn all_finite<T: Real>(v: &[T]) -> bool {
    v.chunks(64)
        .all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
}

/// NaN or infinity in the vector `v` is an [`Error::NonFinite`] naming `what` and the first
/// bad entry ("mean must be finite, got NaN at index 4").
pub fn finite_vector<T: Real>(v: &[T], what: &str) -> Result<()> {
    if all_finite(v) {
        return Ok(());
    }
    let (i, x) = v
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_finite())
        .expect("a value is not finite");
    Err(Error::NonFinite(format!(
        "{what} must be finite, got {x:?} at index {i}"
    )))
}

/// The error for inner products of finite vectors that overflow `T` ("the inner products of
/// `what` overflow float32"): descriptors are meant to be L2-normalised; a result of inf
/// would rank silently wrong.
pub(crate) fn overflow<T: Real>(what: &str) -> Error {
    Error::Value(format!(
        "the inner products of {what} overflow {}: the descriptors are far too large \
         (L2-normalise them with heatsearch.l2_normalize, or pass float64)",
        T::NAME
    ))
}

/// Inner products `scores` computed from finite vectors must be finite: otherwise the
/// [`overflow`] error for `what` ("Q and X"). Public for a caller that computes the products
/// itself (heatsearch's NumPy reference).
pub fn products<T: Real>(scores: MatRef<'_, T>, what: &str) -> Result<()> {
    match finite(scores, what) {
        Ok(()) => Ok(()),
        Err(_) => Err(overflow::<T>(what)),
    }
}

/// The data checks of a re-ranking (HeR, diffusion), in this order: the entries of `ranks`
/// in `0..x.nrows()` and distinct in each row, then the rows of `x` they name finite
/// ([`finite_rows`]: a re-ranker reads no other row, and checking the whole database cost more
/// than the re-ranking itself on large indexes), then `q` and `scores` finite. Call it inside
/// heatsearch's pool.
pub(crate) fn rerank_inputs<T: Real>(
    x: MatRef<'_, T>,
    q: MatRef<'_, T>,
    scores: Option<MatRef<'_, T>>,
    ranks: MatRef<'_, i64>,
) -> Result<()> {
    rankings(ranks, Some(x.nrows()), "ranks")?;
    finite_rows(x, ranks, "X")?;
    finite(q, "Q")?;
    if let Some(s) = scores {
        finite(s, "scores")?;
    }
    Ok(())
}

/// Every row of `ranks` (one ranking per query, `(nq, m)`) must hold distinct database
/// indices in `0..n` (`>= 0` when `n` is `None`, an unknown database size): otherwise an
/// [`Error::Value`] naming `what` and the first bad entry in row-major order, whatever the
/// number of threads.
///
/// Can be called from any thread: rows are checked in parallel on heatsearch's pool (entered
/// once from outside it, run directly on one of its threads). A ranking not much shorter than
/// the database is checked against a table of n stamps (one per thread, reused); a short one
/// (m < n / 16, e.g. HeR's top 1000 of a million images) is sorted instead, so that no
/// thread fills a table of the database's size. Errors: [`Error::Threads`] if the pool cannot
/// be started.
pub fn rankings(ranks: MatRef<'_, i64>, n: Option<usize>, what: &str) -> Result<()> {
    threads::install(|_| rankings_in_pool(ranks, n, what))?
}

/// [`rankings`] on the current rayon pool.
fn rankings_in_pool(ranks: MatRef<'_, i64>, n: Option<usize>, what: &str) -> Result<()> {
    let m = ranks.ncols();
    let limit = n.map_or(u64::MAX, |n| n as u64);
    let table = n.is_some_and(|n| m.saturating_mul(16) >= n);
    let errors: Vec<Option<Error>> = (0..ranks.nrows())
        .into_par_iter()
        .map_init(Vec::new, |seen: &mut Vec<usize>, i| {
            let bad = |seen_before: &mut dyn FnMut(usize) -> bool| {
                first_bad_entry(ranks, i, n, what, seen_before)
            };
            if table {
                if seen.is_empty() {
                    seen.resize(n.unwrap_or(0), usize::MAX);
                }
                return bad(&mut |r| std::mem::replace(&mut seen[r], i) == i);
            }
            let mut sorted: Vec<i64> = (0..m).map(|p| ranks[(i, p)]).collect();
            sorted.sort_unstable();
            let in_range = sorted.first().is_none_or(|&r| r >= 0)
                && sorted.last().is_none_or(|&r| (r as u64) < limit);
            if in_range && sorted.windows(2).all(|w| w[0] != w[1]) {
                return None;
            }
            // Something is wrong: find the first bad entry in ranking order.
            let mut set = std::collections::HashSet::new();
            bad(&mut |r| !set.insert(r))
        })
        .collect();
    match errors.into_iter().flatten().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The first entry of row `i` out of range or (by `seen_before`, called in ranking order on
/// the entries in range) repeated, as an error.
fn first_bad_entry(
    ranks: MatRef<'_, i64>,
    i: usize,
    n: Option<usize>,
    what: &str,
    seen_before: &mut dyn FnMut(usize) -> bool,
) -> Option<Error> {
    for p in 0..ranks.ncols() {
        let r = ranks[(i, p)];
        let out = match n {
            Some(n) if r < 0 || r as u64 >= n as u64 => {
                // A database index of n often means 1-based indices (MATLAB, revisitop's .mat).
                let hint = if r as u64 == n as u64 {
                    " (1-based indices? heatsearch counts from 0)"
                } else {
                    ""
                };
                Some(format!("in [0, {n}), got {r} at row {i}, column {p}{hint}"))
            }
            None if r < 0 => Some(format!(">= 0, got {r} at row {i}, column {p}")),
            _ => None,
        };
        if let Some(out) = out {
            return Some(Error::Value(format!(
                "{what} must hold database indices {out}"
            )));
        }
        if seen_before(r as usize) {
            return Some(Error::Value(format!(
                "{what} must not hold an index twice in a row, got {r} again at row {i}, \
                 column {p}"
            )));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rows: &[&[i64]], n: usize) -> std::result::Result<(), String> {
        let m = rows[0].len();
        let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let ranks = MatRef::from_row_major_slice(&flat, rows.len(), m);
        rankings(ranks, Some(n), "ranks").map_err(|e| e.to_string())
    }

    #[test]
    fn rankings_report_the_first_bad_entry_with_a_table_or_sorted() {
        // n = 10: a table (m = 4 >= 10 / 16); n = 1000: sorted per row.
        for n in [10, 1000] {
            assert_eq!(check(&[&[3, 1, 2, 0], &[0, 1, 2, 3]], n), Ok(()));
            let e = check(&[&[3, 1, 2, 0], &[4, 5, 4, 5]], n).unwrap_err();
            assert!(
                e.contains("twice in a row, got 4 again at row 1, column 2"),
                "{e}"
            );
            // A repeat before an out-of-range index in the same row is the first bad entry.
            let e = check(&[&[7, 7, -1, 2]], n).unwrap_err();
            assert!(
                e.contains("twice in a row, got 7 again at row 0, column 1"),
                "{e}"
            );
            let e = check(&[&[1, 2, 3, 4], &[2, -1, 2, 5], &[9, 9, 9, 9]], n).unwrap_err();
            assert!(
                e.contains(&format!("[0, {n}), got -1 at row 1, column 1")),
                "{e}"
            );
            // The same index in different rows is fine.
            assert_eq!(check(&[&[9, 8], &[9, 8]], n), Ok(()));
        }
        let e = check(&[&[1, 12]], 10).unwrap_err();
        assert!(e.contains("[0, 10), got 12 at row 0, column 1"), "{e}");
        assert!(!e.contains("1-based"), "{e}");
        let e = check(&[&[3, 10]], 10).unwrap_err();
        assert!(
            e.ends_with("got 10 at row 0, column 1 (1-based indices? heatsearch counts from 0)"),
            "{e}"
        );
    }

    #[test]
    fn rankings_of_an_unknown_database_size_only_need_indices_from_zero() {
        let flat = [5i64, 1 << 40, 3, -4];
        let ranks = MatRef::from_row_major_slice(&flat, 2, 2);
        let e = rankings(ranks, None, "ranks").unwrap_err().to_string();
        assert_eq!(
            e,
            "ranks must hold database indices >= 0, got -4 at row 1, column 1"
        );
        let ok = [5i64, 1 << 40];
        assert!(rankings(MatRef::from_row_major_slice(&ok, 1, 2), None, "ranks").is_ok());
    }

    #[test]
    fn finite_rows_reads_only_the_named_rows_and_names_the_smallest_bad_one() {
        // 40 rows; NaN in rows 7 and 30, infinity in row 12.
        let mut x = faer::Mat::<f64>::from_fn(40, 3, |i, j| (i * 3 + j) as f64);
        x[(30, 2)] = f64::NAN;
        x[(7, 1)] = f64::NAN;
        x[(12, 0)] = f64::INFINITY;
        let ranks = |rows: &[&[i64]]| {
            faer::Mat::<i64>::from_fn(rows.len(), rows[0].len(), |i, p| rows[i][p])
        };
        // Short rankings (sorted entries) and one naming many rows (the table of flags).
        let clean = ranks(&[&[0, 1], &[39, 2]]);
        assert!(finite_rows(x.as_ref(), clean.as_ref(), "X").is_ok());
        let bad = ranks(&[&[30, 1], &[39, 12]]);
        let e = finite_rows(x.as_ref(), bad.as_ref(), "X").unwrap_err();
        assert_eq!(
            e.to_string(),
            "X must be finite, got inf at row 12, column 0"
        );
        let all: Vec<i64> = (0..40).rev().collect();
        let e = finite_rows(x.as_ref(), ranks(&[&all]).as_ref(), "X").unwrap_err();
        assert_eq!(
            e.to_string(),
            "X must be finite, got NaN at row 7, column 1"
        );
        // The other memory order (faer owns column-major; this view is row-major) reads the same.
        let xt = x.transpose().to_owned();
        let e = finite_rows(xt.transpose(), bad.as_ref(), "X").unwrap_err();
        assert_eq!(
            e.to_string(),
            "X must be finite, got inf at row 12, column 0"
        );
    }

    #[test]
    fn finite_vectors_name_the_index() {
        assert!(finite_vector(&[1.0f32, 2.0], "mean").is_ok());
        let e = finite_vector(&[1.0, 2.0, f64::NAN], "mean").unwrap_err();
        assert_eq!(e.to_string(), "mean must be finite, got NaN at index 2");
    }

    #[test]
    fn rankings_can_be_checked_from_inside_the_pool_and_from_another_pool() {
        let flat: Vec<i64> = (0..40).map(|i| (i * 7) % 40).chain([3, 3]).collect();
        let good = MatRef::from_row_major_slice(&flat[..40], 4, 10);
        let bad = MatRef::from_row_major_slice(&flat[2..], 4, 10);
        let inside = threads::install(|_| {
            (
                rankings(good, Some(40), "ranks"),
                rankings(bad, Some(40), "ranks"),
            )
        })
        .unwrap();
        let other = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let foreign = other.install(|| {
            (
                rankings(good, Some(40), "ranks"),
                rankings(bad, Some(40), "ranks"),
            )
        });
        for (ok, err) in [inside, foreign] {
            assert_eq!(ok, Ok(()));
            assert!(err
                .unwrap_err()
                .to_string()
                .contains("got 3 again at row 3, column 9"));
        }
    }
}
