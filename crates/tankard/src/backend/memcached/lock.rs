//! The distributed creation lock on memcached: `add` with an owner token
//! and a lifetime, renewed while the creator runs, released only by its
//! owner. See the parent module's docs for why it is built this way.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::client::{
    Client, Keyed, Reply, Request, Verb, deadline_in, exptime, memcached_key, unix_now,
};
use crate::backend::lock::{CreationLock, HeldLock, LockGuard};
use crate::error::{Error, Result};

/// The first pause of a waiter between two attempts.
const FIRST_POLL: Duration = Duration::from_millis(2);
/// The longest pause of a waiter between two attempts. The last of several
/// waiting processes lags the holder's release by about this much, so it
/// is what a cross-process stampede costs over the creator's own time
/// (the target is under 20 ms); 25 ms measured 45-65 ms over, 10 ms about
/// 20 ms in a debug build.
const MAX_POLL: Duration = Duration::from_millis(10);

/// A random-enough number: std seeds every `RandomState` from the OS, and
/// the counter keeps two calls in one thread apart.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Starts the token of a lock taken by a waiter (through `acquire`): such a
/// holder has waited for another creator and almost always only re-reads
/// the fresh value and releases at once.
const WAITER_MARK: &str = "w";

/// A token no other holder has: process id, a per-process counter and
/// 128 random bits, after `mark`.
fn new_token(mark: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{mark}{:x}.{:x}.{:016x}{:016x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_u64(),
        random_u64()
    )
}

/// Creation locks held in memcached.
#[derive(Debug)]
pub(crate) struct MemcachedLock {
    client: Arc<Client>,
    prefix: String,
    lock_timeout: Duration,
    timeout: Duration,
}

impl MemcachedLock {
    pub(crate) fn new(
        client: Arc<Client>,
        prefix: String,
        lock_timeout: Duration,
        timeout: Duration,
    ) -> MemcachedLock {
        MemcachedLock {
            client,
            prefix,
            lock_timeout,
            timeout,
        }
    }
}

/// What a held lock needs to renew and release itself.
#[derive(Debug)]
struct Owner {
    client: Arc<Client>,
    key: String,
    /// The server the lock was taken on. Renewal and release go there, not
    /// to wherever the key routes now: when a failed server comes back
    /// during the creation, the key routes to it again, and a release sent
    /// there would leave the lock behind on the server that has it.
    server: usize,
    token: String,
    lock_timeout: Duration,
    timeout: Duration,
}

impl Owner {
    fn exptime(&self) -> u32 {
        exptime(Some(self.lock_timeout), unix_now())
    }

    /// Reads the lock: `Some((is_ours, cas))` if it exists.
    async fn read(&self, deadline: Instant) -> Result<Option<(bool, u64)>> {
        let keys = [self.key.as_str()];
        match self
            .client
            .run_on(self.server, &Request::Gets(&self.key), deadline, "lock")
            .await?
        {
            Reply::Values(mut values) => Ok(values
                .pop()
                .flatten()
                .map(|item| (item.data == self.token.as_bytes(), item.cas))),
            other => Err(unexpected(&keys, other)),
        }
    }

    /// Extends the lock's lifetime if it is still ours, atomically (`gets`
    /// then `cas`): a lock that expired and was taken by another process is
    /// left alone. A lock that vanished (expired between two renewals,
    /// evicted) is taken back if nobody else has it. `false`: lost it.
    async fn renew(&self) -> Result<bool> {
        let deadline = deadline_in(self.timeout);
        let verb = match self.read(deadline).await? {
            Some((true, cas)) => Verb::Cas(cas),
            Some((false, _)) => return Ok(false),
            None => Verb::Add,
        };
        let reply = self
            .client
            .run_on(
                self.server,
                &Request::Store {
                    verb,
                    key: &self.key,
                    exptime: self.exptime(),
                    data: self.token.as_bytes(),
                },
                deadline,
                "lock",
            )
            .await?;
        Ok(matches!(reply, Reply::Stored))
    }

    /// Deletes the lock only if it is still ours: `gets`, compare the
    /// token, then `md <key> C<cas>`, which deletes only if nothing changed
    /// since the `gets`. Servers older than 1.6 lack `md`: there the lock is
    /// first overwritten by a tombstone with `cas` (atomic, owner-checked)
    /// and the tombstone then deleted.
    async fn release(&self) -> Result<()> {
        let deadline = deadline_in(self.timeout);
        let Some((true, cas)) = self.read(deadline).await? else {
            return Ok(());
        };
        let reply = self
            .client
            .run_on(
                self.server,
                &Request::DeleteIfCas(&self.key, cas),
                deadline,
                "unlock",
            )
            .await?;
        if !matches!(reply, Reply::Unsupported) {
            return Ok(());
        }
        self.release_with_tombstone(cas, deadline).await
    }

    async fn release_with_tombstone(&self, cas: u64, deadline: Instant) -> Result<()> {
        let tombstone = format!("released:{}", self.token);
        let reply = self
            .client
            .run_on(
                self.server,
                &Request::Store {
                    verb: Verb::Cas(cas),
                    key: &self.key,
                    // Outlives the delete below by far, so the delete can
                    // only ever remove our own tombstone.
                    exptime: exptime(Some(Duration::from_secs(5)), unix_now()),
                    data: tombstone.as_bytes(),
                },
                deadline,
                "unlock",
            )
            .await?;
        if matches!(reply, Reply::Stored) {
            self.client
                .run_on(self.server, &Request::Delete(&self.key), deadline, "unlock")
                .await?;
        }
        Ok(())
    }
}

fn unexpected(keys: &[&str], reply: Reply) -> Error {
    Error::backend(
        "memcached",
        format!("lock {keys:?}: unexpected reply {reply:?}"),
    )
}

/// A held lock: its owner record and the task renewing it.
struct Held {
    owner: Arc<Owner>,
    renewal: Option<tokio::task::AbortHandle>,
}

impl Held {
    /// Starts renewing every third of the lock's lifetime, so two renewals
    /// can fail in a row before the lock lapses.
    fn start(owner: Owner) -> Held {
        let owner = Arc::new(owner);
        let renewal = tokio::runtime::Handle::try_current().ok().map(|handle| {
            let owner = owner.clone();
            let period = (owner.lock_timeout / 3).max(Duration::from_millis(50));
            handle
                .spawn(async move {
                    loop {
                        tokio::time::sleep(period).await;
                        match owner.renew().await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!(key = %owner.key, "creation lock lost to another holder; the creator keeps running");
                                break;
                            }
                            Err(err) => tracing::debug!(key = %owner.key, "creation lock renewal failed: {err}"),
                        }
                    }
                })
                .abort_handle()
        });
        Held { owner, renewal }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}

impl HeldLock for Held {
    fn release(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        let owner = self.owner.clone();
        Box::pin(async move {
            if let Err(err) = owner.release().await {
                // The lock expires by its lifetime anyway.
                tracing::debug!(key = %owner.key, "creation lock release failed: {err}");
            }
        })
    }
}

#[async_trait]
impl CreationLock for MemcachedLock {
    async fn try_acquire(&self, lock_key: &str) -> Result<Option<LockGuard>> {
        self.take(lock_key, "").await
    }

    /// Polls with a jittered exponential back-off from 2 ms to 10 ms:
    /// memcached cannot notify, so this bounds how late a waiter in another
    /// process learns that the holder is done (at most 10 ms, about 7 ms on
    /// average once the back-off has grown), at about 130 (at most 200) tiny
    /// requests per second per waiting process (waiters in one process
    /// share one poller).
    ///
    /// When the holder is itself a waiter (its token carries
    /// [`WAITER_MARK`]), the creator it waited for is done and the holder is
    /// only re-reading: the next try comes after the shortest pause instead
    /// of a grown one, once per such holder (should it turn creator, the
    /// back-off grows again as usual). Without this, waiters that take the
    /// lock one after another just to re-read would push each other back by
    /// a whole pause.
    async fn acquire(&self, lock_key: &str, wait: Duration) -> Result<Option<LockGuard>> {
        let deadline = deadline_in(wait);
        let mut pause = FIRST_POLL;
        let mut waiter_seen: Option<Vec<u8>> = None;
        let mut lifetime_checked: Option<Vec<u8>> = None;
        loop {
            if let Some(guard) = self.take(lock_key, WAITER_MARK).await? {
                return Ok(Some(guard));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let holder = self.holder(lock_key, deadline_in(self.timeout)).await?;
            if holder.is_some() && holder != lifetime_checked {
                // Best effort: a server that cannot say (an early 1.6 meta
                // dialect) must not stop the wait.
                if let Err(err) = self.limit_lifetime(lock_key).await {
                    tracing::debug!(lock_key, "lock lifetime check failed: {err}");
                }
                lifetime_checked.clone_from(&holder);
            }
            // Released between the two requests, or held by a waiter not
            // seen before: try again soon.
            let quick = match &holder {
                None => true,
                Some(h) => h.starts_with(WAITER_MARK.as_bytes()) && waiter_seen != holder,
            };
            if quick {
                waiter_seen = holder;
                tokio::time::sleep(FIRST_POLL.min(deadline - now)).await;
                continue;
            }
            // Between half and all of `pause`, so pollers drift apart.
            let jittered = pause.mul_f64(0.5 + (random_u64() % 1000) as f64 / 2000.0);
            tokio::time::sleep(jittered.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }
}

impl MemcachedLock {
    /// One `add` of the lock with a new token starting with `mark`.
    async fn take(&self, lock_key: &str, mark: &str) -> Result<Option<LockGuard>> {
        let key = memcached_key(lock_key, &self.prefix).into_owned();
        let token = new_token(mark);
        let add = Request::Store {
            verb: Verb::Add,
            key: &key,
            exptime: exptime(Some(self.lock_timeout), unix_now()),
            data: token.as_bytes(),
        };
        let (server, reply) = self
            .client
            .run_routed(
                Keyed::own(&key).route,
                &add,
                deadline_in(self.timeout),
                "lock",
            )
            .await?;
        match reply {
            Reply::Stored => Ok(Some(LockGuard::new(Held::start(Owner {
                client: self.client.clone(),
                key,
                server,
                token,
                lock_timeout: self.lock_timeout,
                timeout: self.timeout,
            })))),
            Reply::NotStored => Ok(None),
            other => Err(unexpected(&[&key], other)),
        }
    }

    /// Gives a lock without expiry the lifetime of ours, so that it lapses
    /// after `lock_timeout` like a crashed holder's. Tankard's locks always
    /// expire, so such a lock was left by something else (a `set` with
    /// exptime 0, another client) and would otherwise make every miss on
    /// its key wait `wait_timeout`, forever. Only a lock with *no* expiry
    /// is touched: extending a live holder's (or a crashed one's) lifetime
    /// at every new waiter's sight would keep a dead holder's lock alive as
    /// long as waiters keep coming. If the lock changed hands between the
    /// two requests, the `touch` sets no more than a holder's own renewal
    /// would. Needs `mg` (memcached ≥ 1.6); older servers answer `ERROR`
    /// and such a lock stays until removed by hand.
    async fn limit_lifetime(&self, lock_key: &str) -> Result<()> {
        let key = memcached_key(lock_key, &self.prefix);
        let keyed = Keyed::own(&key);
        let deadline = deadline_in(self.timeout);
        let ttl = self
            .client
            .run(keyed.route, &Request::Ttl(keyed.key), deadline, "lock")
            .await?;
        if !matches!(ttl, Reply::Ttl(-1)) {
            return Ok(());
        }
        tracing::warn!(key = %keyed.key, "creation lock without expiry (not written by Tankard); it now expires after lock_timeout");
        let touch = Request::Touch(keyed.key, exptime(Some(self.lock_timeout), unix_now()));
        self.client
            .run(keyed.route, &touch, deadline, "lock")
            .await?;
        Ok(())
    }

    /// The current holder's token, if the lock is held.
    async fn holder(&self, lock_key: &str, deadline: Instant) -> Result<Option<Vec<u8>>> {
        let key = memcached_key(lock_key, &self.prefix);
        let keyed = Keyed::own(&key);
        match self
            .client
            .run(keyed.route, &Request::Get(&[keyed.key]), deadline, "lock")
            .await?
        {
            Reply::Values(mut values) => Ok(values.pop().flatten().map(|item| item.data)),
            other => Err(unexpected(&[keyed.key], other)),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A string no other test run uses.
    pub(in crate::backend::memcached) fn unique() -> String {
        new_token("")
    }

    fn server() -> String {
        let url =
            std::env::var("TANKARD_MEMCACHED_URL").unwrap_or_else(|_| "127.0.0.1:21211".into());
        url.split([';', ',']).next().unwrap().trim().to_owned()
    }

    async fn value(client: &Client, key: &str) -> Option<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(2);
        match client.run(0, &Request::Get(&[key]), deadline, "test").await {
            Ok(Reply::Values(mut v)) => v.pop().flatten().map(|item| item.data),
            other => panic!(
                "memcached at {} not answering ({other:?}): run scripts/services",
                server()
            ),
        }
    }

    /// The release used on servers without `md`: owner-checked as well.
    #[tokio::test]
    async fn tombstone_release_deletes_only_the_owners_lock() {
        let client = Arc::new(Client::new(&[server()], 1 << 20));
        let owner = |key: &str| Owner {
            client: client.clone(),
            key: key.to_owned(),
            server: 0,
            token: new_token(""),
            lock_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        };
        let key = format!("tankard-unit-{}", new_token(""));
        let deadline = Instant::now() + Duration::from_secs(2);
        for stolen in [false, true] {
            let mine = owner(&key);
            let add = Request::Store {
                verb: Verb::Add,
                key: &key,
                exptime: mine.exptime(),
                data: mine.token.as_bytes(),
            };
            assert!(matches!(
                client.run(0, &add, deadline, "test").await.unwrap(),
                Reply::Stored
            ));
            let (_, cas) = mine.read(deadline).await.unwrap().unwrap();
            if stolen {
                let theirs = Request::Store {
                    verb: Verb::Set,
                    key: &key,
                    exptime: 30,
                    data: b"someone-else",
                };
                client.run(0, &theirs, deadline, "test").await.unwrap();
            }
            mine.release_with_tombstone(cas, deadline).await.unwrap();
            let left = value(&client, &key).await;
            if stolen {
                assert_eq!(left.as_deref(), Some(&b"someone-else"[..]));
            } else {
                assert_eq!(left, None);
            }
        }
        client
            .run(0, &Request::Delete(&key), deadline, "test")
            .await
            .unwrap();
    }

    #[test]
    fn tokens_are_unique() {
        let tokens: std::collections::HashSet<String> = (0..1000).map(|_| new_token("")).collect();
        assert_eq!(tokens.len(), 1000);
    }
}
