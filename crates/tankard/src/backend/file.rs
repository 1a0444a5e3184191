//! The file backend: one file per key under `data_dir`, in hashed fan-out
//! directories, written to a temporary file and renamed into place.
//!
//! # Layout
//!
//! ```text
//! <data_dir>/ab/cd/abcd…(64 hex).tke     one entry (the format of `entry`)
//! <data_dir>/.meta/<hash>.meta           one region's generations
//! <lock_dir>/stripe-000.lock …           creation locks (flock), fixed count
//! <lock_dir>/meta-<hash>.lock            serialises generation updates
//! ```
//!
//! Entries carry their own CRC, so a torn or truncated file reads as a miss
//! and the next write replaces it. A region's generations live in one small
//! file next to the entries, so a lookup is two reads: the region's meta
//! file and the entry (DESIGN §6 puts the generation in the key instead;
//! that would cost a read before the read). Nothing is fsynced: a cache may
//! lose entries in a power cut, and the checksum turns any damage into a miss.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{Backend, Loaded, Location, RegionScope, Scope, Usage};
use crate::dogpile::file_lock::FileLock;
use crate::dogpile::lock::CreationLock;
use crate::entry::{self, Generations};
use crate::error::{Error, Result};

const ENTRY_SUFFIX: &str = "tke";
const META_MAGIC: &[u8; 4] = b"TKMF";

/// Entries and generations in a directory tree.
#[derive(Debug)]
pub(crate) struct FileBackend {
    data_dir: PathBuf,
    lock_dir: PathBuf,
    lock: Arc<FileLock>,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn io_error(what: &str, path: &Path, err: io::Error) -> Error {
    Error::backend_source(
        "file",
        format!(
            "cannot {what} {}: {err}; check cache.data_dir",
            path.display()
        ),
        err,
    )
}

/// A region's generations as stored in its meta file.
#[derive(Debug, Default, PartialEq)]
struct MetaFile {
    region: u64,
    soft_before_ms: u64,
    namespaces: Vec<(String, u64)>,
}

impl MetaFile {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.namespaces.len() * 40);
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&self.region.to_le_bytes());
        out.extend_from_slice(&self.soft_before_ms.to_le_bytes());
        out.extend_from_slice(&(self.namespaces.len() as u32).to_le_bytes());
        for (name, generation) in &self.namespaces {
            let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&generation.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a meta file; `None` if it is damaged.
    fn decode(bytes: &[u8]) -> Option<MetaFile> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_le_bytes() != crc || body.get(..4)? != META_MAGIC {
            return None;
        }
        let mut at: usize = 4;
        let mut take = |n: usize| -> Option<&[u8]> {
            let slice = body.get(at..at.checked_add(n)?)?;
            at += n;
            Some(slice)
        };
        let u64_of = |s: &[u8]| s.try_into().ok().map(u64::from_le_bytes);
        let region = u64_of(take(8)?)?;
        let soft_before_ms = u64_of(take(8)?)?;
        let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let mut namespaces = Vec::new();
        for _ in 0..count {
            let len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
            let name = String::from_utf8(take(len)?.to_vec()).ok()?;
            namespaces.push((name, u64_of(take(8)?)?));
        }
        Some(MetaFile {
            region,
            soft_before_ms,
            namespaces,
        })
    }

    fn generations(&self, namespace_key: &str) -> Generations {
        Generations {
            region: self.region,
            soft_before_ms: self.soft_before_ms,
            namespace: self
                .namespaces
                .iter()
                .find(|(name, _)| name == namespace_key)
                .map_or(0, |(_, g)| *g),
        }
    }
}

impl FileBackend {
    pub(crate) fn new(data_dir: PathBuf, lock_dir: PathBuf) -> FileBackend {
        FileBackend {
            lock: Arc::new(FileLock::new(lock_dir.clone())),
            data_dir,
            lock_dir,
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

    /// Reads a file; `None` if it does not exist.
    fn read(path: &Path) -> Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error("read", path, err)),
        }
    }

    /// Writes a file atomically: a temporary file in the same directory,
    /// renamed over the target. Missing directories (even a deleted
    /// `data_dir`) are created again.
    fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
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

    fn read_meta(&self, region: &RegionScope) -> Result<MetaFile> {
        let path = self.meta_path(region);
        match Self::read(&path)? {
            None => Ok(MetaFile::default()),
            Some(bytes) => MetaFile::decode(&bytes).ok_or_else(|| {
                Error::backend(
                    "file",
                    format!(
                        "generation file {} is damaged; `tankard clear` or an invalidation rewrites it",
                        path.display()
                    ),
                )
            }),
        }
    }

    /// Read-modify-write of a region's meta file under an exclusive flock,
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
        // A damaged file restarts from generations no old entry can carry.
        let mut meta = self.read_meta(region).unwrap_or_else(|_| {
            let floor = crate::Clock::system().now_ms();
            MetaFile {
                region: floor,
                soft_before_ms: floor,
                namespaces: Vec::new(),
            }
        });
        change(&mut meta);
        Self::write_atomic(&self.meta_path(region), &meta.encode())
        // `lock_file` drops here, releasing the flock after the rename.
    }

    fn entry_files(&self) -> impl Iterator<Item = PathBuf> + use<> {
        walk(self.data_dir.clone())
    }
}

/// Every entry file under `root`, depth-first, skipping dot-directories.
fn walk(root: PathBuf) -> impl Iterator<Item = PathBuf> {
    let mut stack = vec![root];
    let mut files: Vec<PathBuf> = Vec::new();
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
                let hidden = item.file_name().to_string_lossy().starts_with('.');
                match item.file_type() {
                    Ok(t) if t.is_dir() && !hidden => stack.push(path),
                    Ok(t) if t.is_file() && path.extension().is_some_and(|e| e == ENTRY_SUFFIX) => {
                        files.push(path)
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
        Ok(Loaded {
            generations: meta.generations(&at.scope.generation_key),
            bytes: Self::read(&self.entry_path(&at.storage_key))?,
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

    async fn purge_expired(&self, now_ms: u64) -> Result<u64> {
        let mut removed = 0;
        for path in self.entry_files() {
            let Ok(bytes) = fs::read(&path) else { continue };
            let dead = match entry::peek_meta(&bytes) {
                Some(meta) => meta.stale_until_ms <= now_ms,
                None => true, // damaged: it can only ever be a miss
            };
            if dead && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn usage(&self) -> Result<Usage> {
        let (mut entries, mut bytes) = (0, 0);
        for path in self.entry_files() {
            if let Ok(meta) = fs::metadata(&path) {
                entries += 1;
                bytes += meta.len();
            }
        }
        Ok(Usage {
            entries: Some(entries),
            bytes: Some(bytes),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn meta_file_round_trips_and_rejects_damage() {
        let meta = MetaFile {
            region: 3,
            soft_before_ms: 99,
            namespaces: vec![("r:a!gen".into(), 2), ("r:b!gen".into(), 5)],
        };
        let bytes = meta.encode();
        assert_eq!(MetaFile::decode(&bytes), Some(meta));
        for len in 0..bytes.len() {
            assert_eq!(MetaFile::decode(&bytes[..len]), None);
        }
    }
}
