//! heatsearch-core: heat-diffusion image retrieval in pure Rust.
//!
//! The algorithms of Pang et al., "Deep Feature Aggregation and Image Re-ranking with Heat
//! Diffusion for Image Retrieval", IEEE TMM 21(6), 2019, as specified in the project's
//! `ALGORITHM.md`:
//!
//! * [`hew`]: HeW aggregation: every local CNN feature is a heat source; features that heat
//!   the system a lot (bursty ones) get small weights.
//! * [`affinity`]: the affinity graph shared by HeW and HeR (centring, Gram, dead cells,
//!   threshold, ground conductance).
//! * [`heat`]: the heat solves on `M = D - A` (Cholesky, system temperatures);
//!   [`tiled_cholesky`]: HeW's Cholesky factor and its inverse as a graph of tile products.
//! * [`rerank`]: HeR re-ranking: the query heats its top-k candidates; hotter ones rank first.
//! * [`search`], [`knn`], [`diffusion`]: exact inner-product search and kNN graph (blocked
//!   products fused with top-k selection), diffusion re-ranking (Iscen et al. 2017).
//! * [`threads`]: the crate's own rayon pool (size, fork safety); [`team`]: how one map's
//!   work is shared by the pool's threads (phases of items, one pool entry per map), with
//!   [`task_graph`] for phases of dependent tasks and [`shared_mat`] for the blocks they
//!   write.
//!
//! Matrices come in as [`faer::MatRef`] views with any strides (row-major NumPy arrays,
//! Fortran-ordered ones and strided views alike) and results go out as owned vectors.
//! Nothing here knows about Python.

pub mod affinity;
pub mod diffusion;
pub mod error;
pub mod heat;
pub mod hew;
pub mod knn;
pub mod real;
pub mod rerank;
pub mod search;
pub mod shared_mat;
pub mod task_graph;
pub mod team;
pub mod threads;
pub mod tiled_cholesky;
mod triangle;
mod validate;
pub mod workspace;

pub use diffusion::{diffusion_rerank, DiffusionParams};
pub use error::{Error, Result};
pub use hew::{hew_pool, hew_pool_batch, hew_weights, local_mean, HewParams};
pub use knn::{knn_graph, KnnGraph};
pub use real::Real;
pub use rerank::{heat_rerank, HerParams};
pub use search::{search, Ranking};
