//! Creation locks: who, across processes, may regenerate a key.
//!
//! In-process callers are already serialised by the single-flight map, so
//! a creation lock is taken by at most one task per key per process: the
//! flight's leader. Backends provide the cross-process kinds: `flock` on
//! striped lock files for the file backend, `SET NX PX`/`add` with owner
//! tokens for servers.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;

use crate::error::Result;

/// A lock that guards the creation of one key across processes.
#[async_trait]
pub(crate) trait CreationLock: Send + Sync + fmt::Debug {
    /// Takes the lock if it is free; `None` if another holder has it.
    async fn try_acquire(&self, lock_key: &str) -> Result<Option<LockGuard>>;

    /// Waits up to `wait` for the lock; `None` if the wait ran out.
    async fn acquire(&self, lock_key: &str, wait: Duration) -> Result<Option<LockGuard>>;
}

/// A held lock, released by the holder.
pub(crate) trait HeldLock: Send {
    /// Releases the lock. Only the owner's release takes effect.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The proof of holding a creation lock. Release it with
/// [`LockGuard::release`]; a guard dropped without release (the creator's
/// task was cancelled or panicked) releases in a spawned task when a tokio
/// runtime is at hand, and otherwise lets the lock expire by its lifetime.
pub(crate) struct LockGuard {
    held: Option<Box<dyn HeldLock>>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

impl LockGuard {
    #[cfg_attr(
        not(any(feature = "file", feature = "memcached", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) fn new(held: impl HeldLock + 'static) -> LockGuard {
        LockGuard {
            held: Some(Box::new(held)),
        }
    }

    /// A guard that holds nothing, for locks that exist only in-process.
    pub(crate) fn none() -> LockGuard {
        LockGuard { held: None }
    }

    /// The held lock, taken out of the guard (so dropping the guard no
    /// longer releases it): for a wrapper to put around it, such as the
    /// circuit breaker's, which skips the release while its backend is
    /// unreachable. `None` for a guard that holds nothing.
    #[cfg_attr(not(any(feature = "memcached", feature = "redis")), allow(dead_code))]
    pub(crate) fn into_held(mut self) -> Option<Box<dyn HeldLock>> {
        self.held.take()
    }

    pub(crate) async fn release(mut self) {
        if let Some(held) = self.held.take() {
            held.release().await;
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            let release = held.release();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(release);
            }
        }
    }
}

/// No cross-process lock: the in-process single-flight is all there is
/// (memory regions, `lock = local`).
#[derive(Debug, Default)]
pub(crate) struct LocalOnly;

#[async_trait]
impl CreationLock for LocalOnly {
    async fn try_acquire(&self, _lock_key: &str) -> Result<Option<LockGuard>> {
        Ok(Some(LockGuard::none()))
    }

    async fn acquire(&self, _lock_key: &str, _wait: Duration) -> Result<Option<LockGuard>> {
        Ok(Some(LockGuard::none()))
    }
}
