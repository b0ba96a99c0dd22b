//! How one feature map's work is shared by the threads of heatsearch's pool: private to the
//! crate, used by HeW (and by HeR's per-query affinity, on one thread).
//!
//! A HeW map is a few milliseconds of work in a few dozen dependent steps, too short for a
//! rayon fork-join per step, so the threads enter the pool once per map as a [`team`] and run
//! the same program in phases. The Cholesky factor and its inverse are one phase, a
//! [`task_graph`] of tile products ([`tiled_cholesky`]). Teams write disjoint blocks of shared
//! matrices ([`shared_mat`]) held in per-thread buffers reused from map to map
//! ([`workspace`]).

pub(crate) mod shared_mat;
pub(crate) mod task_graph;
pub(crate) mod team;
pub(crate) mod tiled_cholesky;
pub(crate) mod workspace;
