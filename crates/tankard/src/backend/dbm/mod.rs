//! The LMDB store (`type = dbm`): one LMDB environment per region under
//! `data_dir`, opened with heed, read and written by every process of the
//! host that uses the region.
//!
//! # Layout
//!
//! ```text
//! <data_dir>/region-<hash>.lmdb/data.mdb   the region's environment
//! <data_dir>/region-<hash>.lmdb/lock.mdb   LMDB's reader table and writer mutex
//! <lock_dir>/stripe-000.lock …             creation locks (flock), fixed count
//! ```
//!
//! `<hash>` is 32 hex digits of the BLAKE3 hash of the region's prefix and
//! name, so regions sharing a `data_dir` keep apart. The environment has
//! two databases: `entries` (a key's row is its storage key, DESIGN §6, or
//! `0xff` and the key's 32-byte BLAKE3 hash when the key is longer than
//! LMDB's 511 bytes; the value is the encoded entry of `entry`) and
//! `generations` (one 8-byte little-endian row per region generation,
//! soft-invalidation time and namespace generation, keyed by their
//! names). A lookup is one read transaction: the three generation rows
//! and the entry.
//!
//! # Map size
//!
//! `max_bytes` is the LMDB map size (default 1 GiB, at least 256 KiB):
//! the most the data file holds. When a write finds the map full, the
//! store deletes every entry that can no longer be served (past its stale
//! window and `fail_safe`, as `purge_expired` does, by the clock of the
//! entry being written, or the wall clock for a clear or an invalidation)
//! and tries once more; if the map is still full the
//! write fails with an error that says so and names `max_bytes`. A cache
//! that fails to store steps aside: the value is still returned. Give
//! every process the same `max_bytes`: within a process the first region
//! to open an environment sets its map, and a process whose map is
//! smaller than another's gets an error saying so once the data outgrows
//! it.
//!
//! # Several processes
//!
//! LMDB serialises writers with a robust mutex in `lock.mdb` and lets
//! readers run beside them, across processes: the environment is opened
//! with the default locking (never `MDB_NOLOCK`) and `MDB_NOTLS`, so a read
//! transaction's reader slot belongs to the transaction, not to a thread
//! of the async runtime. A process killed mid-read leaves a reader slot
//! behind; the store clears such slots when it opens the environment,
//! when the reader table is full and before it purges, so a dead reader
//! never pins old pages for good. Within a process the environment is
//! opened once and shared by every region and manager that names it
//! (LMDB forbids opening one environment twice in a process).
//!
//! Every read and write is a transaction of a few microseconds: reads run
//! on the calling thread (LMDB readers never wait for a lock); writes,
//! which wait for the environment's writer mutex and `fsync`, run on the
//! blocking pool. Entries larger than `max_entry_bytes` are misses and are
//! never copied out of the map. Do not put `data_dir` on a network
//! filesystem (LMDB's locks need one host), and do not delete or truncate
//! an environment while processes have it open: each would keep the map
//! it has (a truncated one can end a reader with `SIGBUS`), apart from
//! the processes that start afresh. Stop them first.
//!
//! Creation locks are the file store's `flock` stripes in `lock_dir`.
mod options;

#[cfg(feature = "dbm")]
mod store;

/// The LMDB store in the registry ([`super::STORES`]).
pub(crate) const STORE: super::Store = super::Store {
    kind: crate::options::BackendKind::Dbm,
    feature: Some("dbm"),
    reach: super::Reach::Host,
    check: |options| options::DbmOptions::read(options).map(drop),
    #[cfg(feature = "dbm")]
    open: Some(super::Opener::Shared(store::open)),
    #[cfg(not(feature = "dbm"))]
    open: None,
};
