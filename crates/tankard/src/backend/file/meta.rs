//! A region's generations on disk: an append-only log of records, each a
//! whole snapshot (region generation, soft-invalidation time, namespace
//! generations) with its own CRC. The last valid record is current.
//!
//! # Why a log
//!
//! Every lookup needs the current generations, and reading a second file
//! per lookup would double the cost of a hit. Because the log is only ever
//! appended to (or replaced whole by a rename when it is compacted), a
//! file that still has the same device, inode, size and change time as at
//! the last read cannot have changed: a lookup costs one `stat` instead of
//! an open-read-close. A torn append (a crash mid-write) leaves a bad tail:
//! readers use the last good record and never cache such a file, and the
//! next writer rewrites the file whole instead of appending after it.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{FileBackend, io_error};
use crate::entry::Generations;
use crate::error::{Error, Result};
use crate::sync::lock;

const MAGIC: &[u8; 4] = b"TKMF";
/// A log longer than this is compacted to one record on the next write.
const COMPACT_AT: u64 = 64 * 1024;

/// A region's generations as one log record holds them.
#[derive(Debug, Default, PartialEq)]
pub(super) struct MetaFile {
    pub(super) region: u64,
    pub(super) soft_before_ms: u64,
    pub(super) namespaces: Vec<(String, u64)>,
}

impl MetaFile {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.namespaces.len() * 40);
        out.extend_from_slice(&[0; 4]); // record length, set below
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.region.to_le_bytes());
        out.extend_from_slice(&self.soft_before_ms.to_le_bytes());
        out.extend_from_slice(&(self.namespaces.len() as u32).to_le_bytes());
        for (name, generation) in &self.namespaces {
            let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&generation.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[4..]);
        out.extend_from_slice(&crc.to_le_bytes());
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_le_bytes());
        out
    }

    /// Parses one record body (magic through CRC); `None` if damaged.
    fn decode(record: &[u8]) -> Option<MetaFile> {
        let (body, crc) = record.split_at_checked(record.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_le_bytes() != crc || body.get(..4)? != MAGIC {
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

    pub(super) fn generations(&self, namespace_key: &str) -> Generations {
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

/// What a log holds: its last good record, and whether the file ends
/// exactly after it (`false`: a torn or damaged tail).
struct Parsed {
    last: Option<MetaFile>,
    clean: bool,
}

fn parse(bytes: &[u8]) -> Parsed {
    let mut rest = bytes;
    let mut last = None;
    while !rest.is_empty() {
        let record = rest.split_first_chunk::<4>().and_then(|(len, tail)| {
            let len = u32::from_le_bytes(*len) as usize;
            Some((MetaFile::decode(tail.get(..len)?)?, tail.get(len..)?))
        });
        match record {
            Some((meta, tail)) => {
                last = Some(meta);
                rest = tail;
            }
            None => return Parsed { last, clean: false },
        }
    }
    Parsed { last, clean: true }
}

/// What identifies one version of an append-only file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// The meta logs of one backend, with the last version read of each.
#[derive(Debug, Default)]
pub(super) struct MetaLog {
    cache: Mutex<HashMap<PathBuf, (Stamp, Arc<MetaFile>)>>,
}

fn damaged(path: &Path) -> Error {
    Error::backend(
        "file",
        format!(
            "generation file {} is damaged; the next `clear` or invalidation rewrites it",
            path.display()
        ),
    )
}

impl MetaLog {
    /// The current generations in the log at `path` (defaults if absent).
    pub(super) fn read(&self, path: &Path) -> Result<Arc<MetaFile>> {
        let stamp = match fs::metadata(path) {
            Ok(meta) => Stamp::of(&meta),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(Arc::new(MetaFile::default()));
            }
            Err(err) => return Err(io_error("read", path, err)),
        };
        if let Some((cached, meta)) = lock(&self.cache).get(path)
            && *cached == stamp
        {
            return Ok(meta.clone());
        }
        let (parsed, stamp) = read_log(path)?;
        let meta = Arc::new(match parsed.last {
            Some(meta) => meta,
            None if stamp.is_none() => MetaFile::default(),
            None => return Err(damaged(path)),
        });
        if let (true, Some(stamp)) = (parsed.clean, stamp) {
            lock(&self.cache).insert(path.to_path_buf(), (stamp, meta.clone()));
        }
        Ok(meta)
    }

    /// Applies `change` to the current generations and appends the result.
    /// The caller holds the region's exclusive meta lock.
    pub(super) fn update(&self, path: &Path, change: impl FnOnce(&mut MetaFile)) -> Result<()> {
        let (parsed, stamp) = read_log(path)?;
        let mut meta = match parsed.last {
            Some(meta) => meta,
            None if stamp.is_none() => MetaFile::default(),
            // Damaged beyond use: restart from generations no old entry carries.
            None => {
                let floor = crate::Clock::system().now_ms();
                MetaFile {
                    region: floor,
                    soft_before_ms: floor,
                    namespaces: Vec::new(),
                }
            }
        };
        change(&mut meta);
        let record = meta.encode();
        let size = stamp.map_or(0, |s| s.size);
        if parsed.clean && size > 0 && size + record.len() as u64 <= COMPACT_AT {
            let append = || -> io::Result<()> {
                let mut file = OpenOptions::new().append(true).open(path)?;
                file.write_all(&record)
            };
            append().map_err(|err| io_error("append to", path, err))
        } else {
            FileBackend::write_atomic(path, &record)
        }
    }
}

/// Reads a whole log; the stamp is `None` when the file does not exist,
/// and describes exactly the bytes read otherwise.
fn read_log(path: &Path) -> Result<(Parsed, Option<Stamp>)> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Ok((
                Parsed {
                    last: None,
                    clean: true,
                },
                None,
            ));
        }
        Err(err) => return Err(io_error("read", path, err)),
    };
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes).map_err(|err| io_error("read", path, err))?;
    let stamp = file
        .metadata()
        .map(|m| Stamp::of(&m))
        .map_err(|err| io_error("read", path, err))?;
    let mut parsed = parse(&bytes);
    // Appended to while we read: correct, but not a version to cache.
    parsed.clean &= stamp.size == bytes.len() as u64;
    Ok((parsed, Some(stamp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(region: u64) -> MetaFile {
        MetaFile {
            region,
            soft_before_ms: 99,
            namespaces: vec![("r:a!gen".into(), 2), ("r:b!gen".into(), 5)],
        }
    }

    #[test]
    fn the_last_good_record_wins_and_a_torn_tail_is_not_clean() {
        let mut log = meta(1).encode();
        log.extend(meta(2).encode());
        let parsed = parse(&log);
        assert_eq!(parsed.last, Some(meta(2)));
        assert!(parsed.clean);
        let third = meta(3).encode();
        log.extend(&third[..third.len() - 3]);
        let parsed = parse(&log);
        assert_eq!(parsed.last, Some(meta(2)));
        assert!(!parsed.clean);
    }

    #[test]
    fn every_truncation_of_one_record_is_rejected() {
        let record = meta(1).encode();
        for len in 1..record.len() {
            assert_eq!(parse(&record[..len]).last, None);
        }
    }

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn updates_append_then_compact_and_reads_see_each_version() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r.meta");
        let log = MetaLog::default();
        assert_eq!(log.read(&path)?.region, 0);
        for i in 1..=3_000u64 {
            log.update(&path, |m| m.region += 1)?;
            assert_eq!(log.read(&path)?.region, i, "version {i}");
        }
        assert!(fs::metadata(&path)?.len() <= COMPACT_AT);
        Ok(())
    }

    #[test]
    fn a_damaged_log_is_an_error_until_rewritten() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r.meta");
        fs::write(&path, b"garbage!")?;
        let log = MetaLog::default();
        assert!(log.read(&path).unwrap_err().is_backend());
        log.update(&path, |m| m.region += 1)?;
        assert!(
            log.read(&path)?.region > 1,
            "restarted above any old generation"
        );
        Ok(())
    }
}
