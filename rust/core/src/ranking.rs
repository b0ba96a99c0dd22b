//! The result type of search and of every re-ranking: one ranked list per query.
//!
//! Search, HeR and diffusion all return the same `(ranks, scores)` pair of row-major
//! matrices, so the binding converts one type to NumPy arrays.

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
