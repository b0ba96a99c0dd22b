//! A team of threads that runs one program in lock-step phases.
//!
//! One feature map of 768 cells is a few milliseconds of work in a few dozen dependent steps
//! (the tiles of a Cholesky factorisation). A rayon fork-join per step does not fit: on the
//! 2-core VM this was measured on, waking a sleeping rayon worker takes 20-50 us, and a
//! `join` of two 50 us halves took 125 us. A team enters the pool once per map instead:
//! every participant runs the same program, a sequence of phases; the items of a phase are
//! claimed one at a time from a shared counter. The calling thread is a participant from the
//! start, inside the pool or not (a Python thread calling `hew_pool` does not hand the map to
//! a pool thread and sleep until it is done).
//!
//! Waiting is bounded. A participant with nothing left to claim, or whose graph task needs
//! one still running, spins for [`SPIN`] (on an idle machine the others finish within
//! that), then sleeps on a condition variable until someone makes progress: ends a phase,
//! finishes a graph task or the program, or panics. Progress costs a fence and a load when
//! nobody sleeps. Spinning without bound (as this team did, then yielding forever) burns the
//! core that a descheduled participant needs: with two CPU-bound processes on two cores, an
//! N = 3072 map took 3 to 3.4 times its idle time on two threads; it now takes 2 to 2.3
//! times (the fair share), and idle times did not change (measured).
//!
//! Safe with any number of participants: one that starts late finds the finished phases done
//! and skips them, and a team of one ([`Members::Caller`], a map of a batch) runs every item
//! itself. Every item computes the same thing whoever runs it, so results do not depend on
//! the number of threads. Work is written to disjoint blocks through
//! [`super::shared_mat::SharedMat`]; small per-item results come back from [`Crew::map`].
//! A phase can also be a graph of dependent tasks ([`Crew::graph`]): no barrier between
//! them, a task waits only for the ones it needs.

use std::any::Any;
use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

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
    /// Participants asleep in [`Shared::wait`] (or about to be): a participant that makes
    /// progress takes `sleep` to wake them only when there are some.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wakeup: Condvar,
    /// How long a participant spins before it sleeps ([`SPIN`]; tests force sleeps).
    spin: Duration,
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

/// How long a waiting participant spins before it sleeps. Most waits in a map end within
/// microseconds (the others are finishing an item of a few to a few hundred microseconds),
/// and waking a sleeping thread costs tens of microseconds; a longer wait means that the
/// thread waited for is not running (the machine is busy), and spinning would only take a
/// core from it. Measured (2 cores, f32 maps of N = 768 and 3072): spinning 10, 25, 50 or
/// 100 us gave the same idle times (within 3%); with two CPU-bound processes running, 10 and
/// 25 us were 3-5% faster at N = 3072 than 50 and 100 us.
const SPIN: Duration = Duration::from_micros(25);
/// The longest sleep between two looks at the condition: a safety net only, every change a
/// sleeper waits for wakes it.
const NAP: Duration = Duration::from_millis(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Returns once `ready()`: spins for `self.spin`, then sleeps until a participant makes
    /// progress ([`Shared::wake`]). Panics if the team is poisoned (an item panicked).
    fn wait(&self, ready: impl Fn() -> bool) {
        if ready() {
            return;
        }
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            self.check_poisoned();
            std::hint::spin_loop();
            if ready() {
                return;
            }
            spins = spins.wrapping_add(1);
            if spins % 32 == 0 && start.elapsed() >= self.spin {
                break;
            }
        }
        let mut guard = lock(&self.sleep);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // Either the waker's fence comes first, and `ready()` below sees its progress, or
        // this one does, and the waker sees the sleeper and notifies, which it can only do
        // once this thread waits (it holds `sleep` until then): no wake-up is lost.
        fence(Ordering::SeqCst);
        while !ready() && !self.poisoned.load(Ordering::Acquire) {
            guard = self
                .wakeup
                .wait_timeout(guard, NAP)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        if !ready() {
            self.check_poisoned();
        }
    }

    /// Wakes the sleepers, if any, after this thread made progress (finished a phase or a
    /// task, finished the program, or panicked). Costs a fence when nobody sleeps.
    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) > 0 {
            let _guard = lock(&self.sleep);
            self.wakeup.notify_all();
        }
    }

    fn check_poisoned(&self) {
        if self.poisoned.load(Ordering::Acquire) {
            panic!("heatsearch: another thread of the team panicked");
        }
    }
}

/// Marks the team poisoned when dropped during a panic, and wakes the others, so that they
/// stop waiting.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Release);
            self.0.wake();
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
                    let guard = PanicGuard(shared);
                    op(next as usize);
                    drop(guard);
                    if shared.done.fetch_add(1, Ordering::AcqRel) + 1 == items as usize {
                        // The last item of the phase: open the next one.
                        shared.done.store(0, Ordering::Relaxed);
                        shared.state.store(pack(p + 1, 0), Ordering::Release);
                        shared.wake();
                        return;
                    }
                    state = shared.state.load(Ordering::Acquire);
                }
                Err(now) => state = now,
            }
        }
        shared.wait(|| unpack(shared.state.load(Ordering::Acquire)).0 > p);
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
            self.shared
                .wait(|| graph.needs[p].iter().all(|&d| slots.is_set(d as usize)));
            slots.set(p, op(graph.order[p]));
            self.shared.wake();
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
    run_with(members, SPIN, program)
}

/// [`run`] with participants that spin for `spin` before they sleep.
fn run_with<R: Send>(
    members: Members<'_>,
    spin: Duration,
    program: impl Fn(&Crew<'_>) -> R + Sync,
) -> R {
    let shared = Shared {
        state: AtomicU64::new(pack(0, 0)),
        done: AtomicUsize::new(0),
        poisoned: AtomicBool::new(false),
        started: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        raised: AtomicBool::new(false),
        slots: Mutex::new(Vec::new()),
        sleepers: AtomicUsize::new(0),
        sleep: Mutex::new(()),
        wakeup: Condvar::new(),
        spin,
    };
    let participate = || {
        shared.started.fetch_add(1, Ordering::AcqRel);
        let guard = PanicGuard(&shared);
        let out = program(&Crew {
            shared: &shared,
            phase: Cell::new(0),
            maps: Cell::new(0),
        });
        drop(guard);
        shared.finished.fetch_add(1, Ordering::AcqRel);
        shared.wake();
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
        // Helpers that started are in their last phase: wait for them here, spinning first,
        // rather than in the scope, where this thread would fall asleep at once and take tens
        // of microseconds to wake. Helpers that have not started are run by the scope.
        let started = shared.started.load(Ordering::Acquire);
        shared.wait(|| shared.finished.load(Ordering::Acquire) >= started);
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
    fn sleeping_participants_are_woken_by_phases_tasks_and_finishing_helpers() {
        use crate::parallel::task_graph::TaskGraph;
        use std::time::Duration;
        // Task 0 is slow; 1 and 2 need it, 3 needs both.
        let graph = TaskGraph::schedule(&[vec![], vec![0], vec![0], vec![1, 2]], &[4, 1, 1, 1], 3);
        for threads in [2, 3, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            // Spinning 0 or 20 us: every wait longer than that is a sleep.
            for spin in [Duration::ZERO, Duration::from_micros(20)] {
                for i in 0..20 {
                    let runs = AtomicUsize::new(0);
                    let members = Members::Pool(&pool, threads);
                    let body = || {
                        run_with(members, spin, |crew| {
                            crew.phase(threads, |item| {
                                if item == 0 {
                                    std::thread::sleep(Duration::from_micros(300));
                                }
                            });
                            let order = crew.graph(&graph, |id| {
                                if id == 0 {
                                    std::thread::sleep(Duration::from_micros(300));
                                }
                                id
                            });
                            assert_eq!(order, vec![0, 1, 2, 3]);
                            program(crew, &runs)
                        })
                    };
                    let total = if i % 2 == 0 {
                        body()
                    } else {
                        pool.install(body)
                    };
                    assert_eq!(runs.load(Ordering::Relaxed), 51);
                    assert_eq!(total, TOTAL);
                }
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
        // Spinning or asleep when the item panics.
        for spin in [std::time::Duration::ZERO, SPIN] {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.install(|| {
                    run_with(Members::Pool(&pool, 2), spin, |crew| {
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
}
