//! heatsearch-core: heat-diffusion image retrieval in pure Rust.
//!
//! The algorithms of Pang et al., "Deep Feature Aggregation and Image Re-ranking with Heat
//! Diffusion for Image Retrieval", IEEE TMM 21(6), 2019, as specified in the project's
//! `docs/ALGORITHM.md`, and what a retrieval pipeline needs around them:
//!
//! * [`hew`]: HeW aggregation: every local CNN feature is a heat source; features that heat
//!   the system a lot (bursty ones) get small weights.
//! * [`rerank`]: HeR re-ranking: the query heats its top-k candidates; hotter ones rank first.
//! * [`mod@search`], [`knn`]: exact inner-product search and kNN graph (blocked products fused
//!   with a top-k selection).
//! * [`diffusion`]: diffusion re-ranking (Iscen et al. 2017) on the kNN graph.
//! * [`threads`]: the size of heatsearch's own thread pool.
//! * [`validate`]: the data checks the algorithms run on their input.
//!
//! Matrices come in as [`faer::MatRef`] views with any strides (row-major NumPy arrays,
//! Fortran-ordered ones and strided views alike) and results go out as owned vectors.
//! Nothing here knows about Python.
//!
//! Inside, one file holds one concept:
//!
//! * the heat systems: `centre` (cells centred by a mean), `affinity` (the graph and
//!   `M = D - A`), `heat` (Cholesky-based solves and HeW's temperatures), `cg` (the conjugate
//!   gradient of HeR and diffusion);
//! * search and kNN: `select` (the top-k selection they share), `ranking` (the result type);
//! * `simd/`: the hand-vectorised kernels and the CPU-feature check that picks them;
//! * `parallel/`: how one map's work is shared by the pool's threads (a team of threads, a
//!   task graph, the tiled Cholesky factor, shared matrices, per-thread workspaces);
//! * `memory` (allocations asked for fallibly, so a memory limit is an error, not an abort),
//!   `reduce` (fixed-order `f64` sums), `real` (`f32` / `f64`), `error`.

pub mod diffusion;
pub mod hew;
pub mod knn;
pub mod rerank;
pub mod search;
pub mod threads;
pub mod validate;

mod affinity;
mod centre;
mod cg;
mod error;
mod heat;
mod memory;
mod parallel;
mod ranking;
mod real;
mod reduce;
mod select;
mod simd;

pub use diffusion::{diffusion_rerank, DiffusionParams};
pub use error::{Error, Result};
pub use hew::{hew_pool, hew_pool_batch, hew_weights, local_mean, HewParams};
pub use knn::{knn_graph, KnnGraph};
pub use ranking::Ranking;
pub use real::Real;
pub use rerank::{heat_rerank, HerParams};
pub use search::search;
