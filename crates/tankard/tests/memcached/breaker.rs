//! The circuit breaker (`retry_after`, DESIGN §5 rule 8) on a memcached
//! of the test's own that freezes or dies. The client already skips a
//! failed server for a second of its own (and fails its keys over to the
//! other servers); the breaker is what skips the region's backend when no
//! server is left, for `retry_after` and not a fixed second, with one
//! probe at a time. The managers read a manual clock, so the breaker stays
//! open exactly as long as a test says.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, join_all};
use tankard::{BreakerState, CacheManager, Clock};

use crate::support::{OwnServers, config, unique_prefix};

#[path = "../support/closing_port.rs"]
mod closing_port;
use closing_port::ClosingPort;

const TIMEOUT: Duration = Duration::from_millis(300);
const RETRY_AFTER: Duration = Duration::from_millis(200);
const CREATOR: Duration = Duration::from_millis(100);
/// The most a call may take on a hung server: its one `timeout` and its
/// creator, plus one more `timeout` of slack for a loaded machine.
const HUNG_BOUND: Duration = Duration::from_millis(2 * 300 + 100);
/// A little longer than the client's own skip of a failed server
/// (`backend/memcached/client.rs`, one second): past it, only the breaker
/// keeps calls off the server.
const CLIENT_SKIP: Duration = Duration::from_millis(1100);

fn manager(own: &OwnServers, clock: &Clock, extra: &[(&str, &str)]) -> CacheManager {
    let mut options = vec![
        ("cache.expire", "300"),
        ("cache.timeout", "300ms"),
        ("cache.retry_after", "200ms"),
    ];
    options.extend_from_slice(extra);
    let config = config(&own.url(), &unique_prefix("breaker"), &options);
    CacheManager::with_clock(config, clock.clone()).unwrap()
}

/// A manual clock at the wall clock's time.
fn clock_now() -> Clock {
    Clock::manual(Clock::system().now_ms())
}

/// A creator that takes `took`, counting its runs.
fn creator(
    runs: &Arc<AtomicUsize>,
    value: String,
    took: Duration,
) -> impl FnOnce() -> BoxFuture<'static, String> {
    let runs = runs.clone();
    move || {
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(took).await;
            value
        })
    }
}

/// `calls` calls at once, each on its own key, each timed; all must
/// return their creator's value. The longest wait.
async fn concurrent(
    ns: &tankard::Cache,
    runs: &Arc<AtomicUsize>,
    tag: &str,
    calls: usize,
) -> Duration {
    let timed = (0..calls).map(|i| {
        let (ns, key) = (ns.clone(), format!("{tag}-{i}"));
        let creator = creator(runs, key.clone(), CREATOR);
        async move {
            let started = Instant::now();
            let value = ns.get_or_create(&key, creator).await.unwrap();
            assert_eq!(*value, key);
            started.elapsed()
        }
    });
    join_all(timed).await.into_iter().max().unwrap()
}

/// Moves the clock past `retry_after` (a probe may go out) and writes and
/// reads until the cache is used again (bounded).
async fn until_cached(ns: &tankard::Cache, clock: &Clock) {
    let started = Instant::now();
    loop {
        clock.advance(RETRY_AFTER);
        if ns.put("probe", 1u8).await.is_ok() && ns.get::<u8>("probe").await.unwrap().is_some() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the cache was not used again after the server came back"
        );
        // The client's own skip of the failed server runs on real time.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_costs_a_call_one_timeout_at_most() {
    let own = OwnServers::start(1);
    let clock = clock_now();
    let cache = manager(&own, &clock, &[]);
    let ns = cache.namespace("n");
    let runs = Arc::new(AtomicUsize::new(0));
    ns.put("warm", 1u8).await.unwrap();

    own.freeze(0); // SIGSTOP: the kernel still accepts, nobody answers
    let worst = concurrent(&ns, &runs, "during", 16).await;
    assert!(
        worst < HUNG_BOUND,
        "a call took {worst:?} on a frozen server (timeout {TIMEOUT:?}, creator {CREATOR:?})"
    );
    let alone = manager(&own, &clock_now(), &[]);
    let started = Instant::now();
    let value = alone
        .namespace("n")
        .get_or_create("alone", creator(&runs, "alone".into(), CREATOR))
        .await;
    assert_eq!(*value.unwrap(), "alone");
    let took = started.elapsed();
    assert!(
        took < HUNG_BOUND,
        "one call took {took:?} on a frozen server (timeout {TIMEOUT:?}, creator {CREATOR:?})"
    );

    // Past the client's own skip, the breaker still keeps calls off it.
    tokio::time::sleep(CLIENT_SKIP).await;
    let started = Instant::now();
    let value = ns.get_or_create("later", creator(&runs, "later".into(), CREATOR));
    assert_eq!(*value.await.unwrap(), "later");
    let took = started.elapsed();
    assert!(took < TIMEOUT, "a call waited {took:?} on an open breaker");

    own.thaw(0);
    until_cached(&ns, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_skipped_without_network_and_found_back_by_one_probe() {
    let mut own = OwnServers::start(1);
    let clock = clock_now();
    let cache = manager(&own, &clock, &[]);
    let region = cache.default_region();
    let ns = cache.namespace("n");
    let runs = Arc::new(AtomicUsize::new(0));
    let call = |value: &str| ns.get_or_create("k", creator(&runs, value.into(), Duration::ZERO));
    assert_eq!(*call("v1").await.unwrap(), "v1");
    assert_eq!(*call("v2").await.unwrap(), "v1");
    assert_eq!(region.breaker(), Some(BreakerState::Closed));

    own.kill(0);
    // The first call finds the server gone and opens the breaker.
    assert_eq!(*call("down").await.unwrap(), "down");
    let errors = region.stats().backend_errors;
    assert!(errors >= 1);
    assert_eq!(region.breaker(), Some(BreakerState::Open));

    // From now on every attempt to reach the server shows on its port.
    let (_, port) = own
        .addr(0)
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.parse().unwrap()))
        .unwrap();
    let port = ClosingPort::bind(port).await;
    tokio::time::sleep(CLIENT_SKIP).await;
    for i in 0..50 {
        let value = format!("skip-{i}");
        assert_eq!(*call(&value).await.unwrap(), value);
    }
    concurrent(&ns, &runs, "skip", 16).await;
    assert_eq!(
        port.accepted(),
        0,
        "calls reached for a dead server while its breaker was open"
    );
    assert!(region.stats().backend_errors >= errors + 66);

    // After retry_after, 16 calls at once make one connection between them.
    clock.advance(RETRY_AFTER);
    assert_eq!(
        region.breaker(),
        Some(BreakerState::Probing),
        "a probe is due"
    );
    concurrent(&ns, &runs, "probe", 16).await;
    assert_eq!(port.accepted(), 1, "more than one probe went out");
    assert_eq!(
        region.breaker(),
        Some(BreakerState::Open),
        "the probe failed"
    );

    // The server is back: a probe finds it and caching resumes.
    port.close().await;
    own.restart(0);
    until_cached(&ns, &clock).await;
    assert_eq!(region.breaker(), Some(BreakerState::Closed));
    let before = runs.load(Ordering::SeqCst);
    assert_eq!(*call("back").await.unwrap(), "back");
    assert_eq!(*call("unused").await.unwrap(), "back");
    assert_eq!(runs.load(Ordering::SeqCst), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_with_errors_is_never_skipped() {
    // memcached refuses items over its `-I` (1 MiB by default) with
    // SERVER_ERROR, and answers everything else.
    let own = OwnServers::start(1);
    let cache = manager(&own, &clock_now(), &[("cache.on_backend_error", "error")]);
    let ns = cache.namespace("n");
    for _ in 0..3 {
        let err = ns.put("big", vec![7u8; 2 << 20]).await.unwrap_err();
        assert!(
            err.is_backend() && !err.is_unavailable(),
            "an error reply must not open the breaker: {err}"
        );
    }
    ns.put("small", 1u8).await.unwrap();
    assert_eq!(*ns.get::<u8>("small").await.unwrap().unwrap(), 1);
}
