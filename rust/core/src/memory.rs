//! Memory a kernel cannot do without, asked for fallibly, so that a memory limit gives an error
//! instead of aborting the process.
//!
//! Rust aborts the process when an infallible allocation fails, and two allocations of a kernel
//! call can fail under a limit on the address space (`RLIMIT_AS`, `ulimit -v`) or with
//! overcommit disabled:
//!
//! * faer's matrix product on x86-64 (the `private-gemm-x86` crate, 0.1.22 in `Cargo.lock`)
//!   packs its operands into a per-thread buffer of twice ITS estimate of the L3 cache,
//!   allocated on the thread's first product larger than 16 x 16 x 16. [`reserve_gemm_scratch`]
//!   computes that size as the crate does ([`gemm_scratch_bytes`]), checks with `try_reserve`
//!   that it can be had, and at once runs a small product on the thread so the crate allocates
//!   its buffer there and then: once done on a thread, the products never allocate again.
//! * a search's candidate lists and results, which can be large (`k = None` ranks the whole
//!   database for every query): [`ensure`] checks that their bound can be had before they grow.
//!
//! Other allocations (the kNN graph, HeR's and diffusion's matrices, HeW's workspaces) are
//! not checked: under a limit too tight for them the process still aborts.

use std::cell::Cell;
use std::sync::OnceLock;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};

use crate::error::{Error, Result};

/// `private-gemm-x86`'s cache sizes when its reading of sysfs fails, and its floors: L1 32 KiB,
/// L2 256 KiB (and 4 x L1), L3 2 MiB (and 4 x L2).
const DEFAULT_CACHE_BYTES: [usize; 3] = [32 << 10, 256 << 10, 2 << 20];
/// The side of the warm-up product: above `private-gemm-x86`'s 16 x 16 x 16 threshold.
const WARM_UP_SIDE: usize = 32;

thread_local! {
    /// This thread holds the product's buffer (it never needs to be checked again).
    static RESERVED: Cell<bool> = const { Cell::new(false) };
}

/// Bytes of the per-thread packing buffer of faer's product: twice `private-gemm-x86`'s L3
/// figure, rounded up to its 4 KiB pages each (0 off x86-64, where faer uses the `gemm` crate,
/// whose buffer is the L2's size).
pub(crate) fn gemm_scratch_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        if cfg!(target_arch = "x86_64") {
            2 * private_gemm_l3_bytes().div_ceil(4096) * 4096
        } else {
            0
        }
    })
}

/// `private-gemm-x86` 0.1.22's L3 size (its `cache.rs`): for every `cpu*/cache/index*` of
/// sysfs (Data or Unified), the size divided by the number of CPUs sharing it, the last one
/// read for each level winning; all levels times the number of CPUs sharing the L1 (SMT
/// siblings), the L3 also times the number of physical cores; then the floors of
/// [`DEFAULT_CACHE_BYTES`]. A machine of one L3 cache gets the size of that cache.
fn private_gemm_l3_bytes() -> usize {
    let mut levels = sysfs_cache_bytes().unwrap_or(DEFAULT_CACHE_BYTES);
    levels[0] = levels[0].max(DEFAULT_CACHE_BYTES[0]);
    levels[1] = levels[1].max(DEFAULT_CACHE_BYTES[1]).max(4 * levels[0]);
    levels[2].max(DEFAULT_CACHE_BYTES[2]).max(4 * levels[1])
}

fn sysfs_cache_bytes() -> Option<[usize; 3]> {
    let mut levels = [0usize; 3];
    let mut l1_shared = 1;
    for cpu in std::fs::read_dir("/sys/devices/system/cpu").ok()? {
        let cpu = cpu.ok()?.path();
        let is_cpu = cpu
            .file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with("cpu"));
        let cache = cpu.join("cache");
        if !is_cpu || !cache.is_dir() {
            continue;
        }
        for index in std::fs::read_dir(cache).ok()? {
            let index = index.ok()?.path();
            let named = index
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("index"));
            if !named || !index.is_dir() {
                continue;
            }
            let read = |name: &str| std::fs::read_to_string(index.join(name)).ok();
            let kind = read("type")?;
            if !matches!(kind.trim(), "Data" | "Unified") {
                continue;
            }
            let (Some(level), Some(size), Some(shared)) = (
                read("level").and_then(|l| l.trim().parse::<usize>().ok()),
                read("size").and_then(|s| parse_size(s.trim())),
                read("shared_cpu_list").map(|l| cpu_count(l.trim())),
            ) else {
                continue;
            };
            if level == 1 {
                l1_shared = shared.max(1);
            }
            if (1..=3).contains(&level) && shared > 0 {
                levels[level - 1] = size / shared;
            }
        }
    }
    let mut out = levels.map(|b| b * l1_shared);
    out[2] *= num_cpus::get_physical();
    Some(out)
}

/// `32768K` -> 33554432 (suffixes K, M, G as sysfs writes them).
fn parse_size(text: &str) -> Option<usize> {
    let (digits, scale) = match text.as_bytes().last()? {
        b'K' => (&text[..text.len() - 1], 1 << 10),
        b'M' => (&text[..text.len() - 1], 1 << 20),
        b'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok().map(|v| v * scale)
}

/// The number of CPUs of a list such as `0-3,8,10-11`.
fn cpu_count(list: &str) -> usize {
    list.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b + 1 - a,
                _ => 0,
            },
            None => 1,
        })
        .sum()
}

/// On the current thread, once: checks that faer's product buffer ([`gemm_scratch_bytes`]) can
/// be allocated, then has the product allocate it (a small product), so that no product on
/// this thread can abort the process for want of it afterwards.
pub(crate) fn reserve_gemm_scratch() -> Result<()> {
    if RESERVED.with(Cell::get) {
        return Ok(());
    }
    ensure(
        gemm_scratch_bytes(),
        "the matrix product's buffer of one kernel thread (each of heatsearch's threads needs \
         one: fewer threads with heatsearch.set_num_threads need less)",
    )?;
    let a = Mat::<f32>::zeros(WARM_UP_SIDE, WARM_UP_SIDE);
    let mut c = Mat::<f32>::zeros(WARM_UP_SIDE, WARM_UP_SIDE);
    matmul(
        c.as_mut(),
        Accum::Replace,
        a.as_ref(),
        a.as_ref(),
        1.0,
        Par::Seq,
    );
    RESERVED.with(|r| r.set(true));
    Ok(())
}

/// Whether the current thread holds the product's buffer (its check passed).
#[cfg(test)]
pub(crate) fn holds_gemm_scratch() -> bool {
    RESERVED.with(Cell::get)
}

/// Checks that `bytes` more bytes can be allocated now (requested and released at once, no
/// page touched), or [`Error::Memory`] naming `what` needs them: a kernel asks this before its
/// large allocations, which then all but surely succeed.
pub(crate) fn ensure(bytes: usize, what: &str) -> Result<()> {
    let mut probe: Vec<u8> = Vec::new();
    let reserved = probe.try_reserve_exact(bytes);
    // The buffer must really be asked for: an allocation nothing reads is one the optimiser may
    // remove (it did, in the release test build: the check then always passed).
    std::hint::black_box(probe.as_mut_ptr());
    reserved.map_err(|_| {
        Error::Memory(format!(
            "expected {} MB of memory to be available for {what}, but it could not be allocated \
             (a limit on the process's memory, e.g. ulimit -v / RLIMIT_AS, or too little free \
             memory); raise the limit or ask for less at once",
            bytes.div_ceil(1 << 20)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_size_has_the_crates_floor() {
        if cfg!(target_arch = "x86_64") {
            assert!(gemm_scratch_bytes() >= 2 * DEFAULT_CACHE_BYTES[2]);
            assert_eq!(gemm_scratch_bytes() % 4096, 0);
        }
    }

    #[test]
    fn sizes_and_cpu_lists_parse_as_sysfs_writes_them() {
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
        assert_eq!(cpu_count("0-3,8,10-11"), 7);
        assert_eq!(cpu_count("0"), 1);
        assert_eq!(cpu_count(""), 0);
    }

    #[test]
    fn the_size_rule_is_that_of_the_locked_private_gemm_x86() {
        // gemm_scratch_bytes transcribes private-gemm-x86 0.1.22's cache reading: a newer
        // version in the lock file must be read again before this is updated.
        let lock = include_str!("../../../Cargo.lock");
        let entry = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"private-gemm-x86\""))
            .expect("private-gemm-x86 is in Cargo.lock (faer's x86 product)");
        assert!(entry.contains("version = \"0.1.22\""), "{entry}");
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
