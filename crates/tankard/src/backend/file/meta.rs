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
//! readers use the last good record, and the next writer rewrites the file
//! whole instead of appending after it.
//!
//! # A log with no good record
//!
//! Garbage written over the whole file (or a file too large to be ours)
//! must not switch the region's caching off, nor bring back entries a
//! `clear` hid. Such a log reads as a counter restarted past the wall
//! clock in microseconds, as a server's evicted counter restarts
//! (`backend::generation_start`), with the time
//! taken from the file's change time so every process reading the same
//! damaged file agrees on it: region generation = that time in µs, no
//! namespace generations, no soft invalidation. Every generation written
//! before was smaller (counters start at 0 or at an earlier such time and
//! move by one per update, each far longer than a microsecond), so no old
//! entry matches, while entries written meanwhile are served as usual.
//! The next update (a `clear` or invalidation) starts from the same
//! values and writes a good record: the log is repaired.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{FileBackend, io_error};
use crate::entry::Generations;
use crate::error::Result;
use crate::sync::lock;

const MAGIC: &[u8; 4] = b"TKMF";
/// A log longer than this is compacted to one record on the next write.
const COMPACT_AT: u64 = 64 * 1024;
/// A log larger than this was not written by Tankard (a record is a few
/// dozen bytes a namespace, and logs are compacted at `COMPACT_AT`): it
/// is taken for damaged without being read whole.
const MAX_LOG_BYTES: u64 = 16 * 1024 * 1024;

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

    /// What a log with no good record reads as (see the module docs).
    fn restarted(stamp: Stamp) -> MetaFile {
        MetaFile {
            region: u64::try_from(stamp.ctime_ns / 1_000).unwrap_or(0),
            soft_before_ms: 0,
            namespaces: Vec::new(),
        }
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
        let LogRead {
            parsed,
            stamp,
            whole,
        } = read_log(path)?;
        let Some(stamp) = stamp else {
            return Ok(Arc::new(MetaFile::default())); // removed meanwhile
        };
        let meta = Arc::new(match parsed.last {
            Some(meta) => meta,
            None => {
                tracing::warn!(
                    "generation file {} is damaged: read as restarted generations (entries \
                     written before it are not served); the next clear or invalidation rewrites it",
                    path.display()
                );
                MetaFile::restarted(stamp)
            }
        });
        // A version that is not whole (appended to while read) is not
        // cached; a damaged one is, so it costs a `stat` a lookup, and one
        // warning per version, until it is repaired.
        if whole {
            lock(&self.cache).insert(path.to_path_buf(), (stamp, meta.clone()));
        }
        Ok(meta)
    }

    /// Applies `change` to the current generations and appends the result.
    /// The caller holds the region's exclusive meta lock.
    pub(super) fn update(&self, path: &Path, change: impl FnOnce(&mut MetaFile)) -> Result<()> {
        let LogRead {
            parsed,
            stamp,
            whole,
        } = read_log(path)?;
        let mut meta = match (parsed.last, stamp) {
            (Some(meta), _) => meta,
            (None, None) => MetaFile::default(),
            // Damaged: go on from what readers of it saw.
            (None, Some(stamp)) => MetaFile::restarted(stamp),
        };
        change(&mut meta);
        let record = meta.encode();
        let size = stamp.map_or(0, |s| s.size);
        if parsed.clean && whole && size > 0 && size + record.len() as u64 <= COMPACT_AT {
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

/// One read of a log.
struct LogRead {
    parsed: Parsed,
    /// `None` when the file does not exist.
    stamp: Option<Stamp>,
    /// The result belongs to exactly the version `stamp` names (nobody
    /// appended while we read), so it may be cached under that stamp.
    whole: bool,
}

/// Reads a whole log, or takes one larger than [`MAX_LOG_BYTES`] for
/// damaged without reading it.
fn read_log(path: &Path) -> Result<LogRead> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Ok(LogRead {
                parsed: Parsed {
                    last: None,
                    clean: true,
                },
                stamp: None,
                whole: true,
            });
        }
        Err(err) => return Err(io_error("read", path, err)),
    };
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(&file, MAX_LOG_BYTES + 1), &mut bytes)
        .map_err(|err| io_error("read", path, err))?;
    let stamp = file
        .metadata()
        .map(|m| Stamp::of(&m))
        .map_err(|err| io_error("read", path, err))?;
    let (parsed, whole) = if bytes.len() as u64 > MAX_LOG_BYTES {
        let damaged = Parsed {
            last: None,
            clean: false,
        };
        (damaged, stamp.size > MAX_LOG_BYTES)
    } else {
        // Appended to while we read: correct, but not a version to cache.
        (parse(&bytes), stamp.size == bytes.len() as u64)
    };
    Ok(LogRead {
        parsed,
        stamp: Some(stamp),
        whole,
    })
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

    fn wall_clock_us() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }

    #[test]
    fn a_damaged_log_reads_as_restarted_past_the_clock_until_rewritten() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r.meta");
        let log = MetaLog::default();
        log.update(&path, |m| m.namespaces.push(("r:a!gen".into(), 3)))?;
        let before_us = wall_clock_us();
        fs::write(&path, b"garbage!")?;
        let damaged = log.read(&path)?;
        // The file's change time is the kernel's coarse clock: a tick slack.
        assert!(
            damaged.region + 1_000_000 > before_us,
            "{} restarts past the clock ({before_us} us)",
            damaged.region
        );
        assert_eq!(damaged.generations("r:a!gen").namespace, 0);
        assert_eq!(damaged.soft_before_ms, 0);
        assert_eq!(log.read(&path)?.region, damaged.region, "reads agree");
        assert_eq!(
            MetaLog::default().read(&path)?.region,
            damaged.region,
            "so does another process"
        );
        log.update(&path, |m| m.region += 1)?;
        assert_eq!(
            log.read(&path)?.region,
            damaged.region + 1,
            "the update goes on from what readers saw"
        );
        let repaired = parse(&fs::read(&path)?);
        assert!(repaired.clean && repaired.last.is_some(), "and repairs it");
        Ok(())
    }

    #[test]
    fn a_log_too_large_to_be_ours_is_damaged_unread() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r.meta");
        let log = MetaLog::default();
        log.update(&path, |m| m.region = 5)?;
        fs::OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(MAX_LOG_BYTES * 4)?;
        let read = log.read(&path)?;
        assert!(read.region > 5, "restarted: {}", read.region);
        log.update(&path, |m| m.region += 1)?;
        assert!(fs::metadata(&path)?.len() < 1024, "rewritten small");
        Ok(())
    }
}
