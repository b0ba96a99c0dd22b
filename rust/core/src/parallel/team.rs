//! A team of threads that runs one program in lock-step phases.
//!
//! One feature map of 768 cells is a few milliseconds of work in a few dozen dependent steps
//! (the tiles of a Cholesky factorisation). A rayon fork-join per step does not fit: on the
//! 2-core VM this was measured on, waking a sleeping rayon worker takes 20-50 us, and a
//! `join` of two 50 us halves took 125 us. A team enters the pool once per map instead:
//! every participant runs the same program, a sequence of phases; the items of a phase are
//! claimed one at a time from a shared counter, and a participant with nothing left to claim
//! spins (briefly: the others are running the last items) until the phase is finished. The
//! calling thread is a participant from the start, inside the pool or not (a Python thread
//! calling `hew_pool` does not hand the map to a pool thread and sleep until it is done).
//!
//! Safe with any number of participants: one that starts late finds the finished phases done
//! and skips them, and a team of one ([`Members::Caller`], a map of a batch) runs every item
//! itself.
//! Every item computes the same thing whoever runs it, so results do not depend on the
//! number of threads. Work is written to disjoint blocks through
//! [`crate::parallel::shared_mat::SharedMat`]; small per-item results come back from [`Crew::map`].
//! A phase can also be a graph of dependent tasks ([`Crew::graph`]): no barrier between
//! them, a task waits only for the ones it needs.

use std::any::Any;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::ThreadPool;

use super::task_graph::TaskGraph;

struct Shared {
    /// Current phase (high 32 bits) and the next unclaimed item of it (low 32 bits).
    state: AtomicU64,
    /// Items of the current phase finished.
    done: AtomicUsize,
    /// An item panicked: its phase will never finish.
    poisoned: AtomicBool,
    /// Participants that have started the program.
    started: AtomicUsize,
    /// Participants that have finished the program.
    finished: AtomicUsize,
    /// Raised by an item that found a problem (see [`Crew::raise`]).
    raised: AtomicBool,
    /// The result slots of [`Crew::map`] and [`Crew::graph`] phases, in program order.
    slots: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

/// One participant's handle on the team, passed to the program.
pub(crate) struct Crew<'a> {
    shared: &'a Shared,
    phase: Cell<u32>,
    maps: Cell<usize>,
}

const fn pack(phase: u32, next: u32) -> u64 {
    ((phase as u64) << 32) | next as u64
}

const fn unpack(state: u64) -> (u32, u32) {
    ((state >> 32) as u32, state as u32)
}

/// Marks the team poisoned when dropped during a panic, so that the others stop waiting.
struct PanicGuard<'a>(&'a AtomicBool);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// Spins until `ready()`, then yields the CPU between checks; panics if the team is poisoned.
fn wait(shared: &Shared, ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if shared.poisoned.load(Ordering::Acquire) {
            panic!("heatsearch: another thread of the team panicked");
        }
        if spins < 1 << 16 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

impl Crew<'_> {
    /// Runs `op(i)` for every `i` in `0..items`, each exactly once by some participant, in
    /// increasing order of claiming, and returns once all of them are finished (their writes
    /// are then visible to every participant). Every participant must call the same phases in
    /// the same order with the same `items`; a phase of 0 items is skipped by all.
    pub(crate) fn phase(&self, items: usize, op: impl Fn(usize)) {
        if items == 0 {
            return;
        }
        let items = u32::try_from(items).expect("a phase has fewer than 2^32 items");
        let p = self.phase.get();
        self.phase.set(p + 1);
        let shared = self.shared;
        let mut state = shared.state.load(Ordering::Acquire);
        loop {
            let (current, next) = unpack(state);
            if current != p || next >= items {
                break;
            }
            match shared.state.compare_exchange_weak(
                state,
                pack(p, next + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let guard = PanicGuard(&shared.poisoned);
                    op(next as usize);
                    drop(guard);
                    if shared.done.fetch_add(1, Ordering::AcqRel) + 1 == items as usize {
                        // The last item of the phase: open the next one.
                        shared.done.store(0, Ordering::Relaxed);
                        shared.state.store(pack(p + 1, 0), Ordering::Release);
                        return;
                    }
                    state = shared.state.load(Ordering::Acquire);
                }
                Err(now) => state = now,
            }
        }
        wait(shared, || {
            unpack(shared.state.load(Ordering::Acquire)).0 > p
        });
    }

    /// Raises the team's flag: an item found a problem (a failed factorisation) that every
    /// participant must see, whoever ran the item.
    pub(crate) fn raise(&self) {
        self.shared.raised.store(true, Ordering::Relaxed);
    }

    /// Whether an item of a finished phase has raised the flag.
    pub(crate) fn raised(&self) -> bool {
        self.shared.raised.load(Ordering::Relaxed)
    }

    /// A phase whose items return results: every participant gets all of them, in item
    /// order, once the phase is finished.
    pub(crate) fn map<R: Clone + Send + Sync + 'static>(
        &self,
        items: usize,
        op: impl Fn(usize) -> R,
    ) -> Vec<R> {
        let slots = self.slots::<R>(items);
        self.phase(items, |i| slots.set(i, op(i)));
        slots.iter().cloned().collect()
    }

    /// A phase that runs a task graph: `op(id)` for every task, in the graph's order, each
    /// once all the tasks it needs are finished; returns the results by task id. A
    /// participant that claims a task whose needs are still running waits for them: they
    /// come earlier in the order, so they were claimed earlier and the wait ends.
    pub(crate) fn graph<R: Clone + Send + Sync + 'static>(
        &self,
        graph: &TaskGraph,
        op: impl Fn(usize) -> R,
    ) -> Vec<R> {
        let slots = self.slots::<R>(graph.len());
        self.phase(graph.len(), |p| {
            wait(self.shared, || {
                graph.needs[p].iter().all(|&d| slots.is_set(d as usize))
            });
            slots.set(p, op(graph.order[p]));
        });
        let mut out: Vec<Option<R>> = vec![None; graph.len()];
        for (p, &id) in graph.order.iter().enumerate() {
            out[id] = Some(slots.get(p).clone());
        }
        out.into_iter()
            .map(|r| r.expect("every task ran"))
            .collect()
    }

    /// The result slots of the next [`Crew::map`] or [`Crew::graph`] phase: the k-th of the
    /// program, made by whoever gets there first.
    fn slots<R: Send + Sync + 'static>(&self, items: usize) -> Arc<Slots<R>> {
        let k = self.maps.get();
        self.maps.set(k + 1);
        let mut all = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() == k {
            all.push(Arc::new(Slots::<R>::new(items)));
        }
        Arc::clone(&all[k])
            .downcast::<Slots<R>>()
            .expect("every participant runs the same program")
    }

    /// A phase of one item.
    pub(crate) fn single(&self, op: impl Fn()) {
        self.phase(1, |_| op());
    }
}

/// Who runs a team's program.
#[derive(Clone, Copy)]
pub(crate) enum Members<'p> {
    /// The calling thread alone.
    Caller,
    /// The calling thread and `n - 1` helpers spawned into the pool (the calling thread may
    /// be one of the pool's or not).
    Pool(&'p ThreadPool, usize),
}

impl Members<'_> {
    /// The number of participants.
    pub(crate) fn size(&self) -> usize {
        match *self {
            Members::Caller => 1,
            Members::Pool(_, n) => n.max(1),
        }
    }
}

/// Runs `program` on a team and returns the calling thread's result; the program must write
/// its shared results only in items.
pub(crate) fn run<R: Send>(members: Members<'_>, program: impl Fn(&Crew<'_>) -> R + Sync) -> R {
    let shared = Shared {
        state: AtomicU64::new(pack(0, 0)),
        done: AtomicUsize::new(0),
        poisoned: AtomicBool::new(false),
        started: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        raised: AtomicBool::new(false),
        slots: Mutex::new(Vec::new()),
    };
    let participate = || {
        shared.started.fetch_add(1, Ordering::AcqRel);
        let guard = PanicGuard(&shared.poisoned);
        let out = program(&Crew {
            shared: &shared,
            phase: Cell::new(0),
            maps: Cell::new(0),
        });
        drop(guard);
        shared.finished.fetch_add(1, Ordering::AcqRel);
        out
    };
    let (pool, n) = match members {
        Members::Pool(pool, n) if n > 1 => (pool, n),
        _ => return participate(),
    };
    pool.in_place_scope(|s| {
        for _ in 1..n {
            s.spawn(|_| {
                participate();
            });
        }
        let out = participate();
        // Helpers that started are in their last phase: wait for them here, spinning, rather
        // than in the scope, where this thread could fall asleep and take tens of
        // microseconds to wake. Helpers that have not started are run by the scope.
        let started = shared.started.load(Ordering::Acquire);
        wait(&shared, || {
            shared.finished.load(Ordering::Acquire) >= started
        });
        out
    })
}

/// One result per item of a phase, written once by whichever participant ran the item.
struct Slots<R> {
    slots: Vec<OnceLock<R>>,
}

impl<R> Slots<R> {
    fn new(n: usize) -> Self {
        Self {
            slots: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    fn set(&self, i: usize, value: R) {
        assert!(self.slots[i].set(value).is_ok(), "slot {i} written twice");
    }

    fn is_set(&self, i: usize) -> bool {
        self.slots[i].get().is_some()
    }

    fn get(&self, i: usize) -> &R {
        self.slots[i]
            .get()
            .expect("read a slot before its phase finished")
    }

    fn iter(&self) -> impl Iterator<Item = &R> {
        (0..self.slots.len()).map(|i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn program(crew: &Crew<'_>, runs: &AtomicUsize) -> usize {
        let squares = crew.map(50, |i| {
            runs.fetch_add(1, Ordering::Relaxed);
            i * i
        });
        crew.phase(0, |_| unreachable!());
        crew.single(|| {
            runs.fetch_add(1, Ordering::Relaxed);
        });
        let doubled = crew.map(3, |i| 2 * squares[i]);
        // Every participant sees every item of the finished phase.
        squares.iter().sum::<usize>() + doubled.iter().sum::<usize>()
    }

    // Sum of the squares of 0..50, plus the doubled squares of 0..3.
    const TOTAL: usize = 40425 + 2 * 5;

    #[test]
    fn every_item_runs_once_whatever_the_team_size() {
        for threads in [1, 2, 3, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            // A team of one runs on the calling thread alone, as `Members::Caller` does.
            let members = Members::Pool(&pool, threads);
            for i in 0..40 {
                let runs = AtomicUsize::new(0);
                // Called from outside the pool (a Python thread) and from inside (a map of
                // a batch).
                let total = if i % 2 == 0 {
                    run(members, |crew| program(crew, &runs))
                } else {
                    pool.install(|| run(members, |crew| program(crew, &runs)))
                };
                assert_eq!(runs.load(Ordering::Relaxed), 51);
                assert_eq!(total, TOTAL);
            }
        }
    }

    #[test]
    fn a_team_larger_than_the_pool_still_finishes() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let runs = AtomicUsize::new(0);
        let total = run(Members::Pool(&pool, 4), |crew| program(crew, &runs));
        assert_eq!(runs.load(Ordering::Relaxed), 51);
        assert_eq!(total, TOTAL);
    }

    #[test]
    fn a_panicking_item_reaches_the_caller_instead_of_hanging() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| {
                run(Members::Pool(&pool, 2), |crew| {
                    crew.phase(8, |i| {
                        if i == 3 {
                            panic!("item 3");
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    });
                })
            })
        }));
        assert!(result.is_err());
    }
}
