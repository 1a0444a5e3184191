//! The distributed creation lock: `SET key token NX PX lifetime`, renewed
//! while the creator runs, released only by its owner, with waiters in
//! other processes woken by pub/sub.
//!
//! # Life of a lock
//!
//! - **Take**: `SET <lock key> <token> NX PX <lock_timeout>`. The token is
//!   unique to this holding (128 random bits, the process id and a
//!   counter), so no other holder, in this process or another, can pass
//!   for the owner.
//! - **Renew**: while held, a spawned task extends the lifetime every
//!   `lock_timeout / 3` with an owner-checked `PEXPIRE` script, so a slow
//!   creator keeps its lock and a crashed one loses it within
//!   `lock_timeout`. The task stops on release, on drop, or as soon as the
//!   script reports the lock is no longer ours.
//! - **Release**: a script deletes the key only if it still holds our token
//!   and then publishes on the lock's channel, in the same atomic step. A
//!   holder whose lock expired and was taken by another process therefore
//!   cannot release the new holder's lock.
//! - **Wait**: a waiter subscribes to the lock's channel (the lock key
//!   itself; on a cluster with sharded pub/sub, so the subscription and the
//!   publish happen on the node that owns the lock's slot), then retries
//!   `SET NX` on every message, and at least every [`POLL`] in case a
//!   message was lost or the holder died without releasing. It gives up
//!   after `wait_timeout`, and the caller then runs the creator itself.
//!
//! A `SET NX` whose reply is lost (the `timeout` ran out) may still have
//! taken the lock; nobody then releases it, and it expires after
//! `lock_timeout` like a crashed holder's.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::{Script, Value, cmd};
use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::conn::Link;
use crate::dogpile::lock::{CreationLock, HeldLock, LockGuard};
use crate::error::Result;

/// The longest a waiter sleeps between two attempts when no release
/// message arrives: the bound on how late a lost message or a crashed
/// holder's expiry is noticed.
pub(super) const POLL: Duration = Duration::from_millis(50);

/// Deletes the lock if it is ours, then wakes the waiters.
/// `KEYS[1]` lock key; `ARGV[1]` token; `ARGV[2]` `publish` or `spublish`.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call(ARGV[2], KEYS[1], 'released')
  return 1
end
return 0",
    )
});

/// Extends the lock's lifetime if it is ours.
/// `KEYS[1]` lock key; `ARGV[1]` token; `ARGV[2]` lifetime in ms.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0",
    )
});

/// The Redis key of a creation lock, from the core's lock key
/// `{prefix}{region}:{namespace}!lock#{key}`: the part before the first `!`
/// after the prefix (region and escaped namespace never contain one) is
/// wrapped in a hash tag, which puts the lock in the slot of its entry and
/// namespace generation. A lock key the core hashed for length
/// (`{prefix}#{hash}`) has lost its namespace; it keeps its own slot, which
/// nothing depends on (no command touches a lock together with another key).
pub(super) fn redis_lock_key(prefix: &str, core_key: &str) -> String {
    let Some(rest) = core_key.strip_prefix(prefix) else {
        return core_key.to_owned();
    };
    match rest.find('!') {
        Some(at) => format!("{{{prefix}{}}}{}", &rest[..at], &rest[at..]),
        None => core_key.to_owned(),
    }
}

/// A token no other holding of any lock shares.
fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `RandomState` is seeded from the OS's randomness: two of them give
    // 128 bits no other process can predict or repeat.
    let random = |salt: u64| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.finish()
    };
    format!(
        "{:016x}{:016x}:{}:{n}",
        random(n),
        random(!n),
        std::process::id()
    )
}

/// The creation lock of a Redis or Redis Cluster region.
#[derive(Debug)]
pub(crate) struct RedisLock {
    link: Arc<Link>,
    prefix: String,
    /// `lock_timeout`: how long a lock lives without renewal.
    lifetime: Duration,
}

impl RedisLock {
    pub(super) fn new(link: Arc<Link>, prefix: String, lifetime: Duration) -> RedisLock {
        RedisLock {
            link,
            prefix,
            lifetime: lifetime.max(Duration::from_millis(1)),
        }
    }

    fn lifetime_ms(&self) -> u64 {
        u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX)
    }

    /// One `SET NX` attempt on a Redis lock key.
    async fn take(&self, key: &str) -> Result<Option<LockGuard>> {
        let token = new_token();
        let mut set = cmd("SET");
        set.arg(key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(self.lifetime_ms());
        let reply: Value = self.link.query("take lock", &set).await?;
        if matches!(reply, Value::Nil) {
            return Ok(None);
        }
        Ok(Some(LockGuard::new(Held::start(
            self.link.clone(),
            key.to_owned(),
            token,
            self.lifetime,
        ))))
    }
}

#[async_trait]
impl CreationLock for RedisLock {
    async fn try_acquire(&self, lock_key: &str) -> Result<Option<LockGuard>> {
        self.take(&redis_lock_key(&self.prefix, lock_key)).await
    }

    async fn acquire(&self, lock_key: &str, wait: Duration) -> Result<Option<LockGuard>> {
        let key = redis_lock_key(&self.prefix, lock_key);
        let deadline = Instant::now() + wait;
        let interest = Interest::register(&self.link, &key).await;
        loop {
            // Registered before the attempt, so a release between a failed
            // attempt and the wait below still wakes us.
            let notified = interest.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(guard) = self.take(&key).await? {
                return Ok(Some(guard));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let _ = tokio::time::timeout(POLL.min(deadline - now), notified).await;
        }
    }
}

/// A waiter's interest in a lock's release channel: subscribed by the first
/// waiter of a channel in this process, unsubscribed when the last leaves.
struct Interest {
    link: Arc<Link>,
    channel: String,
    notify: Arc<tokio::sync::Notify>,
}

impl Interest {
    async fn register(link: &Arc<Link>, channel: &str) -> Interest {
        let (notify, first) = link.wakeups.register(channel);
        if first && let Err(err) = link.subscribe(channel).await {
            // Waiting still works, by polling.
            tracing::debug!("cannot subscribe to lock channel {channel}: {err}");
        }
        Interest {
            link: link.clone(),
            channel: channel.to_owned(),
            notify,
        }
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        if !self.link.wakeups.unregister(&self.channel) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let link = self.link.clone();
            let channel = std::mem::take(&mut self.channel);
            runtime.spawn(async move {
                if let Err(err) = link.unsubscribe(&channel).await {
                    tracing::debug!("cannot unsubscribe from lock channel {channel}: {err}");
                }
            });
        }
    }
}

/// A held lock: its key, our token, and the task that renews it.
struct Held {
    link: Arc<Link>,
    key: String,
    token: String,
    renewal: AbortHandle,
}

impl Held {
    fn start(link: Arc<Link>, key: String, token: String, lifetime: Duration) -> Held {
        let period = (lifetime / 3).max(Duration::from_millis(1));
        let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        let renewal = tokio::spawn({
            let (link, key, token) = (link.clone(), key.clone(), token.clone());
            async move {
                let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let mut renew = RENEW.prepare_invoke();
                    renew.key(&key).arg(&token).arg(lifetime_ms);
                    match link.script::<i64>("renew lock", &renew).await {
                        Ok(1) => {}
                        Ok(_) => {
                            tracing::warn!(
                                "creation lock {key} expired before its creator finished; \
                                 another process may be creating the same value (raise lock_timeout?)"
                            );
                            return;
                        }
                        // Try again at the next tick: the lock lives
                        // `lifetime`, three periods.
                        Err(err) => tracing::debug!("cannot renew creation lock {key}: {err}"),
                    }
                }
            }
        })
        .abort_handle();
        Held {
            link,
            key,
            token,
            renewal,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

impl HeldLock for Held {
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        let mut this = self;
        this.renewal.abort();
        let link = this.link.clone();
        let key = std::mem::take(&mut this.key);
        let token = std::mem::take(&mut this.token);
        Box::pin(async move {
            let publish = if link.is_cluster() {
                "spublish"
            } else {
                "publish"
            };
            let mut release = RELEASE.prepare_invoke();
            release.key(&key).arg(&token).arg(publish);
            match link.script::<i64>("release lock", &release).await {
                Ok(1) => {}
                Ok(_) => tracing::debug!(
                    "creation lock {key} had expired and was not ours any more at release"
                ),
                // It expires by itself within lock_timeout.
                Err(err) => tracing::debug!("cannot release creation lock {key}: {err}"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_share_their_entry_hash_tag() {
        assert_eq!(redis_lock_key("", "r:n!lock#k"), "{r:n}!lock#k");
        assert_eq!(
            redis_lock_key("app/", "app/r:n!lock#k!x"),
            "{app/r:n}!lock#k!x"
        );
        // Hashed for length: the namespace is gone, the key stays whole.
        assert_eq!(redis_lock_key("p", "p#00ff"), "p#00ff");
    }

    #[test]
    fn tokens_are_unique() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.len() > 32);
    }
}
