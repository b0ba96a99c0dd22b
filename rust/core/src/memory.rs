//! Memory a kernel cannot do without, asked for fallibly, so that a memory limit gives an error
//! instead of aborting the process.
//!
//! Rust aborts the process when an infallible allocation fails, and two allocations of a kernel
//! call can fail under a limit on the address space (`RLIMIT_AS`, `ulimit -v`) or with
//! overcommit disabled:
//!
//! * faer's x86 matrix product (the `private-gemm-x86` crate) packs its operands into a buffer
//!   of twice the L3 cache (64 MB with a 32 MB L3), allocated once per thread on that thread's
//!   first large product. [`reserve_gemm_scratch`] asks for that much first, once per thread,
//!   with `try_reserve` (the probe is freed at once: address space is only reserved, no page is
//!   touched), so a thread that cannot get it reports [`Error::Memory`] before any product runs.
//! * a search's candidate lists and results, which can be large (`k = None` ranks the whole
//!   database for every query): [`ensure`] checks their size can be had before they grow.
//!
//! The probe's size comes from the L3 and L2 sizes the kernel reports in
//! `/sys/devices/system/cpu/cpu0/cache` with the same floors `private-gemm-x86` applies (at
//! least 4 MB and four times the L2); where those files do not exist, 64 MB.

use std::cell::Cell;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// L3 size assumed when the kernel does not report one.
const DEFAULT_L3_BYTES: usize = 32 << 20;
/// `private-gemm-x86`'s floor for the L3 size.
const MIN_L3_BYTES: usize = 4 << 20;

thread_local! {
    /// This thread's probe succeeded (it never needs to run again: the GEMM keeps its buffer).
    static RESERVED: Cell<bool> = const { Cell::new(false) };
}

/// Bytes of the GEMM's per-thread packing buffer (twice the L3 size).
pub(crate) fn gemm_scratch_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        let l2 = cache_bytes(2).unwrap_or(0);
        let l3 = cache_bytes(3)
            .unwrap_or(DEFAULT_L3_BYTES)
            .max(MIN_L3_BYTES)
            .max(4 * l2);
        2 * l3
    })
}

/// The size of cpu0's level-`level` data or unified cache from sysfs (e.g. `32768K`).
fn cache_bytes(level: u32) -> Option<usize> {
    let root = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    std::fs::read_dir(root).ok()?.flatten().find_map(|entry| {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let kind = read("type")?;
        if read("level")?.trim() != level.to_string() || kind.trim() == "Instruction" {
            return None;
        }
        let size = read("size")?;
        let size = size.trim();
        let (digits, unit) = size.split_at(size.trim_end_matches(['K', 'M', 'G']).len());
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => 1,
        };
        digits.parse::<usize>().ok().map(|v| v * scale)
    })
}

/// On the current thread, once: checks that the GEMM's packing buffer
/// ([`gemm_scratch_bytes`]) can be allocated, so that the product does not abort the process.
pub(crate) fn reserve_gemm_scratch() -> Result<()> {
    if RESERVED.with(Cell::get) {
        return Ok(());
    }
    ensure(
        gemm_scratch_bytes(),
        "the matrix product's buffer of a kernel thread (one per thread: \
         heatsearch.set_num_threads)",
    )?;
    RESERVED.with(|r| r.set(true));
    Ok(())
}

/// Checks that `bytes` more bytes can be allocated now (address space is reserved and freed at
/// once, no page touched), or [`Error::Memory`] naming `what` needs them: a kernel asks this
/// before its large allocations, which are then all but sure to succeed.
pub(crate) fn ensure(bytes: usize, what: &str) -> Result<()> {
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes).map_err(|_| {
        Error::Memory(format!(
            "expected {} MB of memory for {what}, but it could not be allocated \
             (a memory limit such as ulimit -v / RLIMIT_AS?)",
            bytes.div_ceil(1 << 20)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_size_is_at_least_the_floor() {
        assert!(gemm_scratch_bytes() >= 2 * MIN_L3_BYTES);
    }

    #[test]
    fn reservation_succeeds_once_and_is_remembered() {
        reserve_gemm_scratch().unwrap();
        assert!(RESERVED.with(Cell::get));
        reserve_gemm_scratch().unwrap();
    }

    #[test]
    fn impossible_sizes_are_an_error() {
        let e = ensure(usize::MAX / 2, "the ranks").unwrap_err();
        assert!(
            matches!(e, Error::Memory(ref m) if m.contains("the ranks")),
            "{e}"
        );
        ensure(1 << 20, "a megabyte").unwrap();
    }
}
