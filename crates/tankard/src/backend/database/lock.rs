//! What the PostgreSQL and MySQL creation locks share: session locks held
//! on a connection of their own, and the waiting loop. (SQLite's lock is
//! the file store's `flock` stripes.) See the module docs of `database`
//! for the life of a lock.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::lock::{CreationLock, LockGuard};
use crate::error::Result;
use crate::sync::lock;

/// The 64-bit number a lock key is locked by (PostgreSQL's advisory lock
/// id; MySQL's lock name is its hex): the first 8 bytes of its blake3.
pub(super) fn lock_id(lock_key: &str) -> i64 {
    let hash = blake3::hash(lock_key.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_le_bytes(first)
}

/// Our error for a failed lock attempt. Every lock connection busy with
/// a creator (the lock pool's wait ran out) says nothing about the
/// server, so unlike the data pool's it does not open the breaker: the
/// caller creates without the lock, and the other operations go on.
pub(super) fn lock_error(backend: &'static str, err: sqlx::Error) -> crate::error::Error {
    match err {
        sqlx::Error::PoolTimedOut => crate::error::Error::backend_source(
            backend,
            "take lock: every lock connection is held by a creator",
            err,
        ),
        err => super::store::sql_error(backend, "take lock", err),
    }
}

/// A random-enough number for jitter: std seeds every `RandomState` from
/// the OS.
fn jitter() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    (hasher.finish() % 1000) as f64 / 1000.0
}

/// How a waiter paces its attempts.
// Each engine builds one kind.
#[cfg_attr(not(all(feature = "postgres", feature = "mysql")), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub(super) enum Pace {
    /// Woken by notifications; this often at least, in case one is lost
    /// (PostgreSQL).
    Notified(Duration),
    /// No notifications: a jittered back-off from the first pause to the
    /// second (MySQL: 2 ms to 10 ms).
    Polled(Duration, Duration),
}

/// One engine's session lock.
#[async_trait]
pub(super) trait Session: Send + Sync + fmt::Debug + 'static {
    /// One attempt at the lock `id`, bounded by the region's `timeout`.
    async fn attempt(&self, id: i64) -> Result<Option<LockGuard>>;
    /// The wake-ups of this engine's releases, listening for them if it
    /// has not started yet (`None`: the engine has none).
    fn wakeups(&self) -> Option<Arc<Wakeups>>;
    /// How waiters pace their attempts.
    fn pace(&self) -> Pace;
}

/// A creation lock made of a [`Session`]'s attempts.
#[derive(Debug)]
pub(super) struct SessionLock<S>(pub(super) S);

#[async_trait]
impl<S: Session> CreationLock for SessionLock<S> {
    async fn try_acquire(&self, lock_key: &str) -> Result<Option<LockGuard>> {
        self.0.attempt(lock_id(lock_key)).await
    }

    async fn acquire(&self, lock_key: &str, wait: Duration) -> Result<Option<LockGuard>> {
        let id = lock_id(lock_key);
        // `None`: a wait too long to count, which never runs out.
        let deadline = Instant::now().checked_add(wait);
        let wakeups = self.0.wakeups();
        let interest = wakeups.as_ref().map(|w| Interest::register(w, id));
        let mut pause = match self.0.pace() {
            Pace::Notified(poll) => poll,
            Pace::Polled(first, _) => first,
        };
        loop {
            // Enabled before the attempt, so that a release announced
            // between a failed attempt and the wait still wakes us.
            let mut notified = interest.as_ref().map(|i| Box::pin(i.notify.notified()));
            if let Some(notified) = notified.as_mut() {
                notified.as_mut().enable();
            }
            if let Some(guard) = self.0.attempt(id).await? {
                return Ok(Some(guard));
            }
            let mut sleep = match self.0.pace() {
                Pace::Notified(_) => pause,
                // Between half and all of `pause`, so pollers drift apart.
                Pace::Polled(_, max) => {
                    let this = pause.mul_f64(0.5 + jitter() / 2.0);
                    pause = (pause * 2).min(max);
                    this
                }
            };
            if let Some(deadline) = deadline {
                match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => sleep = sleep.min(left),
                    _ => return Ok(None),
                }
            }
            match notified {
                Some(notified) => {
                    let _ = tokio::time::timeout(sleep, notified).await;
                }
                None => tokio::time::sleep(sleep).await,
            }
        }
    }
}

/// Who waits for which lock id in this process, to be woken when a
/// release is announced.
#[derive(Debug, Default)]
pub(super) struct Wakeups {
    waiting: Mutex<HashMap<i64, (Arc<Notify>, usize)>>,
}

// PostgreSQL's listener wakes; MySQL has no notifications.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
impl Wakeups {
    /// Wakes the waiters of `id`, if any.
    pub(super) fn wake(&self, id: i64) {
        if let Some((notify, _)) = lock(&self.waiting).get(&id) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter (after notifications may have been missed).
    pub(super) fn wake_all(&self) {
        for (notify, _) in lock(&self.waiting).values() {
            notify.notify_waiters();
        }
    }
}

/// A waiter's registration in [`Wakeups`], removed when dropped.
struct Interest {
    wakeups: Arc<Wakeups>,
    id: i64,
    notify: Arc<Notify>,
}

impl Interest {
    fn register(wakeups: &Arc<Wakeups>, id: i64) -> Interest {
        let mut waiting = lock(&wakeups.waiting);
        let (notify, count) = waiting.entry(id).or_default();
        *count += 1;
        Interest {
            wakeups: wakeups.clone(),
            id,
            notify: notify.clone(),
        }
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut waiting = lock(&self.wakeups.waiting);
        if let Some((_, count)) = waiting.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&self.id);
            }
        }
    }
}

/// A pooled connection that may hold a session lock: unless handed back
/// with [`LockConn::back`] after a statement that left it holding nothing
/// unknown, it is closed when dropped, never returned to the pool. A
/// statement that failed, timed out or was cancelled may still have taken
/// a lock when the server runs it; closing the session is what frees it.
pub(super) struct LockConn<DB: sqlx::Database>(Option<PoolConnection<DB>>);

impl<DB: sqlx::Database> LockConn<DB> {
    pub(super) fn new(conn: PoolConnection<DB>) -> LockConn<DB> {
        LockConn(Some(conn))
    }

    /// The connection, for a statement.
    pub(super) fn get(&mut self) -> Option<&mut DB::Connection> {
        self.0.as_deref_mut()
    }

    /// Returns the connection to the pool: it holds no lock.
    pub(super) fn back(mut self) {
        drop(self.0.take());
    }
}

impl<DB: sqlx::Database> Drop for LockConn<DB> {
    fn drop(&mut self) {
        let Some(mut conn) = self.0.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Closed gracefully in a task of sqlx's.
            conn.close_on_drop();
        } else {
            // No runtime to close it in: the socket closes with it, and
            // the server ends the session all the same.
            drop(conn.detach());
        }
    }
}

impl<DB: sqlx::Database> fmt::Debug for LockConn<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockConn").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_are_stable_and_spread() {
        assert_eq!(lock_id("r:n!lock#k"), lock_id("r:n!lock#k"));
        assert_ne!(lock_id("r:n!lock#k"), lock_id("r:n!lock#l"));
    }

    #[test]
    fn interests_leave_the_table_with_the_last_waiter() {
        let wakeups = Arc::new(Wakeups::default());
        let a = Interest::register(&wakeups, 7);
        let b = Interest::register(&wakeups, 7);
        drop(a);
        assert!(lock(&wakeups.waiting).contains_key(&7));
        drop(b);
        assert!(lock(&wakeups.waiting).is_empty());
    }
}
