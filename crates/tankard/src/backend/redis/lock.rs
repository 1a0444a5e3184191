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
//! # Locks nobody knows they hold
//!
//! A take whose reply is lost (the `timeout` ran out on a hung server, or
//! the connection broke) may still have taken the lock: a stopped server
//! runs the queued `SET NX` when it resumes. Left alone, such a lock would
//! block every miss on its key for its whole lifetime (DESIGN §5 rule 6).
//! So the (key, token) of every take or release that ended without a reply
//! goes to [`Orphans`], and one task per region sends the owner-only
//! release for each until the server answers it. The answer settles the
//! question: a timed-out command does not make the client reconnect, so
//! the release follows the lost `SET` on the same connection and the
//! server runs it after the `SET`; after a reconnection the old
//! connection's commands can no longer run. (One more release a moment
//! later covers a connection the client dropped while the server was
//! stopped, whose bytes the server may still read on resuming.)
//!
//! A lock found without a TTL (a holder this crate never made: a manual
//! `SET`, another tool) gets `lock_timeout` as its TTL from the take
//! script, so it cannot block its key forever.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::Duration;

use ::redis::Script;
use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::conn::Link;
use crate::backend::lock::{CreationLock, HeldLock, LockGuard};
use crate::error::Result;

/// The longest a waiter sleeps between two attempts when no release
/// message arrives: the bound on how late a lost message or a crashed
/// holder's expiry is noticed.
pub(super) const POLL: Duration = Duration::from_millis(50);

/// The longest lock lifetime sent to the server. Redis refuses an expiry
/// past its clock's range, and a year is "until released" for a creation
/// lock; a larger `lock_timeout` is cut to it rather than make every take
/// fail.
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Takes the lock if it is free. If it is held without a TTL (set by
/// something other than this crate), gives it `lock_timeout` so it cannot
/// block its key forever.
/// `KEYS[1]` lock key; `ARGV[1]` token; `ARGV[2]` lifetime in ms.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('pttl', KEYS[1]) == -1 then
  redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0",
    )
});

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

/// `publish` on a single server, `spublish` on a cluster (where the
/// release script may only publish on its own slot's sharded channel).
fn publish_command(link: &Link) -> &'static str {
    if link.is_cluster() {
        "spublish"
    } else {
        "publish"
    }
}

/// Runs the owner-only release: `Ok(true)` if it deleted our lock,
/// `Ok(false)` if the key held no lock of ours.
async fn release(link: &Link, key: &str, token: &str) -> Result<bool> {
    let mut release = RELEASE.prepare_invoke();
    release.key(key).arg(token).arg(publish_command(link));
    Ok(link.script::<i64>("release lock", &release).await? == 1)
}

/// The creation lock of a Redis or Redis Cluster region.
#[derive(Debug)]
pub(crate) struct RedisLock {
    link: Arc<Link>,
    prefix: String,
    /// `lock_timeout`: how long a lock lives without renewal.
    lifetime: Duration,
    orphans: Arc<Orphans>,
}

impl RedisLock {
    pub(super) fn new(link: Arc<Link>, prefix: String, lifetime: Duration) -> RedisLock {
        RedisLock {
            link,
            prefix,
            lifetime: lifetime.clamp(Duration::from_millis(1), MAX_LIFETIME),
            orphans: Arc::default(),
        }
    }

    fn lifetime_ms(&self) -> u64 {
        u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX)
    }

    /// One take attempt on a Redis lock key. An attempt that ends without
    /// a reply may have taken the lock: its token goes to the orphans, to
    /// be released once the server answers.
    async fn take(&self, key: &str) -> Result<Option<LockGuard>> {
        let token = new_token();
        let mut take = TAKE.prepare_invoke();
        take.key(key).arg(&token).arg(self.lifetime_ms());
        match self.link.script::<i64>("take lock", &take).await {
            Ok(1) => Ok(Some(LockGuard::new(Held::start(
                self.link.clone(),
                self.orphans.clone(),
                key.to_owned(),
                token,
                self.lifetime,
            )))),
            Ok(_) => Ok(None),
            Err(err) => {
                // A take the circuit breaker skipped never reached the server.
                if !err.is_unavailable() {
                    self.orphans.add(&self.link, key.to_owned(), token);
                }
                Err(err)
            }
        }
    }
}

#[async_trait]
impl CreationLock for RedisLock {
    async fn try_acquire(&self, lock_key: &str) -> Result<Option<LockGuard>> {
        self.take(&redis_lock_key(&self.prefix, lock_key)).await
    }

    async fn acquire(&self, lock_key: &str, wait: Duration) -> Result<Option<LockGuard>> {
        let key = redis_lock_key(&self.prefix, lock_key);
        // `None`: a wait too long to count, which never runs out.
        let deadline = Instant::now().checked_add(wait);
        let (interest, first) = Interest::register(&self.link, &key);
        // The first waiter of a channel subscribes, at the same time as its
        // first attempt rather than before it, so the attempt is not held up
        // by a second round trip (on a hung server: a second `timeout`).
        // The subscription is sent first, so on one connection a release
        // the attempt misses is still announced to us; a release that
        // slips between them anyway is caught by the next poll.
        let mut subscribe = first.then_some(async {
            if let Err(err) = self.link.subscribe(&key).await {
                // Waiting still works, by polling.
                tracing::debug!("cannot subscribe to lock channel {key}: {err}");
            }
        });
        loop {
            // Registered before the attempt, so a release between a failed
            // attempt and the wait below still wakes us.
            let notified = interest.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = match subscribe.take() {
                Some(subscribing) => tokio::join!(subscribing, self.take(&key)).1,
                None => self.take(&key).await,
            };
            if let Some(guard) = taken? {
                return Ok(Some(guard));
            }
            let pause = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => POLL.min(left),
                    _ => return Ok(None),
                },
                None => POLL,
            };
            let _ = tokio::time::timeout(pause, notified).await;
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
    /// Registers the interest; `true` if it is the channel's first in this
    /// process, whose owner then subscribes.
    fn register(link: &Arc<Link>, channel: &str) -> (Interest, bool) {
        let (notify, first) = link.wakeups.register(channel);
        let interest = Interest {
            link: link.clone(),
            channel: channel.to_owned(),
            notify,
        };
        (interest, first)
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
    orphans: Arc<Orphans>,
    key: String,
    token: String,
    /// `None` when the lifetime is too long for a renewal to matter.
    renewal: Option<AbortHandle>,
}

impl Held {
    fn start(
        link: Arc<Link>,
        orphans: Arc<Orphans>,
        key: String,
        token: String,
        lifetime: Duration,
    ) -> Held {
        let period = (lifetime / 3).max(Duration::from_millis(1));
        let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        let renewal = Instant::now().checked_add(period).map(|first| {
            let (link, key, token) = (link.clone(), key.clone(), token.clone());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(first, period);
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
            })
            .abort_handle()
        });
        Held {
            link,
            orphans,
            key,
            token,
            renewal,
        }
    }

    fn stop_renewal(&self) {
        if let Some(renewal) = &self.renewal {
            renewal.abort();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop_renewal();
    }
}

impl HeldLock for Held {
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        let mut this = self;
        this.stop_renewal();
        let (link, orphans) = (this.link.clone(), this.orphans.clone());
        let key = std::mem::take(&mut this.key);
        let token = std::mem::take(&mut this.token);
        Box::pin(async move {
            match release(&link, &key, &token).await {
                Ok(true) => {}
                Ok(false) => tracing::debug!(
                    "creation lock {key} had expired and was not ours any more at release"
                ),
                // Still ours on the server, or about to be released by a
                // command the server has yet to run: retried until answered.
                Err(err) => {
                    tracing::debug!("cannot release creation lock {key} now, will retry: {err}");
                    orphans.add(&link, key, token);
                }
            }
        })
    }
}

/// The most locks awaiting a release at once. Past it a lock is left to
/// expire by its lifetime, as before this table existed; it bounds the
/// memory a long outage can take.
const MAX_ORPHANS: usize = 10_000;

/// The longest pause between two release rounds while the server does not
/// answer.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How many releases a round sends at once (they share one connection).
const ROUND: usize = 64;

/// Locks this process may hold without knowing it (a take whose reply was
/// lost) or failed to release: released by their token, in a task of
/// their own, as soon as the server answers (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Orphans {
    state: Mutex<OrphanState>,
}

#[derive(Debug, Default)]
struct OrphanState {
    pending: Vec<Orphan>,
    /// Whether a task is releasing them; at most one per region.
    releasing: bool,
}

#[derive(Debug)]
struct Orphan {
    key: String,
    token: String,
    /// Releases answered "not ours". Two, a poll apart, settle it; one
    /// answered "released" does at once.
    answered: u8,
}

impl Orphans {
    fn state(&self) -> std::sync::MutexGuard<'_, OrphanState> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a release of `key` by `token`, starting the releasing task
    /// if none runs.
    fn add(self: &Arc<Self>, link: &Arc<Link>, key: String, token: String) {
        let mut state = self.state();
        if state.pending.len() >= MAX_ORPHANS {
            tracing::debug!("too many creation locks awaiting release; {key} expires by itself");
            return;
        }
        state.pending.push(Orphan {
            key,
            token,
            answered: 0,
        });
        if state.releasing {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to retry from: the locks expire by their lifetime.
            state.pending.clear();
            return;
        };
        state.releasing = true;
        drop(state);
        runtime.spawn(self.clone().release_all(Arc::downgrade(link)));
    }

    /// How many releases are awaiting an answer (for the tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().pending.len()
    }

    /// Releases the pending locks, round after round, until each has its
    /// answer. Stops when the region is dropped (`link` gone).
    async fn release_all(self: Arc<Self>, link: Weak<Link>) {
        let mut task = Releasing {
            orphans: self.clone(),
            finished: false,
        };
        let mut pause = Duration::ZERO;
        loop {
            tokio::time::sleep(pause).await;
            let Some(link) = link.upgrade() else {
                self.state().releasing = false;
                task.finished = true;
                return;
            };
            let batch: Vec<(String, String)> = self
                .state()
                .pending
                .iter()
                .take(ROUND)
                .map(|o| (o.key.clone(), o.token.clone()))
                .collect();
            // One release first: while the server does not answer, a round
            // costs one `timeout`, not one per lock.
            let mut answers = Vec::with_capacity(batch.len());
            if let Some((key, token)) = batch.first() {
                answers.push(release(&link, key, token).await);
            }
            if answers.first().is_some_and(Result::is_ok) {
                let rest = batch[1..]
                    .iter()
                    .map(|(key, token)| release(&link, key, token));
                answers.extend(futures_util::future::join_all(rest).await);
            }
            drop(link);
            let answered = answers.iter().any(Result::is_ok);
            let mut state = self.state();
            for ((key, token), answer) in batch.iter().zip(&answers) {
                let Ok(released) = answer else { continue };
                let Some(at) = state
                    .pending
                    .iter()
                    .position(|o| &o.key == key && &o.token == token)
                else {
                    continue;
                };
                let orphan = &mut state.pending[at];
                orphan.answered += 1;
                if *released || orphan.answered >= 2 {
                    state.pending.swap_remove(at);
                }
            }
            if state.pending.is_empty() {
                state.releasing = false;
                task.finished = true;
                return;
            }
            pause = if answered {
                POLL
            } else {
                (pause * 2).clamp(POLL, MAX_RETRY_PAUSE)
            };
        }
    }
}

/// The releasing task's mark: if the task is dropped unfinished (its
/// runtime shut down), the next orphan starts a new one.
struct Releasing {
    orphans: Arc<Orphans>,
    finished: bool,
}

impl Drop for Releasing {
    fn drop(&mut self) {
        if !self.finished {
            self.orphans.state().releasing = false;
        }
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

    /// A `Link` to a port nobody listens on: every operation fails at once.
    fn dead_link() -> Arc<Link> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        Arc::new(Link::new(
            "redis",
            super::super::conn::Target::Single(client),
            Duration::from_millis(500),
            Arc::default(),
        ))
    }

    #[tokio::test]
    async fn huge_waits_and_lifetimes_neither_overflow_nor_go_unreleased() {
        let link = dead_link();
        let lock = RedisLock::new(link.clone(), String::new(), Duration::MAX);
        assert_eq!(lock.lifetime, MAX_LIFETIME);
        // The deadline of a wait this long is "never", not a panic.
        assert!(lock.acquire("r:n!lock#k", Duration::MAX).await.is_err());
        // The take got no answer: it is kept to be released when one comes.
        assert_eq!(lock.orphans.len(), 1);
        // Nor is a renewal period this long.
        drop(Held::start(
            link,
            Arc::default(),
            "k".to_owned(),
            "t".to_owned(),
            Duration::MAX,
        ));
    }

    #[test]
    fn tokens_are_unique() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.len() > 32);
    }
}
