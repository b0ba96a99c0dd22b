//! The result type of search and of every re-ranking: one ranked list per query.
//!
//! Search, HeR and diffusion all return the same `(ranks, scores)` pair of row-major
//! matrices, so the binding converts one type to NumPy arrays.

use faer::MatRef;

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

/// Asserts the shapes a re-ranking (HeR, diffusion) takes: database `x (n, d)`, queries
/// `q (nq, d)`, first-pass `ranks (nq, m)` with `m <= n`, and `scores` of the shape of
/// `ranks`. The caller has checked them (heatsearch's Python layer does, with messages);
/// a mismatch here is a bug of the caller.
pub(crate) fn assert_rerank_shapes<R>(
    x: MatRef<'_, R>,
    q: MatRef<'_, R>,
    ranks: MatRef<'_, i64>,
    scores: Option<MatRef<'_, R>>,
) {
    let (nq, m) = (ranks.nrows(), ranks.ncols());
    assert_eq!(q.ncols(), x.ncols(), "Q must have the dimension of X");
    assert_eq!(nq, q.nrows(), "ranks must have one row per query");
    assert!(m <= x.nrows(), "ranks must have at most n columns");
    if let Some(s) = scores {
        assert_eq!(
            (s.nrows(), s.ncols()),
            (nq, m),
            "scores must have the shape of ranks"
        );
    }
}
