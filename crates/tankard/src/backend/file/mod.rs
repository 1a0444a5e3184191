//! The file backend: one file per key under `data_dir`, in hashed fan-out
//! directories, written to a temporary file and renamed into place.
//!
//! # Layout
//!
//! ```text
//! <data_dir>/ab/cd/abcd…(64 hex).tke     one entry (the format of `entry`)
//! <data_dir>/ab/cd/.tmp-<pid>-<n>        an entry being written
//! <data_dir>/.meta/<hash>.meta           one region's generations
//! <lock_dir>/stripe-000.lock …           creation locks (flock), fixed count
//! <lock_dir>/meta-<hash>.lock            serialises generation updates
//! ```
//!
//! An entry larger than `max_entry_bytes` is never read: its size is
//! checked first, and the read itself is bounded in case it grows.
//!
//! # Temporary files
//!
//! A writer that crashes between creating its temporary file and renaming
//! it leaves the file behind. `purge_expired` (`tankard gc`) removes
//! temporary files whose last write is [`TEMP_FILE_AGE`] (10 minutes) old,
//! and `usage` (`tankard stats`) counts them all. Ten minutes because a
//! live writer holds its temporary file for one `write` of an encoded
//! entry already in memory (at most `max_entry_bytes`) and a `rename`, with
//! no lock or await in between: milliseconds, even on a slow disk, so ten
//! minutes is five orders of magnitude of margin. The age is the file's
//! modification time, which every write moves on, so a writer still
//! writing is never taken for a dead one; and were a writer stalled for
//! longer (a stopped process), losing its file costs only time: its rename
//! finds no file, `write_atomic` writes it once more, nothing is damaged.
//! The region's `timeout` plays no part: it bounds network calls, and no
//! writer of this backend waits on one.
//!
//! Entries carry their own CRC, so a torn or truncated file reads as a miss
//! and the next write replaces it. A region's generations live in one small
//! file next to the entries, so a lookup is two reads: the region's meta
//! file and the entry (DESIGN §6 puts the generation in the key instead;
//! that would cost a read before the read). Nothing is fsynced: a cache may
//! lose entries in a power cut, and the checksum turns any damage into a miss.
mod options;

#[cfg(feature = "file")]
mod meta;
#[cfg(feature = "file")]
mod store;
#[cfg(feature = "file")]
pub(crate) use store::*;

/// The file store in the registry ([`super::STORES`]).
pub(crate) const STORE: super::Store = super::Store {
    kind: crate::options::BackendKind::File,
    feature: Some("file"),
    reach: super::Reach::Host,
    check: |options| options::FileOptions::read(options).map(drop),
    #[cfg(feature = "file")]
    open: Some(super::Opener::Shared(store::open)),
    #[cfg(not(feature = "file"))]
    open: None,
};
