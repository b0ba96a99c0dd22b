//! A graph of dependent tasks and the order a team runs it in.
//!
//! A tiled factorisation is a few hundred tile products with dependencies between them. Run
//! as lock-step phases (one per step of the factorisation), every step ends with a barrier
//! and the short steps near the end leave a core idle. As a graph, a task starts as soon as
//! the tasks it needs are finished, so the next step's products fill those gaps.
//!
//! The run order is fixed before the run by list scheduling on the estimated costs: a simulated
//! team of `workers` takes, whenever one of them is free, the ready task with the longest chain of
//! work still behind it (its "bottom level"; Graham's list scheduling with the HLFET priority). The
//! team then claims tasks in that order, and a participant whose task needs one still running waits
//! for it ([`crate::parallel::team::Crew::graph`]). The order is topological, so the wait always
//! ends and a team of one never waits. Every task computes the same thing whoever runs it and
//! whenever, so results do not depend on the order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Tasks in the order a team claims them, with what each one needs.
pub(crate) struct TaskGraph {
    /// `order[p]`: the id of the task at position p.
    pub(crate) order: Vec<usize>,
    /// `needs[p]`: the positions of the tasks the one at position p needs; all are below p.
    pub(crate) needs: Vec<Vec<u32>>,
}

impl TaskGraph {
    /// Orders tasks `0..needs.len()` for a team of `workers`. `needs[id]`: the ids of the
    /// tasks task `id` needs, all smaller than `id` (ids are a topological order);
    /// `cost[id]`: its estimated run time, in any unit.
    pub(crate) fn schedule(needs: &[Vec<usize>], cost: &[u64], workers: usize) -> Self {
        let n = needs.len();
        assert_eq!(cost.len(), n, "one cost per task");
        let mut successors = vec![Vec::new(); n];
        for (id, before) in needs.iter().enumerate() {
            for &d in before {
                assert!(
                    d < id,
                    "task {id} needs task {d}: ids must be a topological order"
                );
                successors[d].push(id);
            }
        }
        // The longest chain of work from the start of each task to the end of the graph.
        let mut bottom = vec![0u64; n];
        for id in (0..n).rev() {
            bottom[id] = cost[id] + successors[id].iter().map(|&s| bottom[s]).max().unwrap_or(0);
        }
        let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
        // Ready tasks, most urgent first (ties: the smaller id).
        let mut ready: BinaryHeap<(u64, Reverse<usize>)> = (0..n)
            .filter(|&id| waiting[id] == 0)
            .map(|id| (bottom[id], Reverse(id)))
            .collect();
        // Running tasks, the first to finish first.
        let mut running: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
        let mut order = Vec::with_capacity(n);
        let mut now = 0u64;
        loop {
            while running.len() < workers.max(1) {
                let Some((_, Reverse(id))) = ready.pop() else {
                    break;
                };
                order.push(id);
                running.push(Reverse((now + cost[id], id)));
            }
            let Some(Reverse((end, id))) = running.pop() else {
                break;
            };
            now = end;
            for &s in &successors[id] {
                waiting[s] -= 1;
                if waiting[s] == 0 {
                    ready.push((bottom[s], Reverse(s)));
                }
            }
        }
        assert_eq!(order.len(), n, "every task is scheduled");
        let mut position = vec![0u32; n];
        for (p, &id) in order.iter().enumerate() {
            position[id] = u32::try_from(p).expect("a graph has fewer than 2^32 tasks");
        }
        let needs = order
            .iter()
            .map(|&id| needs[id].iter().map(|&d| position[d]).collect())
            .collect();
        Self { order, needs }
    }

    /// The number of tasks.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_topological_and_puts_the_long_chain_first() {
        // 0 -> 1 -> 2 -> 3 is a chain of cost 4; 4 and 5 are independent tasks of cost 1 that
        // could run first by id but must not delay the chain.
        let needs = vec![vec![], vec![0], vec![1], vec![2], vec![], vec![]];
        let g = TaskGraph::schedule(&needs, &[1, 1, 1, 1, 1, 1], 1);
        assert_eq!(g.order, vec![0, 1, 2, 3, 4, 5]);
        let g = TaskGraph::schedule(&needs, &[1, 1, 1, 1, 1, 1], 2);
        assert_eq!(g.order, vec![0, 4, 1, 5, 2, 3]);
        for (p, before) in g.needs.iter().enumerate() {
            assert!(before.iter().all(|&d| (d as usize) < p));
        }
        // Task 1 (position 2) needs task 0 (position 0).
        assert_eq!(g.needs[2], vec![0]);
    }

    #[test]
    fn a_diamond_waits_for_both_branches() {
        let needs = vec![vec![], vec![0], vec![0], vec![1, 2]];
        let g = TaskGraph::schedule(&needs, &[1, 5, 1, 1], 2);
        assert_eq!(g.order[0], 0);
        assert_eq!(g.order[3], 3);
        assert_eq!(g.needs[3].len(), 2);
    }
}
