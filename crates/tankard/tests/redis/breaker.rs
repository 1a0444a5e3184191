//! The circuit breaker (`retry_after`, DESIGN §5 rule 8) on a private
//! Redis that hangs or dies: a call waits at most one `timeout` on a hung
//! server, calls skip a dead one without touching the network, one probe
//! per `retry_after` finds it back, and a server that answers with an
//! error is never skipped. The managers read a manual clock, so the
//! breaker stays open exactly as long as a test says.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, join_all};
use tankard::{CacheManager, Clock, Config};

use crate::common::{PrivateServer, toml_for, unique_prefix};

#[path = "../support/closing_port.rs"]
mod closing_port;
use closing_port::ClosingPort;

const TIMEOUT: Duration = Duration::from_millis(300);
const RETRY_AFTER: Duration = Duration::from_millis(200);
const CREATOR: Duration = Duration::from_millis(100);
/// The most a call may take on a hung server: its one `timeout` and its
/// creator, plus one more `timeout` of slack for a loaded machine. Without
/// the breaker a miss pays a timeout per operation, four of them.
const HUNG_BOUND: Duration = Duration::from_millis(2 * 300 + 100);

/// A manual clock at the wall clock's time.
fn clock_now() -> Clock {
    Clock::manual(Clock::system().now_ms())
}

fn manager(url: &str, prefix: &str, clock: &Clock, extra: &str) -> CacheManager {
    let toml = toml_for(
        "ext:redis",
        url,
        prefix,
        &format!("timeout = \"300ms\"\nretry_after = \"200ms\"\n{extra}"),
    );
    CacheManager::with_clock(Config::from_toml_str(&toml).unwrap(), clock.clone()).unwrap()
}

/// A creator that takes [`CREATOR`], counting its runs.
fn slow(runs: &Arc<AtomicUsize>, value: String) -> impl FnOnce() -> BoxFuture<'static, String> {
    let runs = runs.clone();
    move || {
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(CREATOR).await;
            value
        })
    }
}

/// A creator that returns at once, counting its runs.
fn quick(runs: &Arc<AtomicUsize>, value: String) -> impl FnOnce() -> BoxFuture<'static, String> {
    let runs = runs.clone();
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(value))
    }
}

/// `calls` calls at once, each on its own key, each timed; all must
/// return their creator's value.
async fn concurrent(
    ns: &tankard::Cache,
    runs: &Arc<AtomicUsize>,
    tag: &str,
    calls: usize,
) -> Duration {
    let timed = (0..calls).map(|i| {
        let (ns, key) = (ns.clone(), format!("{tag}-{i}"));
        let creator = slow(runs, key.clone());
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
        // The client reconnects in the background.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits out the redis client's background reconnection after a failure
/// (its one retry comes 50 to 500 ms later; see `backend/redis/conn.rs`).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_costs_a_call_one_timeout_at_most() {
    let server = PrivateServer::start(&[]);
    let clock = clock_now();
    let prefix = unique_prefix("breaker-hung");
    let cache = manager(&server.url(), &prefix, &clock, "");
    let ns = cache.namespace("n");
    let runs = Arc::new(AtomicUsize::new(0));
    ns.put("warm", 1u8).await.unwrap();

    server.signal("STOP");
    // 16 calls, all under way before anything failed: each waits for its
    // first operation's timeout, then skips the server for the rest.
    let worst = concurrent(&ns, &runs, "during", 16).await;
    assert!(
        worst < HUNG_BOUND,
        "a call took {worst:?} on a hung server (timeout {TIMEOUT:?}, creator {CREATOR:?})"
    );
    // The breaker is open: a call now does not wait on the server at all.
    let started = Instant::now();
    let value = ns.get_or_create("after", slow(&runs, "after".into())).await;
    assert_eq!(*value.unwrap(), "after");
    let took = started.elapsed();
    assert!(took < TIMEOUT, "a call waited {took:?} on an open breaker");
    assert_eq!(runs.load(Ordering::SeqCst), 17);
    assert!(cache.default_region().stats().backend_errors >= 17);

    // One call alone, on its own manager (its own breaker, closed).
    let alone = manager(&server.url(), &prefix, &clock_now(), "");
    let started = Instant::now();
    let value = alone
        .namespace("n")
        .get_or_create("alone", slow(&runs, "alone".into()))
        .await;
    assert_eq!(*value.unwrap(), "alone");
    let took = started.elapsed();
    assert!(
        took < HUNG_BOUND,
        "one call took {took:?} on a hung server (timeout {TIMEOUT:?}, creator {CREATOR:?})"
    );

    // Resumed: after retry_after the probe gets through and caching resumes.
    server.signal("CONT");
    until_cached(&ns, &clock).await;
    let before = runs.load(Ordering::SeqCst);
    let made = ns.get_or_create("again", slow(&runs, "v".into())).await;
    let hit = ns.get_or_create("again", slow(&runs, "w".into())).await;
    assert_eq!((made.unwrap().as_str(), hit.unwrap().as_str()), ("v", "v"));
    assert_eq!(runs.load(Ordering::SeqCst), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_skipped_without_network_and_found_back_by_one_probe() {
    let mut server = PrivateServer::start(&[]);
    let clock = clock_now();
    let cache = manager(&server.url(), &unique_prefix("breaker-dead"), &clock, "");
    let region = cache.default_region();
    let ns = cache.namespace("n");
    let runs = Arc::new(AtomicUsize::new(0));
    // No creator time here: what counts is the network.
    let call = |value: &str| ns.get_or_create("k", quick(&runs, value.to_owned()));
    assert_eq!(*call("v1").await.unwrap(), "v1");
    assert_eq!(*call("v2").await.unwrap(), "v1");

    server.kill();
    // The first call finds the server gone and opens the breaker.
    assert_eq!(*call("down").await.unwrap(), "down");
    let errors = region.stats().backend_errors;
    assert!(errors >= 1);

    // From now on every attempt to reach the server shows on its port, once
    // the client's own reconnection after that failure (in the background,
    // one retry) is over.
    settle().await;
    let port = ClosingPort::bind(server.port).await;
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
    // Every skipped operation is still counted as a backend error.
    assert!(region.stats().backend_errors >= errors + 66);

    // After retry_after, the calls under way share one probe; it fails and
    // the server is skipped again.
    clock.advance(RETRY_AFTER);
    concurrent(&ns, &runs, "probe", 16).await;
    settle().await;
    let probed = port.accepted();
    assert!(
        (1..=2).contains(&probed),
        "one probe (one reconnection: an attempt and the client's one retry) expected, \
         saw {probed} connections"
    );
    concurrent(&ns, &runs, "reopened", 16).await;
    assert_eq!(port.accepted(), probed, "a failed probe did not reopen it");

    // The server is back: a probe finds it and caching resumes.
    port.close().await;
    server.spawn();
    until_cached(&ns, &clock).await;
    let before = runs.load(Ordering::SeqCst);
    assert_eq!(*call("back").await.unwrap(), "back");
    assert_eq!(*call("unused").await.unwrap(), "back");
    assert_eq!(runs.load(Ordering::SeqCst), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_with_errors_is_never_skipped() {
    // Every MGET (the read of every lookup) is refused with NOPERM; the
    // server answers everything else.
    let server = PrivateServer::start(&[
        "--user", "default", "on", "nopass", "~*", "&*", "+@all", "-mget",
    ]);
    let clock = clock_now();
    let cache = manager(
        &server.url(),
        &unique_prefix("breaker-errors"),
        &clock,
        "on_backend_error = \"error\"",
    );
    let ns = cache.namespace("n");
    for _ in 0..3 {
        let err = ns.get::<u8>("k").await.unwrap_err();
        assert!(
            err.is_backend() && !err.is_unavailable(),
            "an error reply must not open the breaker: {err}"
        );
    }
    // Operations that need no MGET still go to the server.
    assert!(!ns.remove("k").await.unwrap());
}
