//! The LMDB store's own options, read out of a region's.

use std::path::PathBuf;

use crate::backend::OptionProblem;
use crate::options::RegionOptions;

/// The map size when `max_bytes` is not set: 1 GiB. It is address space,
/// not disk: the data file grows with what is stored.
pub(crate) const DEFAULT_MAP_BYTES: u64 = 1 << 30;

/// The smallest map a region may ask for. LMDB itself would open a
/// smaller one, but a few dozen pages fill up with the tree and its free
/// list before any entry fits: below this a `max_bytes` is more likely a
/// slip (kilobytes meant as megabytes) than a wish.
pub(crate) const MIN_MAP_BYTES: u64 = 256 * 1024;

/// Map sizes are rounded up to a multiple of this, which is a multiple
/// of every page size Linux uses (LMDB wants the map in whole pages).
const MAP_ROUNDING: u64 = 64 * 1024;

/// Where the LMDB store keeps its environment and creation locks, and how
/// large its map is.
// Read by the store, which its cargo feature builds.
#[cfg_attr(not(feature = "dbm"), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct DbmOptions {
    /// `data_dir`, required: the region's environment is a directory in it.
    pub(crate) data_dir: PathBuf,
    /// `lock_dir`, by default `<data_dir>/.locks`: creation locks.
    pub(crate) lock_dir: PathBuf,
    /// `max_bytes` (default [`DEFAULT_MAP_BYTES`]), rounded up to whole
    /// pages: the LMDB map, the most the environment's data file holds.
    pub(crate) map_bytes: u64,
}

impl DbmOptions {
    /// The store's options, or what is wrong with them.
    pub(crate) fn read(options: &RegionOptions) -> Result<DbmOptions, OptionProblem> {
        let data_dir = options
            .data_dir
            .clone()
            .ok_or_else(|| OptionProblem::Missing {
                option: "data_dir",
                message: "missing; the dbm backend needs data_dir = \"<directory>\" \
                          (its LMDB environment goes there)"
                    .to_owned(),
            })?;
        let lock_dir = options
            .lock_dir
            .clone()
            .unwrap_or_else(|| data_dir.join(".locks"));
        let map_bytes = options.max_bytes.unwrap_or(DEFAULT_MAP_BYTES);
        if map_bytes < MIN_MAP_BYTES {
            return Err(OptionProblem::Bad {
                option: "max_bytes",
                value: map_bytes.to_string(),
                problem: "is too small for an LMDB map (max_bytes is the dbm region's map size)"
                    .to_owned(),
                expected: "at least 262144 (256 KiB); the default is 1 GiB",
            });
        }
        Ok(DbmOptions {
            data_dir,
            lock_dir,
            map_bytes: map_bytes.div_ceil(MAP_ROUNDING) * MAP_ROUNDING,
        })
    }
}
