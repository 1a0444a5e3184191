//! Cross-process creation locks with `flock` on striped lock files.
//!
//! A fixed number of lock files (`stripe-000.lock` …) serve every key: a
//! key's lock is the stripe its hash falls on. Lock files therefore never
//! grow with the number of keys (Beaker leaves one file per key behind
//! forever), at the cost of two keys on one stripe occasionally waiting for
//! each other. The kernel releases a crashed holder's `flock`, so no lock
//! outlives its process.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;

use super::lock::{CreationLock, HeldLock, LockGuard};
use crate::error::{Error, Result};

/// How many lock files a lock directory holds.
pub(crate) const STRIPES: u64 = 64;

#[derive(Debug)]
pub(crate) struct FileLock {
    dir: PathBuf,
}

struct Held(#[allow(dead_code)] File);

impl HeldLock for Held {
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        // Closing the descriptor releases the flock.
        drop(self);
        Box::pin(async {})
    }
}

fn lock_error(dir: &std::path::Path, err: io::Error) -> Error {
    Error::backend_source(
        "file",
        format!(
            "cannot use lock directory {}; check that it exists and is writable (cache.lock_dir)",
            dir.display()
        ),
        err,
    )
}

impl FileLock {
    pub(crate) fn new(dir: PathBuf) -> FileLock {
        FileLock { dir }
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
                std::fs::create_dir_all(&self.dir).map_err(|e| lock_error(&self.dir, e))?;
                open().map_err(|e| lock_error(&self.dir, e))
            }
            Err(err) => Err(lock_error(&self.dir, err)),
        }
    }
}

#[async_trait]
impl CreationLock for FileLock {
    async fn try_acquire(&self, lock_key: &str) -> Result<Option<LockGuard>> {
        let file = self.open(lock_key)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(LockGuard::new(Held(file)))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(err)) => Err(lock_error(&self.dir, err)),
        }
    }

    async fn acquire(&self, lock_key: &str, wait: Duration) -> Result<Option<LockGuard>> {
        if let Some(guard) = self.try_acquire(lock_key).await? {
            return Ok(Some(guard));
        }
        let file = self.open(lock_key)?;
        // A blocking flock wakes the moment the holder releases, which is
        // what makes cross-process waiters prompt; it runs on the blocking
        // pool so no async worker is held.
        let abandoned = Arc::new(AtomicBool::new(false));
        let gave_up = abandoned.clone();
        let blocking = tokio::task::spawn_blocking(move || -> io::Result<Option<File>> {
            file.lock()?;
            if gave_up.load(Ordering::Acquire) {
                return Ok(None); // dropping `file` unlocks it again
            }
            Ok(Some(file))
        });
        match tokio::time::timeout(wait, blocking).await {
            Ok(Ok(Ok(Some(file)))) => Ok(Some(LockGuard::new(Held(file)))),
            Ok(Ok(Ok(None))) => Ok(None),
            Ok(Ok(Err(err))) => Err(lock_error(&self.dir, err)),
            Ok(Err(join)) => Err(Error::backend("file", format!("lock wait failed: {join}"))),
            Err(_elapsed) => {
                abandoned.store(true, Ordering::Release);
                Ok(None)
            }
        }
    }
}
