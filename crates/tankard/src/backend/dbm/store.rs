//! The implementation of the LMDB store, built with its cargo feature.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use heed::types::Bytes;
use heed::{
    CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, MdbError, RoTxn, RwTxn, WithoutTls,
};

use super::options::DbmOptions;
use crate::backend::flock::FileLock;
use crate::backend::lock::CreationLock;
use crate::backend::{Backend, Loaded, Location, Purged, RegionScope, Scope, Usage};
use crate::entry::{self, Generations};
use crate::error::{Error, Result};
use crate::options::{RegionOptions, option_key};
use crate::sync::lock;

/// The backend's name in errors and `tankard stats`.
const NAME: &str = "dbm";
/// LMDB's longest key (`MDB_MAXKEYSIZE` as lmdb-master-sys builds it);
/// longer keys are stored by their hash.
const MAX_KEY: usize = 511;
/// Marks a hashed row key: never the first byte of UTF-8 text, so a
/// hashed key never equals a storage key stored as it is.
const HASHED: u8 = 0xff;
/// Concurrent read transactions of every process on the environment
/// (a reader slot is held only while a transaction is open).
const MAX_READERS: u32 = 512;
/// Rows a purge deletes per write transaction, so a purge of a large
/// store never holds the writer mutex long.
const PURGE_BATCH: usize = 256;
/// The generations row a purge writes last (see [`Shared::purge`]): the
/// number of entries purged so far. `0xff` then text: no generation key
/// (text) nor hashed key (33 bytes) is equal to it.
const PURGED_ROW: &[u8] = b"\xffpurged";

type Rows = Database<'static, Bytes, Bytes>;

/// What a write did: `Err(None)` when the map is full (see [`Room`]).
type Written = std::result::Result<(), Option<Error>>;

/// What a write that finds the map full needs to make room: which rows
/// are dead, and what to say when none are.
#[derive(Clone, Debug)]
struct Room {
    max_entry_bytes: u64,
    fail_safe_ms: u64,
    max_bytes_key: Arc<str>,
    map_bytes: u64,
}

impl Room {
    /// Runs `write`; when the map is full, deletes the entries that are
    /// dead at `now_ms` (and `fail_safe` past it) and runs it once more;
    /// still full, an error that says so and names `max_bytes`.
    fn write(
        &self,
        shared: &Shared,
        now_ms: u64,
        write: impl Fn(&Shared) -> Written,
    ) -> Result<()> {
        match write(shared) {
            Ok(()) => return Ok(()),
            Err(Some(err)) => return Err(err),
            Err(None) => {}
        }
        let before_ms = now_ms.saturating_sub(self.fail_safe_ms);
        let purged = shared
            .purge(|row| DbmBackend::dead(self.max_entry_bytes, before_ms, row))
            .unwrap_or(0);
        write(shared).map_err(|err| {
            err.unwrap_or_else(|| {
                Error::backend(
                    NAME,
                    format!(
                        "the LMDB map of {} is full ({key} = {}), even after removing {purged} \
                         expired entries: raise {key}",
                        shared.path.display(),
                        self.map_bytes,
                        key = self.max_bytes_key,
                    ),
                )
            })
        })
    }
}

/// One open environment, shared by every region and manager of the
/// process that names it.
struct Shared {
    env: Env<WithoutTls>,
    entries: Rows,
    generations: Rows,
    path: PathBuf,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The environments this process has open, by canonical path. LMDB
/// forbids opening one environment twice in a process (its locks are per
/// process), so every region naming it shares one; it closes with the
/// last of them.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = LazyLock::new(Mutex::default);

/// Entries and generations in a region's LMDB environment.
#[derive(Debug)]
pub(crate) struct DbmBackend {
    /// The environment's directory (opened on first use).
    dir: PathBuf,
    shared: OnceLock<Arc<Shared>>,
    lock: Arc<FileLock>,
    /// Entries larger than this are misses (`max_entry_bytes`).
    max_entry_bytes: u64,
    /// How a write makes room in a full map.
    room: Room,
    /// Each namespace's generations as last read, with the snapshot (the
    /// read transaction's id) they were read in: while no commit has
    /// happened since, a lookup need not read them again.
    seen: Mutex<HashMap<Box<str>, (usize, Generations)>>,
}

/// Namespaces [`DbmBackend::seen`] remembers before it starts afresh.
const SEEN_NAMESPACES: usize = 1024;

/// Opens the LMDB store of a region. The environment itself is opened on
/// first use, so a `data_dir` that cannot be written makes the region
/// step aside (`on_backend_error`) rather than fail to build.
pub(crate) fn open(options: &RegionOptions) -> Result<Arc<dyn Backend>> {
    let own = DbmOptions::read(options).map_err(|problem| problem.for_region(options))?;
    let name = hex(blake3::hash(
        crate::key::region_generation_key(&options.prefix, &options.name).as_bytes(),
    ));
    Ok(Arc::new(DbmBackend {
        dir: own.data_dir.join(format!("region-{}.lmdb", &name[..32])),
        shared: OnceLock::new(),
        lock: Arc::new(FileLock::of_store(own.lock_dir, NAME)),
        max_entry_bytes: options.max_entry_bytes,
        room: Room {
            max_entry_bytes: options.max_entry_bytes,
            fail_safe_ms: u64::try_from(options.fail_safe.as_millis()).unwrap_or(u64::MAX),
            max_bytes_key: option_key(options, "max_bytes").into(),
            map_bytes: own.map_bytes,
        },
        seen: Mutex::default(),
    }))
}

fn hex(hash: blake3::Hash) -> String {
    hash.to_hex().to_string()
}

/// A row's key: the text itself, or [`HASHED`] and its hash when it is
/// longer than LMDB allows.
fn row_key(key: &str) -> Cow<'_, [u8]> {
    if key.len() <= MAX_KEY {
        Cow::Borrowed(key.as_bytes())
    } else {
        let mut row = Vec::with_capacity(33);
        row.push(HASHED);
        row.extend_from_slice(blake3::hash(key.as_bytes()).as_bytes());
        Cow::Owned(row)
    }
}

fn lmdb_error(what: &str, path: &Path, err: heed::Error) -> Error {
    Error::backend_source(
        NAME,
        format!(
            "cannot {what} the LMDB environment {}: {err}; check cache.data_dir",
            path.display()
        ),
        err,
    )
}

fn is_map_full(err: &heed::Error) -> bool {
    matches!(err, heed::Error::Mdb(MdbError::MapFull))
}

/// A generation row's value: `None` when damaged (not 8 bytes).
fn counter(row: Option<&[u8]>) -> Option<u64> {
    match row {
        None => Some(0),
        Some(bytes) => bytes.try_into().ok().map(u64::from_le_bytes),
    }
}

/// The wall clock in milliseconds.
fn wall_ms() -> u64 {
    restart() / 1_000
}

/// Where a damaged counter starts again: past every value it held, as a
/// server's evicted counter does (see `backend::generation_start`).
fn restart() -> u64 {
    crate::backend::generation_start()
}

impl Shared {
    /// Opens (or joins this process's opening of) the environment in `dir`.
    fn open(dir: &Path, map_bytes: u64) -> Result<Arc<Shared>> {
        std::fs::create_dir_all(dir).map_err(|err| {
            Error::backend_source(
                NAME,
                format!(
                    "cannot create the LMDB environment {}: {err}; check cache.data_dir",
                    dir.display()
                ),
                err,
            )
        })?;
        let path = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        let mut open = lock(&OPEN);
        if let Some(shared) = open.get(&path).and_then(Weak::upgrade) {
            return Ok(shared);
        }
        open.retain(|_, shared| shared.strong_count() > 0);
        let env = open_env(&path, map_bytes)?;
        // A process killed mid-read leaves its reader slot; clear those
        // of dead processes before anything reads.
        let _ = env.clear_stale_readers();
        let (entries, generations) =
            databases(&env).map_err(|err| lmdb_error("open", &path, err))?;
        let shared = Arc::new(Shared {
            env,
            entries,
            generations,
            path: path.clone(),
        });
        open.insert(path, Arc::downgrade(&shared));
        Ok(shared)
    }

    /// A read transaction; a full reader table is cleared of dead
    /// processes' slots and tried once more.
    fn read(&self) -> Result<RoTxn<'_, WithoutTls>> {
        match self.env.read_txn() {
            Err(heed::Error::Mdb(MdbError::ReadersFull)) => {
                let _ = self.env.clear_stale_readers();
                self.env.read_txn()
            }
            other => other,
        }
        .map_err(|err| self.error("read", err))
    }

    fn write(&self) -> Result<RwTxn<'_>> {
        self.env.write_txn().map_err(|err| self.error("write", err))
    }

    fn error(&self, what: &str, err: heed::Error) -> Error {
        if let heed::Error::Mdb(MdbError::MapResized) = err {
            return Error::backend_source(
                NAME,
                format!(
                    "the LMDB environment {} was grown by another process with a larger \
                     max_bytes; give every process of the region the same max_bytes",
                    self.path.display()
                ),
                err,
            );
        }
        lmdb_error(what, &self.path, err)
    }

    /// The generations of `scope` in `txn`; `None` if a row is damaged.
    fn generations(&self, txn: &RoTxn<'_>, scope: &Scope) -> Result<Option<Generations>> {
        let get = |key: &str| -> Result<Option<u64>> {
            let row = self
                .generations
                .get(txn, &row_key(key))
                .map_err(|err| self.error("read", err))?;
            Ok(counter(row))
        };
        let (Some(region), Some(soft_before_ms), Some(namespace)) = (
            get(&scope.region.generation_key)?,
            get(&scope.region.soft_key)?,
            get(&scope.generation_key)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Generations {
            region,
            soft_before_ms,
            namespace,
        }))
    }

    /// Rewrites the damaged generation rows of `scope` (written by
    /// anything but Tankard): counters restart past the clock, so entries
    /// stamped before cannot come back; a damaged soft-invalidation time
    /// becomes now, so every entry made before it is stale at worst.
    fn repair(&self, scope: &Scope) -> Result<()> {
        let mut txn = self.write()?;
        let now_ms = wall_ms();
        for (key, start) in [
            (&scope.region.generation_key, restart()),
            (&scope.region.soft_key, now_ms),
            (&scope.generation_key, restart()),
        ] {
            let key = row_key(key);
            let row = self
                .generations
                .get(&txn, &key)
                .map_err(|err| self.error("read", err))?;
            if counter(row).is_none() {
                tracing::warn!(
                    "generation row {:?} of {} is damaged: restarted",
                    String::from_utf8_lossy(&key),
                    self.path.display()
                );
                self.generations
                    .put(&mut txn, &key, &start.to_le_bytes())
                    .map_err(|err| self.error("write", err))?;
            }
        }
        txn.commit().map_err(|err| self.error("write", err))
    }

    /// Applies `change` to one generation row (0 when missing, restarted
    /// when damaged), in one write transaction: LMDB serialises writers of
    /// every process, so concurrent clears all count.
    /// `Err(None)`: the map is full.
    fn update(&self, key: &str, change: impl Fn(u64) -> u64) -> Written {
        let key = row_key(key);
        let mut txn = self.write().map_err(Some)?;
        let row = self
            .generations
            .get(&txn, &key)
            .map_err(|err| Some(self.error("read", err)))?;
        let value = change(counter(row).unwrap_or_else(restart));
        self.generations
            .put(&mut txn, &key, &value.to_le_bytes())
            .map_err(|err| self.written(err))?;
        txn.commit().map_err(|err| self.written(err))
    }

    /// Writes one entry row. `Err(None)`: the map is full.
    fn put(&self, key: &[u8], entry: &[u8]) -> Written {
        let mut txn = self.write().map_err(Some)?;
        self.entries
            .put(&mut txn, key, entry)
            .map_err(|err| self.written(err))?;
        txn.commit().map_err(|err| self.written(err))
    }

    /// A failed write as [`Written`] says it.
    fn written(&self, err: heed::Error) -> Option<Error> {
        (!is_map_full(&err)).then(|| self.error("write", err))
    }

    /// Deletes the entry rows that can no longer be served (and damaged
    /// or oversized ones, which can only ever be misses).
    fn purge(&self, dead: impl Fn(&[u8]) -> bool) -> Result<u64> {
        // Dead processes' reader slots pin the pages a purge frees.
        let _ = self.env.clear_stale_readers();
        let mut keys = Vec::new();
        {
            let txn = self.read()?;
            let rows = self
                .entries
                .iter(&txn)
                .map_err(|err| self.error("read", err))?;
            for row in rows {
                let (key, value) = row.map_err(|err| self.error("read", err))?;
                if dead(value) {
                    keys.push(key.to_vec());
                }
            }
        }
        let mut purged = 0;
        for batch in keys.chunks(PURGE_BATCH) {
            let mut txn = self.write()?;
            for key in batch {
                // Written again since the scan: look again.
                let still_dead = self
                    .entries
                    .get(&txn, key)
                    .map_err(|err| self.error("read", err))?
                    .is_some_and(&dead);
                if still_dead
                    && self
                        .entries
                        .delete(&mut txn, key)
                        .map_err(|err| self.error("purge", err))?
                {
                    purged += 1;
                }
            }
            txn.commit().map_err(|err| self.error("purge", err))?;
        }
        if purged > 0 {
            // LMDB keeps the snapshot before the last commit whole (it is
            // the fallback meta page), so the pages a transaction frees are
            // reused from the transaction after the next one on. One more
            // small commit makes the last batch's pages free for the write
            // that comes next: the one a full map is waiting for.
            let mut txn = self.write()?;
            let total = counter(
                self.generations
                    .get(&txn, PURGED_ROW)
                    .map_err(|err| self.error("read", err))?,
            )
            .unwrap_or(0)
            .wrapping_add(purged);
            self.generations
                .put(&mut txn, PURGED_ROW, &total.to_le_bytes())
                .map_err(|err| self.error("purge", err))?;
            txn.commit().map_err(|err| self.error("purge", err))?;
        }
        Ok(purged)
    }
}

/// The environment's two databases: opened in a read transaction when
/// they exist (a read waits for nobody), created in a write transaction
/// (which waits for any other process's writer) the first time.
fn databases(env: &Env<WithoutTls>) -> heed::Result<(Rows, Rows)> {
    let rtxn = env.read_txn()?;
    let opened = env.open_databases_and_commit(rtxn, |opener, rtxn| -> heed::Result<_> {
        let entries = opener.open_database::<Bytes, Bytes>(rtxn, Some("entries"))?;
        let generations = opener.open_database::<Bytes, Bytes>(rtxn, Some("generations"))?;
        Ok(CommitOrAbort::<_, Infallible>::Commit(
            entries.zip(generations),
        ))
    })?;
    if let CommitOrAbort::Commit(Some(dbs)) = opened {
        return Ok(dbs);
    }
    let wtxn = env.write_txn()?;
    match env.create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
        let entries = opener.create_database::<Bytes, Bytes>(wtxn, Some("entries"))?;
        let generations = opener.create_database::<Bytes, Bytes>(wtxn, Some("generations"))?;
        Ok(CommitOrAbort::<_, Infallible>::Commit((
            entries,
            generations,
        )))
    })? {
        CommitOrAbort::Commit(dbs) => Ok(dbs),
        CommitOrAbort::Abort(never) => match never {},
    }
}

/// Opens the LMDB environment at `path`: default locking (several
/// processes), `MDB_NOTLS` (reader slots follow transactions, not
/// threads), `MDB_NOMETASYNC` (one `fsync` a commit), two named databases.
#[allow(unsafe_code)]
fn open_env(path: &Path, map_bytes: u64) -> Result<Env<WithoutTls>> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options
        .map_size(usize::try_from(map_bytes).unwrap_or(usize::MAX))
        .max_dbs(2)
        .max_readers(MAX_READERS);
    // SAFETY: heed marks every flag unsafe because some (`NO_SYNC`,
    // `NO_LOCK`) can break the database. `NO_META_SYNC` is not one of
    // them: LMDB documents that it keeps the database whole and at worst
    // loses the last commit in a system crash. A cache can lose an entry;
    // what it saves is one of the two `fsync`s of every commit.
    unsafe {
        options.flags(EnvFlags::NO_META_SYNC);
    }
    // The last region of this process that used the environment may be
    // closing it on another thread: heed refuses to open it again until
    // that is done, which takes microseconds.
    let mut tries = 0;
    loop {
        // SAFETY: heed marks opening unsafe because the map is memory the
        // file backs: it must not be changed behind LMDB's back. It is
        // changed only by LMDB, in this process and others, under LMDB's
        // own locks (no `MDB_NOLOCK`); `OPEN` (and heed's own table)
        // makes sure this process opens it once. What no code can
        // prevent, a user truncating `data.mdb` while it is mapped, is
        // documented with the store's layout.
        let opened = unsafe { options.open(path) };
        match opened {
            Err(heed::Error::EnvAlreadyOpened) if tries < 1000 => {
                tries += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
            other => return other.map_err(|err| lmdb_error("open", path, err)),
        }
    }
}

impl DbmBackend {
    fn shared(&self) -> Result<&Arc<Shared>> {
        if let Some(shared) = self.shared.get() {
            return Ok(shared);
        }
        let opened = Shared::open(&self.dir, self.room.map_bytes)?;
        Ok(self.shared.get_or_init(|| opened))
    }

    /// Runs a write on the blocking pool: it may wait for another
    /// process's writer and for `fsync`.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared()?.clone();
        tokio::task::spawn_blocking(move || work(&shared))
            .await
            .map_err(|join| Error::backend(NAME, format!("LMDB write failed: {join}")))?
    }

    /// Changes one generation row. A full map is made room in by the wall
    /// clock (a bump carries no time of the region's): a clear must not
    /// fail because the map is full.
    async fn bump(&self, key: String, change: impl Fn(u64) -> u64 + Send + 'static) -> Result<()> {
        let room = self.room.clone();
        self.blocking(move |shared| {
            room.write(shared, wall_ms(), |shared| shared.update(&key, &change))
        })
        .await
    }

    /// Whether a stored row is dead: stale before `before_ms` (the time
    /// `Region::purge_expired` gives, `fail_safe` already taken off), or
    /// damaged or oversized, which can only ever be misses.
    fn dead(max_entry_bytes: u64, before_ms: u64, row: &[u8]) -> bool {
        row.len() as u64 > max_entry_bytes
            || entry::peek_meta(row).is_none_or(|meta| meta.stale_until_ms <= before_ms)
    }

    /// The current generations of `scope`, repairing damaged rows first.
    fn read_generations(shared: &Shared, scope: &Scope) -> Result<Generations> {
        if let Some(generations) = shared.generations(&*shared.read()?, scope)? {
            return Ok(generations);
        }
        shared.repair(scope)?;
        shared
            .generations(&*shared.read()?, scope)?
            .ok_or_else(|| Error::backend(NAME, "generation rows damaged again while repaired"))
    }

    /// Entries read in `txn`, each bounded by `max_entry_bytes` (a larger
    /// one is never copied out of the map).
    fn read_entries(
        &self,
        shared: &Shared,
        txn: &RoTxn<'_>,
        at: &[Location<'_>],
        generations: Generations,
    ) -> Result<Vec<Loaded>> {
        at.iter()
            .map(|at| {
                let row = shared
                    .entries
                    .get(txn, &row_key(&at.storage_key))
                    .map_err(|err| shared.error("read", err))?;
                Ok(match row {
                    Some(row) if row.len() as u64 > self.max_entry_bytes => Loaded {
                        generations,
                        bytes: None,
                        oversized: Some(row.len() as u64),
                    },
                    row => Loaded {
                        generations,
                        bytes: row.map(<[u8]>::to_vec),
                        oversized: None,
                    },
                })
            })
            .collect()
    }
}

#[async_trait]
impl Backend for DbmBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn load(&self, at: &Location<'_>) -> Result<Loaded> {
        Ok(self
            .load_many(std::slice::from_ref(at))
            .await?
            .pop()
            .unwrap_or_default())
    }

    async fn load_many(&self, at: &[Location<'_>]) -> Result<Vec<Loaded>> {
        let shared = self.shared()?;
        let Some(first) = at.first() else {
            return Ok(Vec::new());
        };
        // One read transaction: the generations and every entry are of
        // one snapshot. A read never waits for a lock, so it runs here.
        let txn = shared.read()?;
        let snapshot = txn.id();
        let namespace = first.scope.generation_key.as_str();
        let seen = lock(&self.seen)
            .get(namespace)
            .filter(|(at, _)| *at == snapshot)
            .map(|(_, generations)| *generations);
        let generations = match seen {
            Some(generations) => generations,
            None => match shared.generations(&txn, first.scope)? {
                Some(generations) => {
                    let mut seen = lock(&self.seen);
                    if seen.len() >= SEEN_NAMESPACES {
                        seen.clear();
                    }
                    seen.insert(namespace.into(), (snapshot, generations));
                    generations
                }
                None => {
                    drop(txn);
                    let generations = Self::read_generations(shared, first.scope)?;
                    return self.read_entries(shared, &*shared.read()?, at, generations);
                }
            },
        };
        self.read_entries(shared, &txn, at, generations)
    }

    async fn generations(&self, scope: &Scope) -> Result<Generations> {
        Self::read_generations(self.shared()?, scope)
    }

    async fn store(&self, at: &Location<'_>, entry: Vec<u8>, _ttl: Option<Duration>) -> Result<()> {
        // Expiry is in the entry's header; `purge_expired` reads it.
        let key = row_key(&at.storage_key).into_owned();
        let room = self.room.clone();
        self.blocking(move |shared| {
            // A full map is made room in by the clock of the entry being
            // written: the region's, which stamped it.
            let now_ms = entry::peek_meta(&entry).map_or_else(wall_ms, |meta| meta.created_ms);
            room.write(shared, now_ms, |shared| shared.put(&key, &entry))
        })
        .await
    }

    async fn remove(&self, at: &Location<'_>) -> Result<bool> {
        let key = row_key(&at.storage_key).into_owned();
        self.blocking(move |shared| {
            let mut txn = shared.write()?;
            let removed = shared
                .entries
                .delete(&mut txn, &key)
                .map_err(|err| shared.error("remove", err))?;
            txn.commit().map_err(|err| shared.error("remove", err))?;
            Ok(removed)
        })
        .await
    }

    async fn bump_namespace(&self, scope: &Scope) -> Result<()> {
        self.bump(scope.generation_key.clone(), |g| g.wrapping_add(1))
            .await
    }

    async fn bump_region(&self, region: &RegionScope) -> Result<()> {
        self.bump(region.generation_key.clone(), |g| g.wrapping_add(1))
            .await
    }

    async fn soft_invalidate(&self, region: &RegionScope, at_ms: u64) -> Result<()> {
        self.bump(region.soft_key.clone(), move |soft| soft.max(at_ms))
            .await
    }

    fn creation_lock(&self) -> Arc<dyn CreationLock> {
        self.lock.clone()
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<Purged> {
        let max_entry_bytes = self.max_entry_bytes;
        let entries = self
            .blocking(move |shared| shared.purge(|row| Self::dead(max_entry_bytes, now_ms, row)))
            .await?;
        Ok(Purged {
            entries,
            ..Purged::default()
        })
    }

    async fn usage(&self) -> Result<Usage> {
        let shared = self.shared()?;
        let txn = shared.read()?;
        let stat = shared
            .entries
            .stat(&txn)
            .map_err(|err| shared.error("read", err))?;
        let pages = stat.branch_pages + stat.leaf_pages + stat.overflow_pages;
        Ok(Usage {
            entries: Some(stat.entries as u64),
            bytes: Some(pages as u64 * u64::from(stat.page_size)),
            ..Usage::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RegionScope;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn backend(dir: &Path) -> std::result::Result<Arc<dyn Backend>, Box<dyn std::error::Error>> {
        let data = dir.display().to_string();
        let config = crate::Config::from_flat([("cache.type", "dbm"), ("cache.data_dir", &data)])?;
        Ok(open(config.default_options())?)
    }

    fn scope(dir: &Path) -> std::result::Result<Scope, Box<dyn std::error::Error>> {
        let data = dir.display().to_string();
        let config = crate::Config::from_flat([("cache.type", "dbm"), ("cache.data_dir", &data)])?;
        Ok(Scope::new(
            Arc::new(RegionScope::new(config.default_options())),
            "n",
        ))
    }

    #[test]
    fn long_keys_are_hashed_apart_from_every_text_key() {
        let long = "k".repeat(MAX_KEY + 1);
        let hashed = row_key(&long);
        assert_eq!(hashed.len(), 33);
        assert_eq!(hashed[0], HASHED);
        assert_ne!(row_key(&format!("{long}x")), hashed);
        let short = "k".repeat(MAX_KEY);
        assert_eq!(row_key(&short).as_ref(), short.as_bytes());
        assert_ne!(PURGED_ROW.len(), 33, "the purge row is no hashed key");
    }

    #[tokio::test]
    async fn a_damaged_generation_row_restarts_past_the_clock_and_is_repaired() -> TestResult {
        let dir = tempfile::tempdir()?;
        let backend = backend(dir.path())?;
        let scope = scope(dir.path())?;
        backend.bump_namespace(&scope).await?;
        backend.bump_namespace(&scope).await?;
        assert_eq!(backend.generations(&scope).await?.namespace, 2);

        // Three bytes where eight belong, written by anything but Tankard.
        let shared = Shared::open(&backend_dir(dir.path())?, 1 << 20)?;
        let mut txn = shared.write()?;
        shared
            .generations
            .put(&mut txn, scope.generation_key.as_bytes(), b"bad")?;
        txn.commit()?;

        let before_us = restart();
        let restarted = backend.generations(&scope).await?;
        assert!(restarted.namespace >= before_us, "{restarted:?}");
        let row = shared
            .generations
            .get(&*shared.read()?, scope.generation_key.as_bytes())?
            .map(<[u8]>::to_vec);
        assert_eq!(row.map(|r| r.len()), Some(8), "rewritten whole");
        assert_eq!(backend.generations(&scope).await?, restarted, "and kept");
        backend.bump_namespace(&scope).await?;
        assert_eq!(
            backend.generations(&scope).await?.namespace,
            restarted.namespace + 1
        );
        Ok(())
    }

    /// The environment directory the backend of `dir` uses.
    fn backend_dir(dir: &Path) -> std::result::Result<PathBuf, Box<dyn std::error::Error>> {
        let found = std::fs::read_dir(dir)?
            .flatten()
            .map(|item| item.path())
            .find(|path| path.extension().is_some_and(|e| e == "lmdb"))
            .ok_or("no environment")?;
        Ok(found)
    }
}
