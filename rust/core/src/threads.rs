//! heatsearch's own rayon pool.
//!
//! The kernels never run on rayon's global pool: a host application (or torch, or another
//! extension) may own that one. The pool is built lazily on first use with
//! `HEATSEARCH_NUM_THREADS` threads (default: the number of logical CPUs), can be resized
//! with [`set_num_threads`], and is abandoned (never joined) in a child process after `fork()`,
//! where its worker threads do not exist: the child, seeing another process id, builds a
//! fresh pool on first use instead of deadlocking on the parent's.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rayon::ThreadPool;

use crate::error::{Error, Result};
use crate::memory;

/// Environment variable read for the default pool size.
pub const ENV_VAR: &str = "HEATSEARCH_NUM_THREADS";

/// `(generation, process id, pool)`: valid while the generation is the current one and the
/// process is the one that built it.
static POOL: Mutex<Option<(u64, u32, Arc<Pool>)>> = Mutex::new(None);

/// Bumped by [`set_num_threads`] to have the pool rebuilt with the new size.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Thread count set by [`set_num_threads`]; 0 means "not set, use the default".
static REQUESTED: AtomicUsize = AtomicUsize::new(0);

/// A rayon pool, and whether each of its threads holds the matrix product's buffer
/// ([`memory::reserve_gemm_scratch`]).
struct Pool {
    rayon: ThreadPool,
    reserved: AtomicBool,
}

impl Pool {
    /// Has every thread of the pool check (once) that it can have the matrix product's buffer,
    /// and take it.
    fn reserve_gemm_scratch(&self) -> Result<()> {
        if !self.reserved.load(Ordering::Acquire) {
            self.rayon
                .broadcast(|_| memory::reserve_gemm_scratch())
                .into_iter()
                .collect::<Result<Vec<()>>>()?;
            self.reserved.store(true, Ordering::Release);
        }
        Ok(())
    }
}

fn default_threads() -> Result<usize> {
    match std::env::var(ENV_VAR) {
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Error::Threads(format!(
                "{ENV_VAR} must be a positive integer, got {text:?}"
            ))),
        },
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// The number of threads the kernels use.
pub fn num_threads() -> Result<usize> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => default_threads(),
        n => Ok(n),
    }
}

/// Bytes of address space each of heatsearch's threads takes for the matrix product's packing
/// buffer, once, at its first kernel (see `memory`): what a memory limit must leave per thread.
pub fn gemm_buffer_bytes() -> usize {
    memory::gemm_scratch_bytes()
}

/// Sets the number of threads; the pool is rebuilt on its next use.
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Value(
            "the number of threads must be a positive integer, got 0".into(),
        ));
    }
    REQUESTED.store(n, Ordering::SeqCst);
    GENERATION.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

fn pool() -> Result<Arc<Pool>> {
    let generation = GENERATION.load(Ordering::SeqCst);
    let pid = std::process::id();
    let mut slot = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match slot.take() {
        Some((g, p, pool)) if g == generation && p == pid => {
            *slot = Some((g, p, Arc::clone(&pool)));
            return Ok(pool);
        }
        // Built before a fork(): its worker threads do not exist in this process, and
        // dropping it could wait for them. Leak it.
        Some((_, p, stale)) if p != pid => std::mem::forget(stale),
        // Resized: dropped normally once its last user is done with it.
        _ => {}
    }
    let n = num_threads()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("heatsearch-{i}"))
        .build()
        .map_err(|e| Error::Threads(format!("could not start {n} worker threads: {e}")))?;
    let pool = Arc::new(Pool {
        rayon: pool,
        reserved: AtomicBool::new(false),
    });
    *slot = Some((generation, pid, Arc::clone(&pool)));
    Ok(pool)
}

/// Runs `op` on the calling thread with heatsearch's pool at hand (to spawn a
/// team's helpers into it). The calling thread and the pool's have checked that they can have
/// the matrix product's buffer ([`Error::Memory`] if not: see [`memory`]).
pub(crate) fn with_pool<R>(op: impl FnOnce(&ThreadPool) -> R) -> Result<R> {
    let pool = pool()?;
    memory::reserve_gemm_scratch()?;
    pool.reserve_gemm_scratch()?;
    Ok(op(&pool.rayon))
}

/// Runs `op` inside heatsearch's pool; `op` receives the pool's thread count. The pool's
/// threads have checked that they can have the matrix product's buffer ([`Error::Memory`] if
/// not: see [`memory`]).
pub(crate) fn install<R: Send>(op: impl FnOnce(usize) -> R + Send) -> Result<R> {
    let pool = pool()?;
    pool.reserve_gemm_scratch()?;
    let n = pool.rayon.current_num_threads();
    Ok(pool.rayon.install(|| op(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_of_a_new_pool_takes_its_product_buffer() {
        for n in [2, 3] {
            set_num_threads(n).unwrap();
            let held = install(|_| {
                pool()
                    .unwrap()
                    .rayon
                    .broadcast(|_| memory::holds_gemm_scratch())
            })
            .unwrap();
            assert_eq!(held, vec![true; n]);
        }
    }
}
