//! The threshold scans of the top-k selection, compiled once per level: a few vector compares
//! per 16 scores. Their bodies are the selection's ([`Selection::scan_items`],
//! [`Selection::scan_one`]); only the choice of instruction set is made here.

use crate::select::Selection;

super::dispatch! {
    /// [`Selection::scan_items`] in the best instruction set of this CPU.
    pub(crate) fn scan_items<T: Real>(
        sel: &mut Selection<T>,
        scores: &[T],
        item: usize,
        skip: usize,
    ) => Selection::scan_items
}

super::dispatch! {
    /// [`Selection::scan_one`] in the best instruction set of this CPU.
    pub(crate) fn scan_one<T: Real>(
        sel: &mut Selection<T>,
        i: usize,
        scores: &[T],
        first_item: usize,
    ) => Selection::scan_one
}
