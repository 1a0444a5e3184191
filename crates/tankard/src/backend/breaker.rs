//! The circuit breaker in front of every network backend (DESIGN §4
//! `retry_after`, §5 rule 8): once an operation fails because the server
//! could not be reached, the region skips its backend for `retry_after`,
//! so an outage costs a call what an uncached call costs instead of a
//! refused connection or a whole `timeout` per operation.
//!
//! # States
//!
//! - **Closed**: every operation goes to the server. The only cost is one
//!   atomic load per operation.
//! - **Open** until a time: every operation (load, store, remove, the
//!   counter bumps, taking and waiting for a creation lock) fails at once
//!   with [`Error::unavailable`], without touching the network; the region
//!   counts it as a backend error and bypasses, as for any other failure.
//!   A creation lock released while open is not released: it expires by
//!   its lifetime, which is what a lock whose release failed does anyway.
//! - **Probing**: the first operation after `retry_after` goes to the
//!   server; every other caller keeps skipping until it answers. An answer
//!   of any kind, an error reply included, closes the breaker; another
//!   connection failure opens it for another `retry_after`. A probe whose
//!   caller is cancelled hands the probe on to the next operation.
//!
//! Only errors a backend marked with
//! [`Error::into_connection_failure`] open it: refused, reset, closed,
//! timed out. A server that answers with an error, a value that does not
//! decode, an entry over `max_entry_bytes` say the server is there, and
//! skipping it would only lose cache hits.
//!
//! # A hung server
//!
//! A call makes several operations (read, take the lock, read again,
//! write, release). With the breaker, the first one that times out opens
//! it, and the call's later operations skip: a call waits at most one
//! `timeout` on a hung server, and calls that start during the hang skip
//! at once. Calls already waiting when it hung each wait their one
//! `timeout`.
//!
//! # Time
//!
//! The breaker reads the manager's [`Clock`] (the coarse copy lookups
//! read), and only while open: a closed breaker never reads the time. A
//! manual clock therefore drives it in tests, as it drives expiry.
//!
//! The breaker serves one region's backend in one process; other processes
//! find out for themselves, each with one failed operation.
//! `retry_after = 0` turns it off: every operation tries the server.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;

use super::{Backend, BreakerState, Loaded, Location, Purged, RegionScope, Scope, Usage};
use crate::backend::lock::{CreationLock, HeldLock, LockGuard};
use crate::clock::Clock;
use crate::entry::Generations;
use crate::error::{Error, Result};
use crate::options::RegionOptions;

/// `state` of a closed breaker. Open states are the clock time (ms, at
/// least 1) until which the backend is skipped.
const CLOSED: u64 = 0;
/// `state` while one operation probes the server.
const PROBING: u64 = u64::MAX;

/// The breaker of one region's backend.
pub(crate) struct Breaker {
    backend: &'static str,
    region: String,
    /// `retry_after` in ms; 0 turns the breaker off.
    retry_after_ms: u64,
    clock: Clock,
    /// [`CLOSED`], [`PROBING`], or the time the backend is skipped until.
    /// One word, so that the closed check is a single load and every
    /// transition a single atomic step.
    state: AtomicU64,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state.load(Ordering::Relaxed) {
            CLOSED => "closed".to_owned(),
            PROBING => "probing".to_owned(),
            until => format!("open until {until} ms"),
        };
        f.debug_struct("Breaker")
            .field("backend", &self.backend)
            .field("retry_after_ms", &self.retry_after_ms)
            .field("state", &state)
            .finish()
    }
}

/// How an operation may go to the server.
enum Admission {
    /// The breaker is closed.
    Pass,
    /// This operation is the one probe after `retry_after`.
    Probe,
}

impl Breaker {
    pub(crate) fn new(
        backend: &'static str,
        region: &str,
        retry_after: Duration,
        clock: Clock,
    ) -> Breaker {
        Breaker {
            backend,
            region: region.to_owned(),
            retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            clock,
            state: AtomicU64::new(CLOSED),
        }
    }

    /// Whether operations go to the server right now (no probe pending).
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }

    /// The state as the region reports it.
    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            until if until != PROBING && self.clock.recent_ms() < until => BreakerState::Open,
            _ => BreakerState::Probing,
        }
    }

    /// Tells the `metrics` recorder whether the breaker is open (its
    /// `tankard_breaker_open` gauge), at each change.
    fn report(&self, open: bool) {
        metrics::gauge!(
            "tankard_breaker_open",
            "region" => self.region.clone(),
            "backend" => self.backend,
        )
        .set(if open { 1.0 } else { 0.0 });
    }

    #[inline]
    fn admit(&self, may_probe: bool) -> Result<Admission> {
        let state = self.state.load(Ordering::Acquire);
        if state == CLOSED {
            return Ok(Admission::Pass);
        }
        self.admit_open(state, may_probe)
    }

    /// [`admit`](Self::admit) past the closed case: skip, or become the probe.
    #[cold]
    #[inline(never)]
    fn admit_open(&self, mut state: u64, may_probe: bool) -> Result<Admission> {
        loop {
            if state == CLOSED {
                return Ok(Admission::Pass);
            }
            if state == PROBING || !may_probe || self.clock.recent_ms() < state {
                return Err(Error::unavailable(self.backend));
            }
            // Past `retry_after`: exactly one caller wins this exchange.
            match self
                .state
                .compare_exchange(state, PROBING, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(Admission::Probe),
                Err(now) => state = now,
            }
        }
    }

    /// The time a breaker opened now stays open until.
    fn open_until(&self) -> u64 {
        self.clock
            .recent_ms()
            .saturating_add(self.retry_after_ms)
            .clamp(1, PROBING - 1)
    }

    /// An operation let through while closed failed to reach the server.
    #[cold]
    fn open(&self, err: &Error) {
        if self.retry_after_ms == 0 {
            return;
        }
        // The maximum: a later failure extends an open breaker, and a probe
        // in flight (the largest value) keeps the decision.
        let before = self.state.fetch_max(self.open_until(), Ordering::AcqRel);
        if before == CLOSED {
            self.report(true);
            tracing::warn!(
                region = %self.region,
                "{} backend unreachable ({err}); skipping it for {:?}, then one call tries it again",
                self.backend,
                Duration::from_millis(self.retry_after_ms),
            );
        }
    }

    /// Runs one operation through the breaker. `op` is called only if the
    /// operation goes to the server.
    #[inline]
    pub(crate) async fn call<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.run(true, op).await
    }

    /// Like [`call`](Self::call), but never as the probe: for operations
    /// that may hold on for long on a healthy server (waiting for a
    /// creation lock), during which every other caller would keep skipping.
    pub(crate) async fn call_unless_open<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.run(false, op).await
    }

    #[inline]
    async fn run<T, F, Fut>(&self, may_probe: bool, op: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match self.admit(may_probe)? {
            Admission::Pass => {
                let result = op().await;
                if let Err(err) = &result
                    && err.is_connection_failure()
                {
                    self.open(err);
                }
                result
            }
            Admission::Probe => {
                let probe = Probe {
                    breaker: self,
                    answered: false,
                };
                let result = op().await;
                probe.answered(result.as_ref().err());
                result
            }
        }
    }
}

/// The probe in flight. Dropped unanswered (its caller was cancelled), it
/// lets the next operation probe instead, so the breaker never stays in
/// [`PROBING`].
struct Probe<'a> {
    breaker: &'a Breaker,
    answered: bool,
}

impl Probe<'_> {
    fn answered(mut self, failure: Option<&Error>) {
        self.answered = true;
        let breaker = self.breaker;
        match failure {
            Some(err) if err.is_connection_failure() => {
                tracing::debug!(
                    region = %breaker.region,
                    "{} backend still unreachable ({err}); skipping it for another {:?}",
                    breaker.backend,
                    Duration::from_millis(breaker.retry_after_ms),
                );
                breaker.state.store(breaker.open_until(), Ordering::Release);
            }
            _ => {
                tracing::info!(
                    region = %breaker.region,
                    "{} backend answers again; using it",
                    breaker.backend,
                );
                breaker.state.store(CLOSED, Ordering::Release);
                breaker.report(false);
            }
        }
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if !self.answered {
            // Open, and already past its time: the next operation probes.
            let now = self.breaker.clock.recent_ms().max(1);
            self.breaker.state.store(now, Ordering::Release);
        }
    }
}

/// Puts the circuit breaker of `options.retry_after`, reading `clock`,
/// around a network backend and its creation lock.
pub(crate) fn guard(
    inner: Arc<dyn Backend>,
    options: &RegionOptions,
    clock: Clock,
) -> Arc<dyn Backend> {
    let breaker = Arc::new(Breaker::new(
        inner.name(),
        &options.name,
        options.retry_after,
        clock,
    ));
    Arc::new(Guarded {
        lock: Arc::new(GuardedLock {
            inner: inner.creation_lock(),
            breaker: breaker.clone(),
        }),
        inner,
        breaker,
    })
}

/// A backend behind its breaker.
#[derive(Debug)]
struct Guarded {
    inner: Arc<dyn Backend>,
    breaker: Arc<Breaker>,
    lock: Arc<GuardedLock>,
}

#[async_trait]
impl Backend for Guarded {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn load(&self, at: &Location<'_>) -> Result<Loaded> {
        self.breaker.call(|| self.inner.load(at)).await
    }

    async fn load_many(&self, at: &[Location<'_>]) -> Result<Vec<Loaded>> {
        self.breaker.call(|| self.inner.load_many(at)).await
    }

    async fn generations(&self, scope: &Scope) -> Result<Generations> {
        self.breaker.call(|| self.inner.generations(scope)).await
    }

    async fn store(&self, at: &Location<'_>, entry: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        self.breaker.call(|| self.inner.store(at, entry, ttl)).await
    }

    async fn remove(&self, at: &Location<'_>) -> Result<bool> {
        self.breaker.call(|| self.inner.remove(at)).await
    }

    async fn bump_namespace(&self, scope: &Scope) -> Result<()> {
        self.breaker.call(|| self.inner.bump_namespace(scope)).await
    }

    async fn bump_region(&self, region: &RegionScope) -> Result<()> {
        self.breaker.call(|| self.inner.bump_region(region)).await
    }

    async fn soft_invalidate(&self, region: &RegionScope, at_ms: u64) -> Result<()> {
        self.breaker
            .call(|| self.inner.soft_invalidate(region, at_ms))
            .await
    }

    fn creation_lock(&self) -> Arc<dyn CreationLock> {
        self.lock.clone()
    }

    // Not behind the breaker: the backplane has its own connection and
    // reports its own state to the L1 it serves.
    fn backplane(&self) -> Option<Arc<dyn super::backplane::Backplane>> {
        self.inner.backplane()
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<Purged> {
        self.breaker.call(|| self.inner.purge_expired(now_ms)).await
    }

    async fn purge_expired_with(
        &self,
        now_ms: u64,
        progress: &(dyn for<'p> Fn(&'p Purged) + Send + Sync),
    ) -> Result<Purged> {
        self.breaker
            .call(|| self.inner.purge_expired_with(now_ms, progress))
            .await
    }

    async fn usage(&self) -> Result<Usage> {
        self.breaker.call(|| self.inner.usage()).await
    }

    fn breaker(&self) -> Option<BreakerState> {
        Some(self.breaker.state())
    }
}

/// A backend's creation lock behind the backend's breaker.
#[derive(Debug)]
struct GuardedLock {
    inner: Arc<dyn CreationLock>,
    breaker: Arc<Breaker>,
}

impl GuardedLock {
    fn wrap(&self, guard: LockGuard) -> LockGuard {
        match guard.into_held() {
            Some(held) => LockGuard::new(GuardedHeld {
                held,
                breaker: self.breaker.clone(),
            }),
            None => LockGuard::none(),
        }
    }
}

#[async_trait]
impl CreationLock for GuardedLock {
    async fn try_acquire(&self, lock_key: &str) -> Result<Option<LockGuard>> {
        let guard = self
            .breaker
            .call(|| self.inner.try_acquire(lock_key))
            .await?;
        Ok(guard.map(|guard| self.wrap(guard)))
    }

    async fn acquire(&self, lock_key: &str, wait: Duration) -> Result<Option<LockGuard>> {
        // Waiting on a healthy server can last `wait_timeout`: never the
        // probe. A call reaches this only after `try_acquire` got through.
        let guard = self
            .breaker
            .call_unless_open(|| self.inner.acquire(lock_key, wait))
            .await?;
        Ok(guard.map(|guard| self.wrap(guard)))
    }
}

/// A held lock whose release is skipped while the breaker is open: the
/// lock then expires by its lifetime (its renewal stops with it).
struct GuardedHeld {
    held: Box<dyn HeldLock>,
    breaker: Arc<Breaker>,
}

impl HeldLock for GuardedHeld {
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        if self.breaker.is_closed() {
            return self.held.release();
        }
        tracing::debug!(
            "{} backend skipped: a creation lock is left to expire by its lifetime",
            self.breaker.backend
        );
        // Dropping the held lock stops its renewal.
        drop(self.held);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    const RETRY: Duration = Duration::from_millis(200);

    fn breaker(clock: &Clock) -> Breaker {
        Breaker::new("test", "r", RETRY, clock.clone())
    }

    fn refused() -> Error {
        Error::backend("test", "connection refused").into_connection_failure()
    }

    /// Runs one operation that ends with `outcome`, counting the runs.
    async fn op(breaker: &Breaker, runs: &AtomicUsize, outcome: Result<()>) -> Result<()> {
        breaker
            .call(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                outcome
            })
            .await
    }

    #[tokio::test]
    async fn a_connection_failure_skips_the_backend_until_one_probe_answers() {
        let clock = Clock::manual(1_000);
        let b = breaker(&clock);
        let runs = AtomicUsize::new(0);
        op(&b, &runs, Ok(())).await.unwrap();
        assert!(op(&b, &runs, Err(refused())).await.is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 2);

        // Open: nothing runs, every call is told why.
        for _ in 0..10 {
            let err = op(&b, &runs, Ok(())).await.unwrap_err();
            assert!(err.is_unavailable() && err.is_backend(), "{err}");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);

        // One probe per period; a failed one opens it again.
        clock.advance(RETRY);
        assert!(op(&b, &runs, Err(refused())).await.is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(op(&b, &runs, Ok(())).await.unwrap_err().is_unavailable());
        clock.advance(RETRY - Duration::from_millis(1));
        assert!(op(&b, &runs, Ok(())).await.unwrap_err().is_unavailable());
        assert_eq!(runs.load(Ordering::SeqCst), 3);

        // A probe that gets through closes it.
        clock.advance(Duration::from_millis(1));
        op(&b, &runs, Ok(())).await.unwrap();
        op(&b, &runs, Ok(())).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        assert!(b.is_closed());
    }

    #[tokio::test]
    async fn errors_from_a_server_that_answered_never_open_it() {
        let clock = Clock::manual(1_000);
        let b = breaker(&clock);
        let runs = AtomicUsize::new(0);
        for err in [
            Error::backend("test", "WRONGTYPE"),
            Error::too_large(10, 5),
            Error::timeout("test", "read"),
        ] {
            assert!(op(&b, &runs, Err(err)).await.is_err());
        }
        op(&b, &runs, Ok(())).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 4);

        // An error reply to the probe closes it too: the server is there.
        op(&b, &runs, Err(refused())).await.unwrap_err();
        clock.advance(RETRY);
        let reply = Error::backend("test", "ERR script");
        assert!(
            !op(&b, &runs, Err(reply))
                .await
                .unwrap_err()
                .is_unavailable()
        );
        assert!(b.is_closed());
    }

    #[tokio::test]
    async fn other_callers_skip_while_the_probe_is_out_and_a_cancelled_probe_hands_on() {
        let clock = Clock::manual(1_000);
        let b = breaker(&clock);
        let runs = AtomicUsize::new(0);
        op(&b, &runs, Err(refused())).await.unwrap_err();
        clock.advance(RETRY);

        // The probe hangs; everyone else skips meanwhile.
        let (answer, answered) = tokio::sync::oneshot::channel::<Result<()>>();
        let mut probe = tokio_test::task::spawn(b.call(|| async {
            runs.fetch_add(1, Ordering::SeqCst);
            answered.await.unwrap()
        }));
        assert!(probe.poll().is_pending());
        for _ in 0..5 {
            assert!(op(&b, &runs, Ok(())).await.unwrap_err().is_unavailable());
        }
        // Not a probe either: waiting for a lock.
        let waited = b.call_unless_open(|| async { Ok(()) }).await;
        assert!(waited.unwrap_err().is_unavailable());
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the failure and the probe");

        // Cancelled before it answered: the next operation probes.
        drop(probe);
        drop(answer);
        op(&b, &runs, Ok(())).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(b.is_closed());
    }

    #[tokio::test]
    async fn a_lock_released_while_open_is_left_to_expire() {
        #[derive(Debug, Default)]
        struct Lock(Arc<AtomicUsize>);
        struct Held(Arc<AtomicUsize>);
        impl HeldLock for Held {
            fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Box::pin(async {})
            }
        }
        #[async_trait]
        impl CreationLock for Lock {
            async fn try_acquire(&self, _: &str) -> Result<Option<LockGuard>> {
                Ok(Some(LockGuard::new(Held(self.0.clone()))))
            }
            async fn acquire(&self, _: &str, _: Duration) -> Result<Option<LockGuard>> {
                Ok(Some(LockGuard::new(Held(self.0.clone()))))
            }
        }
        let clock = Clock::manual(1_000);
        let breaker = Arc::new(breaker(&clock));
        let released = Arc::new(AtomicUsize::new(0));
        let lock = GuardedLock {
            inner: Arc::new(Lock(released.clone())),
            breaker: breaker.clone(),
        };
        let first = lock.try_acquire("k").await.unwrap().unwrap();
        let second = lock.acquire("k", RETRY).await.unwrap().unwrap();
        first.release().await;
        assert_eq!(released.load(Ordering::SeqCst), 1);

        breaker.open(&refused());
        second.release().await;
        assert_eq!(released.load(Ordering::SeqCst), 1, "released while open");
        assert!(lock.try_acquire("k").await.unwrap_err().is_unavailable());
    }

    #[tokio::test]
    async fn retry_after_zero_turns_it_off() {
        let clock = Clock::manual(1_000);
        let b = Breaker::new("test", "r", Duration::ZERO, clock);
        let runs = AtomicUsize::new(0);
        for _ in 0..3 {
            op(&b, &runs, Err(refused())).await.unwrap_err();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
