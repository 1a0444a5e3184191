//! Cross-process creation locks with `flock` on striped lock files, for
//! every store that lives on a local filesystem: the file and dbm (LMDB)
//! backends and `lock = file`, each with its own lock directory.
//!
//! A fixed number of lock files (`stripe-000.lock` …) serve every key: a
//! key's lock is the stripe its hash falls on. Lock files therefore never
//! grow with the number of keys (Beaker leaves one file per key behind
//! forever), at the cost of two keys on one stripe occasionally waiting for
//! each other. The kernel releases a crashed holder's `flock`, so no lock
//! outlives its process.
//!
//! # Reentrant within a process (DESIGN §5 rule 7)
//!
//! A `flock` belongs to an open file description, so two opens of one
//! stripe in one process exclude each other like two processes do: a
//! creator that called `get_or_create` on another key of its own stripe
//! used to wait `wait_timeout` on itself. So the process keeps one table of
//! the stripes it holds ([`HELD`], shared by every lock directory and
//! every region, keyed by the stripe file's device and inode so two
//! spellings of one directory are one stripe):
//!
//! - a stripe is `flock`ed once, by the first key that needs it, and
//!   unlocked when the last key this process holds on it is released;
//! - another key on a held stripe joins the hold at once: the process
//!   already excludes every other process from the whole stripe;
//! - the same lock key is held once per process: a second holder (another
//!   manager or region of this process with the same key) waits for the
//!   first, as a holder in another process would, so one creator runs per
//!   key;
//! - while one task of the process waits for a stripe's `flock`, others
//!   needing that stripe wait for it instead of opening a second
//!   description that would then wait on the first.
//!
//! Joining a held stripe keeps it locked for as long as any of its keys is
//! held here, so a busy process can hold a stripe continuously; a waiter in
//! another process then runs its creator itself after `wait_timeout`
//! (rule 6), as it would behind any slow holder.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;

use crate::backend::lock::{CreationLock, HeldLock, LockGuard};
use crate::error::{Error, Result};
use crate::sync::lock;

/// How many lock files a lock directory holds.
pub(crate) const STRIPES: u64 = 64;

/// `flock` creation locks on the striped lock files of one directory.
#[derive(Debug)]
pub(crate) struct FileLock {
    dir: PathBuf,
    /// The store its errors name.
    store: &'static str,
}

/// One stripe file as the kernel knows it: device and inode.
type StripeId = (u64, u64);

/// What this process holds of, or is taking of, one stripe.
#[derive(Default)]
struct Stripe {
    /// The description whose `flock` the process holds; `Some` exactly
    /// while `keys` is not empty.
    file: Option<File>,
    /// The lock keys held under the stripe by this process (few: one, or
    /// a creator's nested calls).
    keys: Vec<Box<str>>,
    /// A task of this process is taking the `flock`.
    taking: bool,
    /// Woken (under the table's lock) whenever `keys` shrinks or `taking`
    /// ends, so waiters look again.
    changed: Arc<Notify>,
}

impl Stripe {
    fn idle(&self) -> bool {
        self.keys.is_empty() && !self.taking
    }
}

/// The stripes this process holds or is taking; an entry lives only while
/// it is held or being taken, so the table never outgrows the locks in use.
static HELD: LazyLock<Mutex<HashMap<StripeId, Stripe>>> = LazyLock::new(Mutex::default);

/// A lock key held under a stripe.
struct Held {
    stripe: StripeId,
    key: Box<str>,
}

impl HeldLock for Held {
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        drop(self); // `Drop` releases, at once and without a runtime
        Box::pin(async {})
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut table = lock(&HELD);
        let Some(stripe) = table.get_mut(&self.stripe) else {
            return;
        };
        if let Some(at) = stripe.keys.iter().position(|k| *k == self.key) {
            stripe.keys.swap_remove(at);
        }
        if stripe.keys.is_empty() {
            // Closing the last description of the hold releases the flock.
            stripe.file = None;
        }
        stripe.changed.notify_waiters();
        if stripe.idle() {
            table.remove(&self.stripe);
        }
    }
}

/// Set while a task takes a stripe's flock; dropped unused (the take
/// failed, timed out or was cancelled) it lets the next task try.
struct Taking {
    stripe: StripeId,
}

impl Taking {
    /// The flock is ours: the stripe is held, with `key` as its first key.
    fn hold(self, file: File, key: &str) -> Held {
        let held = Held {
            stripe: self.stripe,
            key: key.into(),
        };
        {
            let mut table = lock(&HELD);
            let stripe = table.entry(self.stripe).or_default();
            stripe.file = Some(file);
            stripe.keys.push(key.into());
            stripe.taking = false;
            stripe.changed.notify_waiters();
        }
        std::mem::forget(self); // its Drop would undo `taking` again
        held
    }
}

impl Drop for Taking {
    fn drop(&mut self) {
        let mut table = lock(&HELD);
        if let Some(stripe) = table.get_mut(&self.stripe) {
            stripe.taking = false;
            stripe.changed.notify_waiters();
            if stripe.idle() {
                table.remove(&self.stripe);
            }
        }
    }
}

/// Tells a blocking `flock` that nobody waits for it any more, when the
/// wait times out or the waiting future is dropped.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// How long a caller waits for a held lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// Not at all (`try_acquire`).
    No,
    Until(Instant),
    /// A wait longer than an instant can express.
    Forever,
}

impl Wait {
    /// `future`'s output, or `None` if the wait ran out first.
    async fn until<F: Future>(self, future: F) -> Option<F::Output> {
        match self {
            Wait::No => None,
            Wait::Until(at) => tokio::time::timeout_at(at, future).await.ok(),
            Wait::Forever => Some(future.await),
        }
    }
}

/// What the table says a caller should do next.
enum Step {
    /// The stripe is held here: the key joined the hold.
    Joined(Held),
    /// Nobody here holds or takes the stripe: take its flock.
    Take(Taking),
    /// The key is held here, or another task is taking the stripe: look
    /// again when this completes (`None` for a caller that does not wait).
    Wait(Option<Pin<Box<OwnedNotified>>>),
}

/// One look at the table for `lock_key` on `id`, under the table's lock.
fn look(id: StripeId, lock_key: &str, waits: bool) -> Step {
    let mut table = lock(&HELD);
    let stripe = table.entry(id).or_default();
    if stripe.keys.iter().any(|k| **k == *lock_key) || stripe.taking {
        if !waits {
            return Step::Wait(None);
        }
        let mut changed = Box::pin(stripe.changed.clone().notified_owned());
        // Enabled before the table's lock is let go: every change is
        // notified under that lock, so none made after this look is missed.
        changed.as_mut().enable();
        return Step::Wait(Some(changed));
    }
    if stripe.file.is_some() {
        stripe.keys.push(lock_key.into());
        return Step::Joined(Held {
            stripe: id,
            key: lock_key.into(),
        });
    }
    stripe.taking = true;
    Step::Take(Taking { stripe: id })
}

impl FileLock {
    /// Locks on the stripe files in `dir` (made when missing).
    #[cfg_attr(not(feature = "file"), allow(dead_code))]
    pub(crate) fn new(dir: PathBuf) -> FileLock {
        FileLock::of_store(dir, "file")
    }

    /// Locks in `dir` whose errors name `store` (`dbm`, say).
    #[cfg_attr(not(feature = "dbm"), allow(dead_code))]
    pub(crate) fn of_store(dir: PathBuf, store: &'static str) -> FileLock {
        FileLock { dir, store }
    }

    fn lock_error(&self, err: io::Error) -> Error {
        Error::backend_source(
            self.store,
            format!(
                "cannot use lock directory {}; check that it exists and is writable (cache.lock_dir)",
                self.dir.display()
            ),
            err,
        )
    }

    fn stripe_path(&self, lock_key: &str) -> PathBuf {
        let hash = blake3::hash(lock_key.as_bytes());
        let mut first = [0; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        let stripe = u64::from_le_bytes(first) % STRIPES;
        self.dir.join(format!("stripe-{stripe:03}.lock"))
    }

    fn open(&self, lock_key: &str) -> Result<File> {
        let path = self.stripe_path(lock_key);
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
        };
        match open() {
            Ok(file) => Ok(file),
            // The directory was removed while running: make it again.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.dir).map_err(|e| self.lock_error(e))?;
                open().map_err(|e| self.lock_error(e))
            }
            Err(err) => Err(self.lock_error(err)),
        }
    }

    /// Takes `lock_key`, waiting as `wait` says; `None` if it is held.
    async fn take(&self, lock_key: &str, wait: Wait) -> Result<Option<LockGuard>> {
        let file = self.open(lock_key)?;
        let meta = file.metadata().map_err(|e| self.lock_error(e))?;
        let id = (meta.dev(), meta.ino());
        loop {
            let changed = match look(id, lock_key, wait != Wait::No) {
                Step::Joined(held) => return Ok(Some(LockGuard::new(held))),
                Step::Take(taking) => return self.take_flock(file, lock_key, taking, wait).await,
                Step::Wait(None) => return Ok(None),
                Step::Wait(Some(changed)) => changed,
            };
            if wait.until(changed).await.is_none() {
                return Ok(None);
            }
        }
    }

    /// Takes the stripe's flock on `file` for `lock_key`; this task is the
    /// process's only taker of the stripe (`taking`).
    async fn take_flock(
        &self,
        file: File,
        lock_key: &str,
        taking: Taking,
        wait: Wait,
    ) -> Result<Option<LockGuard>> {
        match file.try_lock() {
            Ok(()) => return Ok(Some(LockGuard::new(taking.hold(file, lock_key)))),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(err)) => return Err(self.lock_error(err)),
        }
        if wait == Wait::No {
            return Ok(None); // `taking` drops: the next task may try
        }
        // A blocking flock wakes the moment the holder releases, which is
        // what makes cross-process waiters prompt; it runs on the blocking
        // pool so no async worker is held. Given up on, the thread keeps
        // waiting and unlocks the moment it gets the lock.
        let abandoned = Arc::new(AtomicBool::new(false));
        let _abandon = Abandon(abandoned.clone());
        let blocking = tokio::task::spawn_blocking(move || -> io::Result<Option<File>> {
            file.lock()?;
            if abandoned.load(Ordering::Acquire) {
                return Ok(None); // dropping `file` unlocks it again
            }
            Ok(Some(file))
        });
        let Some(joined) = wait.until(blocking).await else {
            return Ok(None);
        };
        match joined {
            Ok(Ok(Some(file))) => Ok(Some(LockGuard::new(taking.hold(file, lock_key)))),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(err)) => Err(self.lock_error(err)),
            Err(join) => Err(Error::backend(
                self.store,
                format!("lock wait failed: {join}"),
            )),
        }
    }
}

#[async_trait]
impl CreationLock for FileLock {
    async fn try_acquire(&self, lock_key: &str) -> Result<Option<LockGuard>> {
        self.take(lock_key, Wait::No).await
    }

    async fn acquire(&self, lock_key: &str, wait: Duration) -> Result<Option<LockGuard>> {
        // No deadline rather than a panic for a wait past what an instant
        // can hold.
        let wait = Instant::now()
            .checked_add(wait)
            .map_or(Wait::Forever, Wait::Until);
        self.take(lock_key, wait).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// `n` lock keys whose stripe is the same.
    fn one_stripe(lock: &FileLock, n: usize) -> Vec<String> {
        let first = lock.stripe_path("key-0");
        (0..)
            .map(|i| format!("key-{i}"))
            .filter(|k| lock.stripe_path(k) == first)
            .take(n)
            .collect()
    }

    /// Whether another open file description (as another process has)
    /// could take the stripe's flock now.
    fn free_elsewhere(lock: &FileLock, key: &str) -> io::Result<bool> {
        match File::open(lock.stripe_path(key))?.try_lock() {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(err)) => Err(err),
        }
    }

    fn stripe_of(lock: &FileLock, key: &str) -> io::Result<StripeId> {
        let meta = std::fs::metadata(lock.stripe_path(key))?;
        Ok((meta.dev(), meta.ino()))
    }

    #[tokio::test]
    async fn keys_of_one_stripe_share_its_flock_until_the_last_is_released() -> TestResult {
        let dir = tempfile::tempdir()?;
        let lock = FileLock::new(dir.path().to_owned());
        let keys = one_stripe(&lock, 2);
        let a = lock.try_acquire(&keys[0]).await?.ok_or("free stripe")?;
        let b = tokio::time::timeout(
            Duration::from_secs(10),
            lock.acquire(&keys[1], Duration::from_secs(60)),
        )
        .await??
        .ok_or("joins the process's hold")?;
        assert!(!free_elsewhere(&lock, &keys[0])?);
        a.release().await;
        assert!(
            !free_elsewhere(&lock, &keys[0])?,
            "b still holds the stripe"
        );
        b.release().await;
        assert!(free_elsewhere(&lock, &keys[0])?, "the last release unlocks");
        let id = stripe_of(&lock, &keys[0])?;
        assert!(!lock_table_has(id), "an idle stripe leaves the table");
        Ok(())
    }

    fn lock_table_has(id: StripeId) -> bool {
        crate::sync::lock(&HELD).contains_key(&id)
    }

    #[tokio::test]
    async fn one_key_is_held_once_per_process() -> TestResult {
        let dir = tempfile::tempdir()?;
        let lock = Arc::new(FileLock::new(dir.path().to_owned()));
        let first = lock.try_acquire("k").await?.ok_or("free")?;
        assert!(lock.try_acquire("k").await?.is_none());
        assert!(
            lock.acquire("k", Duration::from_millis(20))
                .await?
                .is_none(),
            "waits, then gives up"
        );
        // A wait too long for an instant is no deadline, not a panic.
        let waiter = tokio::spawn({
            let lock = lock.clone();
            async move { lock.acquire("k", Duration::MAX).await }
        });
        let id = stripe_of(&lock, "k")?;
        // The waiter has registered for the stripe's changes.
        while crate::sync::lock(&HELD)
            .get(&id)
            .is_none_or(|s| Arc::strong_count(&s.changed) < 2)
        {
            tokio::task::yield_now().await;
        }
        first.release().await;
        let second = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await???
            .ok_or("woken by the release")?;
        assert!(!free_elsewhere(&lock, "k")?);
        second.release().await;
        assert!(free_elsewhere(&lock, "k")?);
        Ok(())
    }

    #[tokio::test]
    async fn a_stripe_held_elsewhere_is_taken_once_for_every_key_waiting() -> TestResult {
        let dir = tempfile::tempdir()?;
        let lock = Arc::new(FileLock::new(dir.path().to_owned()));
        let keys = one_stripe(&lock, 2);
        let elsewhere = File::open(lock.stripe_path(&keys[0])).or_else(|_| {
            std::fs::write(lock.stripe_path(&keys[0]), b"")?;
            File::open(lock.stripe_path(&keys[0]))
        })?;
        elsewhere.lock()?;
        let id = stripe_of(&lock, &keys[0])?;
        let waiters: Vec<_> = keys
            .iter()
            .map(|key| {
                let (lock, key) = (lock.clone(), key.clone());
                tokio::spawn(async move { lock.acquire(&key, Duration::from_secs(60)).await })
            })
            .collect();
        // Both wait: one for the flock, the other for that one.
        while !crate::sync::lock(&HELD).get(&id).is_some_and(|s| s.taking) {
            tokio::task::yield_now().await;
        }
        drop(elsewhere);
        let mut guards = Vec::new();
        for waiter in waiters {
            let guard = tokio::time::timeout(Duration::from_secs(10), waiter).await???;
            guards.push(guard.ok_or("taken after the other holder let go")?);
        }
        assert_eq!(
            crate::sync::lock(&HELD).get(&id).map(|s| s.keys.len()),
            Some(2)
        );
        drop(guards);
        assert!(free_elsewhere(&lock, &keys[0])?);
        Ok(())
    }
}
