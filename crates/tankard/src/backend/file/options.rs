//! The file store's own options, read out of a region's.

use std::path::PathBuf;

use crate::backend::OptionProblem;
use crate::options::RegionOptions;

/// Where the file store keeps entries and creation locks.
// Read by the store, which its cargo feature builds.
#[cfg_attr(not(feature = "file"), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct FileOptions {
    /// `data_dir`, required.
    pub(crate) data_dir: PathBuf,
    /// `lock_dir`, by default `<data_dir>/.locks`.
    pub(crate) lock_dir: PathBuf,
}

impl FileOptions {
    /// The store's options, or what is wrong with them.
    pub(crate) fn read(options: &RegionOptions) -> Result<FileOptions, OptionProblem> {
        let data_dir = options
            .data_dir
            .clone()
            .ok_or_else(|| OptionProblem::Missing {
                option: "data_dir",
                message: "missing; the file backend needs data_dir = \"<directory>\"".to_owned(),
            })?;
        let lock_dir = options
            .lock_dir
            .clone()
            .unwrap_or_else(|| data_dir.join(".locks"));
        Ok(FileOptions { data_dir, lock_dir })
    }
}
