//! HeW: heat-diffusion weighting of local CNN features (docs/ALGORITHM.md, section 1).
//!
//! Each local feature (cell) of a feature map is in turn a heat source held at temperature 1;
//! its system temperature `T_j` is the mean temperature of the other cells (and the ground
//! node) at steady state. Bursty features, similar to many others, heat the system a lot and
//! get the small weight `w_j = 1 / T_j`. The descriptor is `v = sum_j w_j f_j` over the RAW
//! features.
//!
//! Degenerate maps follow docs/ALGORITHM.md: a cell equal to the mean has affinity 0 to all; with
//! N = 1 or no positive affinity anywhere every weight is 1; a cell with no positive
//! affinity while others have some ("isolated", `T_j = 0`) gets the largest weight of the
//! connected cells.

use faer::MatRef;
use rayon::prelude::*;
use rayon::ThreadPool;

use crate::affinity::{heat_system, AffinityRules};
use crate::centre::centre_columns;
use crate::error::{Error, Result};
use crate::heat::system_temperatures;
use crate::parallel::shared_mat::SharedMat;
use crate::parallel::team;
use crate::parallel::team::Members;
use crate::parallel::tiled_cholesky::{cholesky_inverse, tile_size, Plan};
use crate::parallel::workspace::with_workspace;
use crate::real::Real;
use crate::{threads, validate};

pub use crate::centre::EQUAL_TO_MEAN_ULPS;

/// Affinity threshold `tau`: 0 in the authors' first code release (0.1 in a later one).
pub const DEFAULT_THRESHOLD: f64 = 0.0;
/// Ground conductance factor: `z = 0.1 * mean of the positive affinities` (the paper).
pub const DEFAULT_GROUND: f64 = 0.1;
/// The ground factors HeW and HeR compute accurately, in both float types: `[1e-6, 1e6]`.
/// The ground is the heat system's smallest eigenvalue; measured (24 x 16 maps, C = 64;
/// clustered descriptors, depth 800) within this range HeW's `f64` weights agree with the
/// dense reference to 2e-11 and `f32` with `f64` to 2.3e-6, and HeR's rankings agree with the
/// reference; beyond it, the `f64` factorisation of HeW fails below about 1e-20, `f32` HeW
/// returns uniform weights there, HeR's rankings part from the reference below 1e-12 and
/// above 1e12, and both overflow towards 1e100 (`f32`) and 1e308 (`f64`).
pub const GROUND_RANGE: (f64, f64) = (1e-6, 1e6);

/// Parameters of HeW. `Default` gives the paper's: `threshold = 0` (the first code release;
/// the later one used 0.1), `ground = 0.1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HewParams {
    /// Affinities below it are removed (`tau`, >= 0).
    pub threshold: f64,
    /// Ground conductance factor: `z = ground * mean of the positive affinities` (> 0).
    pub ground: f64,
}

impl Default for HewParams {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            ground: DEFAULT_GROUND,
        }
    }
}

/// HeW weights of one map `f` (N cells x C channels, any strides), `(N,)`, in `T`.
///
/// `mean`: the centering mean `(C,)`; `None` uses the map's own mean of local features.
///
/// Errors: NaN or infinity in `mean` or `f` ([`crate::Error::NonFinite`] naming "mean" or "fmap").
///
/// # Panics
/// If `f` has no cell or no channel, `mean` is not of length C, `threshold < 0` or
/// `ground <= 0` (the caller checks them; see [`crate::validate`]).
pub fn hew_weights<T: Real>(
    f: MatRef<'_, T>,
    mean: Option<&[T]>,
    params: HewParams,
) -> Result<Vec<T>> {
    let mu = mean_of(&[f], mean, params)?;
    threads::with_pool(|pool| weights(f, mu.as_deref(), params, members(pool, f.nrows())))?
}

/// HeW descriptor of one map: `sum_j w_j f_j`, `(C,)`, in `T` (accumulated in `f64`).
///
/// Errors and panics as [`hew_weights`].
pub fn hew_pool<T: Real>(
    f: MatRef<'_, T>,
    mean: Option<&[T]>,
    params: HewParams,
) -> Result<Vec<T>> {
    let mu = mean_of(&[f], mean, params)?;
    threads::with_pool(|pool| descriptor(f, mu.as_deref(), params, members(pool, f.nrows())))?
}

/// HeW descriptors of many maps with the same number of channels C (any numbers of cells),
/// one `Vec` of length C per map. Maps run in parallel, one thread each; with fewer maps
/// than threads each map uses all threads.
///
/// Errors: NaN or infinity in `mean` or in a map (named `fmaps[i]`, checked before any map
/// is computed). Panics as [`hew_weights`], and if the maps differ in C.
pub fn hew_pool_batch<T: Real>(
    maps: &[MatRef<'_, T>],
    mean: Option<&[T]>,
    params: HewParams,
) -> Result<Vec<Vec<T>>> {
    let mu = mean_of(maps, mean, params)?;
    threads::with_pool(|pool| {
        // Checked up front (a pass over the inputs, about 1% of the work) so that a bad map
        // fails the batch at once, named by its position, before any map is computed.
        pool.install(|| validate::finite_maps(maps))?;
        if maps.len() >= pool.current_num_threads() {
            pool.install(|| {
                maps.par_iter()
                    .map(|m| descriptor(*m, mu.as_deref(), params, Members::Caller))
                    .collect()
            })
        } else {
            maps.iter()
                .map(|m| descriptor(*m, mu.as_deref(), params, members(pool, m.nrows())))
                .collect()
        }
    })?
}

/// The mean of all local features of all maps, `(C,)`: the sum of every cell of every map
/// divided by the total number of cells (not a mean of per-map means), accumulated in `f64`.
///
/// Errors: NaN or infinity in a map (named `fmaps[i]`). Panics if there is no map, or the
/// maps are empty or differ in C.
pub fn local_mean<T: Real>(maps: &[MatRef<'_, T>]) -> Result<Vec<T>> {
    assert!(
        !maps.is_empty(),
        "local_mean needs at least one feature map"
    );
    let c = channels(maps);
    threads::install(|_| {
        // Each map is checked just before it is summed, while it is in cache.
        let sums: Vec<Option<Vec<f64>>> = maps
            .par_iter()
            .map(|m| validate::finite(*m, "").is_ok().then(|| column_sums(*m)))
            .collect();
        let ok: Vec<bool> = sums.iter().map(Option::is_some).collect();
        validate::first_bad_map(maps, &ok)?;
        let sums: Vec<Vec<f64>> = sums.into_iter().flatten().collect();
        let cells: usize = maps.iter().map(|m| m.nrows()).sum();
        Ok((0..c)
            .map(|k| T::of(sums.iter().map(|s| s[k]).sum::<f64>() / cells as f64))
            .collect())
    })?
}

/// Cells from which one map is shared by the pool's threads; a smaller one runs on the calling
/// thread alone. Measured on 2 cores (f32, C = 512): below 64 cells two threads were at most
/// 6% faster (N = 36 to 49) and up to 35% slower (N <= 24: the helper's wake-up costs as much
/// as the map); from 64 cells on they were 1.09 (N = 64), 1.24 (100), 1.4 (196) and 1.9
/// (768 and more) times faster.
const TEAM_MIN_CELLS: usize = 64;

/// Every thread of the pool for a map of at least [`TEAM_MIN_CELLS`] cells.
fn members(pool: &ThreadPool, cells: usize) -> Members<'_> {
    if cells >= TEAM_MIN_CELLS {
        Members::Pool(pool, pool.current_num_threads())
    } else {
        Members::Caller
    }
}

/// The preconditions of the maps and parameters (asserted), and the mean in `f64` (an error
/// if it is not finite).
fn mean_of<T: Real>(
    maps: &[MatRef<'_, T>],
    mean: Option<&[T]>,
    params: HewParams,
) -> Result<Option<Vec<f64>>> {
    assert!(
        params.threshold >= 0.0 && params.ground > 0.0,
        "HeW needs threshold >= 0 and ground > 0, got {params:?}"
    );
    let c = channels(maps);
    let Some(mean) = mean else { return Ok(None) };
    assert_eq!(mean.len(), c, "the mean must have one value per channel");
    validate::finite_vector(mean, "mean")?;
    Ok(Some(mean.iter().map(|x| x.f64()).collect()))
}

/// The number of channels of the maps, all non-empty with the same C (asserted); 0 for no
/// map.
fn channels<T>(maps: &[MatRef<'_, T>]) -> usize {
    let c = maps.first().map_or(0, |m| m.ncols());
    for m in maps {
        assert!(
            m.nrows() > 0 && m.ncols() == c && c > 0,
            "feature maps must be non-empty with the same number of channels"
        );
    }
    c
}

/// Per-channel sums of all cells of `f`, in `f64` (row by row: NumPy maps are row-major).
fn column_sums<T: Real>(f: MatRef<'_, T>) -> Vec<f64> {
    let mut acc = vec![0.0f64; f.ncols()];
    for i in 0..f.nrows() {
        match f.row(i).try_as_row_major() {
            Some(r) => acc
                .iter_mut()
                .zip(r.as_slice())
                .for_each(|(a, x)| *a += x.f64()),
            None => for_row(f, i, |k, x| acc[k] += x),
        }
    }
    acc
}

/// Calls `op(k, f[i, k])` for every channel k of row i, reading a contiguous row as a slice.
#[inline]
fn for_row<T: Real>(f: MatRef<'_, T>, i: usize, mut op: impl FnMut(usize, f64)) {
    let row = f.row(i);
    match row.try_as_row_major() {
        Some(r) => r
            .as_slice()
            .iter()
            .enumerate()
            .for_each(|(k, x)| op(k, x.f64())),
        None => (0..f.ncols()).for_each(|k| op(k, row[k].f64())),
    }
}

fn descriptor<T: Real>(
    f: MatRef<'_, T>,
    mu: Option<&[f64]>,
    params: HewParams,
    members: Members<'_>,
) -> Result<Vec<T>> {
    let v: Vec<T> = map_heat(f, mu, params, members, Output::Descriptor)?
        .into_iter()
        .map(T::of)
        .collect();
    // Accumulated in f64, the sum can still exceed T (a float32 map of values near 1e38).
    if !validate::all_finite(&v) {
        return Err(Error::Value(format!(
            "the HeW descriptor (a weighted sum of the map's cells) overflows {}: the map's \
             values are too large (scale them down, or pass float64)",
            T::NAME
        )));
    }
    Ok(v)
}

fn weights<T: Real>(
    f: MatRef<'_, T>,
    mu: Option<&[f64]>,
    params: HewParams,
    members: Members<'_>,
) -> Result<Vec<T>> {
    Ok(map_heat(f, mu, params, members, Output::Weights)?
        .into_iter()
        .map(T::of)
        .collect())
}

/// What [`map_heat`] returns.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    /// The weights `(N,)`.
    Weights,
    /// The descriptor `sum_j w_j f_j`, `(C,)`.
    Descriptor,
}

/// Rows (cells) per item of the passes over rows: dead cells and the map's own mean, and
/// pooling.
const ROWS_PER_ITEM: usize = 64;

/// HeW of one non-empty map, in `f64`: the weights or the descriptor (an error if the map
/// holds NaN or infinity). All of it runs in one team (a single entry into the thread
/// pool): every step is a phase of it.
fn map_heat<T: Real>(
    f: MatRef<'_, T>,
    mu: Option<&[f64]>,
    params: HewParams,
    members: Members<'_>,
    output: Output,
) -> Result<Vec<f64>> {
    let (n, c) = (f.nrows(), f.ncols());
    let rules = AffinityRules {
        threshold: params.threshold,
        ground: params.ground,
    };
    let tile = tile_size(n);
    let plan = Plan::get(n.div_ceil(tile), members.size());
    with_workspace::<T, _>(|ws| {
        let [cells, m, v, scratch] = ws.views([(c, n), (n, n), (n, n), (n, tile)]);
        let (cells, m, v, scratch) = (
            SharedMat::new(cells),
            SharedMat::new(m),
            SharedMat::new(v),
            SharedMat::new(scratch),
        );
        team::run(members, |crew| {
            let weights = if n == 1 {
                validate::finite(f, "fmap")?;
                vec![1.0]
            } else {
                // Dead cells (all channels zero), whether every value is finite (the check of
                // the input, in the same pass) and, without a given mean, per-channel sums.
                let chunks = crew.map(n.div_ceil(ROWS_PER_ITEM), |item| {
                    let rows = item * ROWS_PER_ITEM..((item + 1) * ROWS_PER_ITEM).min(n);
                    let mut sums = vec![0.0f64; if mu.is_some() { 0 } else { c }];
                    let mut finite = true;
                    let dead: Vec<bool> = rows
                        .map(|i| match f.row(i).try_as_row_major() {
                            Some(r) => {
                                let r = r.as_slice();
                                finite &= validate::all_finite(r);
                                sums.iter_mut().zip(r).for_each(|(s, x)| *s += x.f64());
                                r.iter().all(|x| *x == T::of(0.0))
                            }
                            None => {
                                let mut zero = true;
                                for_row(f, i, |k, x| {
                                    zero &= x == 0.0;
                                    finite &= x.is_finite();
                                    if let Some(s) = sums.get_mut(k) {
                                        *s += x;
                                    }
                                });
                                zero
                            }
                        })
                        .collect();
                    (sums, dead, finite)
                });
                if chunks.iter().any(|(_, _, finite)| !finite) {
                    // Names the first bad entry.
                    validate::finite(f, "fmap")?;
                }
                let own_mean: Vec<f64>;
                let mu = match mu {
                    Some(mu) => mu,
                    None => {
                        own_mean = (0..c)
                            .map(|k| chunks.iter().map(|(s, _, _)| s[k]).sum::<f64>() / n as f64)
                            .collect();
                        &own_mean
                    }
                };
                let dead: Vec<bool> = chunks
                    .iter()
                    .flat_map(|(_, d, _)| d.iter().copied())
                    .collect();
                centre_columns(crew, f, mu, &cells);
                // SAFETY: the centring phase is over; nothing writes `cells` any more.
                let centred = unsafe { cells.block(0, 0, c, n) };
                match heat_system(crew, centred, Some(&dead), rules, &m, tile) {
                    None => vec![1.0; n],
                    Some(system) => {
                        let off = cholesky_inverse(crew, &plan, &m, &v, &scratch, tile)?;
                        let temperatures = system_temperatures(crew, &v, &off);
                        weights_from_temperatures(&temperatures, &system.connected)
                    }
                }
            };
            if output == Output::Weights {
                return Ok(weights);
            }
            // Partial sums over blocks of rows (read in memory order), added in block order.
            let partial = crew.map(n.div_ceil(ROWS_PER_ITEM), |item| {
                let mut acc = vec![0.0f64; c];
                let rows = item * ROWS_PER_ITEM..((item + 1) * ROWS_PER_ITEM).min(n);
                for (i, &w) in rows.clone().zip(&weights[rows]) {
                    match f.row(i).try_as_row_major() {
                        Some(r) => acc
                            .iter_mut()
                            .zip(r.as_slice())
                            .for_each(|(a, x)| *a += w * x.f64()),
                        None => for_row(f, i, |k, x| acc[k] += w * x),
                    }
                }
                acc
            });
            let mut descriptor = vec![0.0f64; c];
            for acc in &partial {
                descriptor.iter_mut().zip(acc).for_each(|(d, a)| *d += a);
            }
            Ok(descriptor)
        })
    })
}

/// `w_j = 1 / T_j`; a cell that is isolated (or whose computed temperature is not positive)
/// gets the largest weight among the others.
fn weights_from_temperatures(t: &[f64], connected: &[bool]) -> Vec<f64> {
    let regular = |j: usize| connected[j] && t[j] > 0.0 && t[j].is_finite();
    let largest = (0..t.len())
        .filter(|&j| regular(j))
        .map(|j| 1.0 / t[j])
        .fold(f64::NAN, f64::max);
    if largest.is_nan() {
        return vec![1.0; t.len()];
    }
    (0..t.len())
        .map(|j| if regular(j) { 1.0 / t[j] } else { largest })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_from_temperatures_follow_the_degenerate_rules() {
        assert_eq!(
            weights_from_temperatures(&[0.5, 0.25, 0.0], &[true, true, false]),
            vec![2.0, 4.0, 4.0]
        );
        assert_eq!(
            weights_from_temperatures(&[0.0, 0.0], &[false, false]),
            vec![1.0, 1.0]
        );
    }
}
