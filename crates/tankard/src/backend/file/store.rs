//! The implementation of the file store, built with its cargo feature.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::meta::{MetaFile, MetaLog};
use crate::backend::flock::FileLock;
use crate::backend::{Backend, Loaded, Location, Purged, RegionScope, Scope, Usage};

use crate::backend::lock::CreationLock;
use crate::entry::{self, Generations};
use crate::error::{Error, Result};

const ENTRY_SUFFIX: &str = "tke";
/// How a temporary file's name starts (`write_atomic`).
const TEMP_PREFIX: &str = ".tmp-";
/// The directory of the meta logs, the only hidden one with our files.
const META_DIR: &str = ".meta";
/// How long after its last write a temporary file is taken for the
/// leftover of a crashed writer (see the module docs for why).
pub(crate) const TEMP_FILE_AGE: Duration = Duration::from_secs(10 * 60);

/// Entries and generations in a directory tree.
#[derive(Debug)]
pub(crate) struct FileBackend {
    data_dir: PathBuf,
    lock_dir: PathBuf,
    lock: Arc<FileLock>,
    meta: MetaLog,
    /// Entries larger than this are not read (`max_entry_bytes`).
    max_entry_bytes: u64,
}

/// What is at an entry's path.
enum Stored {
    Missing,
    Bytes(Vec<u8>),
    /// Larger than `max_entry_bytes`: its size, unread.
    Oversized(u64),
}

/// One of the backend's files found by [`walk`].
enum Found {
    Entry(PathBuf),
    Temp(PathBuf),
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

pub(super) fn io_error(what: &str, path: &Path, err: io::Error) -> Error {
    Error::backend_source(
        "file",
        format!(
            "cannot {what} {}: {err}; check cache.data_dir",
            path.display()
        ),
        err,
    )
}

/// Opens the file store of a region: `data_dir` is required, locks go to
/// `lock_dir` (default `<data_dir>/.locks`).
pub(crate) fn open(options: &crate::options::RegionOptions) -> Result<Arc<dyn Backend>> {
    let own = super::options::FileOptions::read(options)
        .map_err(|problem| problem.for_region(options))?;
    Ok(Arc::new(FileBackend::new(
        own.data_dir,
        own.lock_dir,
        options.max_entry_bytes,
    )))
}

impl FileBackend {
    pub(crate) fn new(data_dir: PathBuf, lock_dir: PathBuf, max_entry_bytes: u64) -> FileBackend {
        FileBackend {
            lock: Arc::new(FileLock::new(lock_dir.clone())),
            meta: MetaLog::default(),
            data_dir,
            lock_dir,
            max_entry_bytes,
        }
    }

    fn hash_name(key: &str) -> String {
        hex(blake3::hash(key.as_bytes()).as_bytes())
    }

    fn entry_path(&self, storage_key: &str) -> PathBuf {
        let name = Self::hash_name(storage_key);
        self.data_dir
            .join(&name[0..2])
            .join(&name[2..4])
            .join(format!("{name}.{ENTRY_SUFFIX}"))
    }

    fn meta_path(&self, region: &RegionScope) -> PathBuf {
        let name = Self::hash_name(&region.generation_key);
        self.data_dir
            .join(".meta")
            .join(format!("{}.meta", &name[..32]))
    }

    /// Reads an entry file unless it is larger than `max_entry_bytes`:
    /// its size is checked before the read, and the read stops past the
    /// bound in case the file grew in between.
    fn read_entry(&self, path: &Path) -> Result<Stored> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Stored::Missing),
            Err(err) => return Err(io_error("read", path, err)),
        };
        let max = self.max_entry_bytes;
        let size = file
            .metadata()
            .map_err(|err| io_error("read", path, err))?
            .len();
        if size > max {
            return Ok(Stored::Oversized(size));
        }
        // `size` is at most `max_entry_bytes`, which fits in memory by
        // the user's own setting.
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|err| io_error("read", path, err))?;
        if bytes.len() as u64 > max {
            return Ok(Stored::Oversized(bytes.len() as u64));
        }
        Ok(Stored::Bytes(bytes))
    }

    /// Writes a file atomically: a temporary file in the same directory,
    /// renamed over the target. Missing directories (even a deleted
    /// `data_dir`) are created again.
    pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(bytes)?;
            fs::rename(&tmp, path)
        };
        let result = match write() {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
                write()
            }
            other => other,
        };
        result.map_err(|err| {
            let _ = fs::remove_file(&tmp);
            io_error("write", path, err)
        })
    }

    /// The region's generations: a `stat` when the meta file is unchanged
    /// since this process last read it, a read otherwise.
    fn read_meta(&self, region: &RegionScope) -> Result<Arc<MetaFile>> {
        self.meta.read(&self.meta_path(region))
    }

    /// Read-modify-append of a region's meta log under an exclusive flock,
    /// so concurrent clears from several processes all count.
    fn update_meta(&self, region: &RegionScope, change: impl FnOnce(&mut MetaFile)) -> Result<()> {
        fs::create_dir_all(&self.lock_dir).map_err(|e| io_error("create", &self.lock_dir, e))?;
        let lock_path = self.lock_dir.join(format!(
            "meta-{}.lock",
            &Self::hash_name(&region.generation_key)[..32]
        ));
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error("open", &lock_path, e))?;
        lock_file
            .lock()
            .map_err(|e| io_error("lock", &lock_path, e))?;
        let result = self.meta.update(&self.meta_path(region), change);
        drop(lock_file); // releases the flock after the write
        result
    }

    fn files(&self) -> impl Iterator<Item = Found> + use<> {
        walk(self.data_dir.clone())
    }
}

/// Every entry file and temporary file under `root`, depth-first,
/// skipping dot-directories other than the meta logs'.
fn walk(root: PathBuf) -> impl Iterator<Item = Found> {
    let mut stack = vec![root];
    let mut files: Vec<Found> = Vec::new();
    std::iter::from_fn(move || {
        loop {
            if let Some(file) = files.pop() {
                return Some(file);
            }
            let dir = stack.pop()?;
            let Ok(read) = fs::read_dir(&dir) else {
                continue;
            };
            for item in read.flatten() {
                let path = item.path();
                let name = item.file_name();
                let name = name.to_string_lossy();
                let hidden = name.starts_with('.') && name != META_DIR;
                match item.file_type() {
                    Ok(t) if t.is_dir() && !hidden => stack.push(path),
                    Ok(t) if t.is_file() && name.starts_with(TEMP_PREFIX) => {
                        files.push(Found::Temp(path))
                    }
                    Ok(t) if t.is_file() && path.extension().is_some_and(|e| e == ENTRY_SUFFIX) => {
                        files.push(Found::Entry(path))
                    }
                    _ => {}
                }
            }
        }
    })
}

#[async_trait]
impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn load(&self, at: &Location<'_>) -> Result<Loaded> {
        let meta = self.read_meta(&at.scope.region)?;
        let (bytes, oversized) = match self.read_entry(&self.entry_path(&at.storage_key))? {
            Stored::Missing => (None, None),
            Stored::Bytes(bytes) => (Some(bytes), None),
            Stored::Oversized(size) => (None, Some(size)),
        };
        Ok(Loaded {
            generations: meta.generations(&at.scope.generation_key),
            bytes,
            oversized,
        })
    }

    async fn generations(&self, scope: &Scope) -> Result<Generations> {
        Ok(self
            .read_meta(&scope.region)?
            .generations(&scope.generation_key))
    }

    async fn store(&self, at: &Location<'_>, entry: Vec<u8>, _ttl: Option<Duration>) -> Result<()> {
        // Expiry is in the entry's header; `purge_expired` reads it.
        Self::write_atomic(&self.entry_path(&at.storage_key), &entry)
    }

    async fn remove(&self, at: &Location<'_>) -> Result<bool> {
        let path = self.entry_path(&at.storage_key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(io_error("remove", &path, err)),
        }
    }

    async fn bump_namespace(&self, scope: &Scope) -> Result<()> {
        self.update_meta(&scope.region, |meta| {
            match meta
                .namespaces
                .iter_mut()
                .find(|(n, _)| *n == scope.generation_key)
            {
                Some((_, generation)) => *generation += 1,
                None => meta.namespaces.push((scope.generation_key.clone(), 1)),
            }
        })
    }

    async fn bump_region(&self, region: &RegionScope) -> Result<()> {
        self.update_meta(region, |meta| meta.region += 1)
    }

    async fn soft_invalidate(&self, region: &RegionScope, at_ms: u64) -> Result<()> {
        self.update_meta(region, |meta| {
            meta.soft_before_ms = meta.soft_before_ms.max(at_ms)
        })
    }

    fn creation_lock(&self) -> Arc<dyn CreationLock> {
        self.lock.clone()
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<Purged> {
        let mut purged = Purged::default();
        // Temporary files age by the kernel's clock, which stamped them,
        // not by the region's (a test's manual clock, say).
        let now = SystemTime::now();
        for found in self.files() {
            match found {
                Found::Entry(path) => {
                    let dead = match self.read_entry(&path) {
                        Ok(Stored::Bytes(bytes)) => match entry::peek_meta(&bytes) {
                            Some(meta) => meta.stale_until_ms <= now_ms,
                            None => true, // damaged: it can only ever be a miss
                        },
                        Ok(Stored::Oversized(_)) => true, // likewise
                        Ok(Stored::Missing) | Err(_) => false,
                    };
                    if dead && fs::remove_file(&path).is_ok() {
                        purged.entries += 1;
                    }
                }
                Found::Temp(path) => {
                    let Ok(meta) = fs::metadata(&path) else {
                        continue;
                    };
                    let old = meta
                        .modified()
                        .ok()
                        .and_then(|at| now.duration_since(at).ok())
                        .is_some_and(|age| age >= TEMP_FILE_AGE);
                    if old && fs::remove_file(&path).is_ok() {
                        purged.temp_files += 1;
                        purged.temp_bytes += meta.len();
                    }
                }
            }
        }
        Ok(purged)
    }

    async fn usage(&self) -> Result<Usage> {
        let (mut entries, mut bytes, mut temp_files, mut temp_bytes) = (0, 0, 0, 0);
        for found in self.files() {
            let (path, count, size) = match &found {
                Found::Entry(path) => (path, &mut entries, &mut bytes),
                Found::Temp(path) => (path, &mut temp_files, &mut temp_bytes),
            };
            if let Ok(meta) = fs::metadata(path) {
                *count += 1;
                *size += meta.len();
            }
        }
        Ok(Usage {
            entries: Some(entries),
            bytes: Some(bytes),
            temp_files: Some(temp_files),
            temp_bytes: Some(temp_bytes),
        })
    }
}
