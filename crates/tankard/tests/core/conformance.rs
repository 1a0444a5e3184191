//! One suite for every backend that needs no server: each test below runs
//! against memory and file (the `backend_tests!` macro expands it per
//! backend). Time is a manual clock, so expiry and stale windows are
//! walked through without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tankard::{CacheManager, Clock, Config, Invalidation};
use tokio::sync::oneshot;

use crate::eventually::eventually;

/// A manager on one backend with a manual clock (and its directory).
pub(crate) struct Fixture {
    pub(crate) manager: CacheManager,
    pub(crate) clock: Clock,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) const START_MS: u64 = 1_700_000_000_000;

/// A manager on one tier shape: `memory`, a shared store (`file`, `dbm`,
/// `redis`, `memcached`), or a shared store with an L1 in front
/// (`file_l1`, `dbm_l1`, `redis_l1`, `memcached_l1`). Server shapes use the servers
/// of `scripts/services` and a prefix of their own, so tests never share
/// entries.
pub(crate) fn fixture(shape: &str, extra: &[(&str, &str)]) -> Fixture {
    fixture_on(shape, extra, Clock::manual(START_MS))
}

/// [`fixture`] with a clock of the test's (one that draws fixed random
/// numbers, say), which must start at [`START_MS`].
pub(crate) fn fixture_on(shape: &str, extra: &[(&str, &str)], clock: Clock) -> Fixture {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let lock = dir.path().join("lock").display().to_string();
    let (store, l1) = match shape.strip_suffix("_l1") {
        Some(store) => (store, true),
        None => (shape, false),
    };
    // The SQL shapes are one type, their URL picking the engine.
    let kind = match store {
        "postgres" | "mysql" | "sqlite" => "ext:database",
        other => other,
    };
    let mut pairs = vec![
        ("cache.type".to_owned(), kind.to_owned()),
        ("cache.data_dir".to_owned(), data),
        ("cache.lock_dir".to_owned(), lock),
    ];
    if l1 {
        pairs.push(("cache.l1".to_owned(), "true".to_owned()));
    }
    let server = match store {
        "redis" => Some("TANKARD_REDIS_URL"),
        "memcached" => Some("TANKARD_MEMCACHED_URL"),
        "postgres" => Some("TANKARD_POSTGRES_URL"),
        "mysql" => Some("TANKARD_MYSQL_URL"),
        _ => None,
    };
    if store == "sqlite" {
        let file = dir.path().join("cache.db").display().to_string();
        pairs.push(("cache.url".to_owned(), format!("sqlite://{file}")));
    }
    if let Some(var) = server {
        let url = std::env::var(var).unwrap_or_else(|_| {
            panic!("{var} is not set: run scripts/services and source its env")
        });
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        pairs.push(("cache.url".to_owned(), url));
        pairs.push((
            "cache.prefix".to_owned(),
            format!("conformance-{unique}-{n}/"),
        ));
        // Stores on servers have no local lock directory.
        pairs.retain(|(key, _)| key != "cache.lock_dir" && key != "cache.data_dir");
    }
    pairs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let config = Config::from_flat(pairs).expect("config");
    let manager = CacheManager::with_clock(config, clock.clone()).expect("manager");
    Fixture {
        manager,
        clock,
        dir,
    }
}

macro_rules! backend_tests {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(stringify!($backend)).await;
                }
            )*
        }
    };
}

/// Every tier shape (DESIGN §11): memory, shared, shared + L1.
macro_rules! all_backends {
    ($($test:ident),* $(,)?) => {
        backend_tests!(memory: $($test),*);
        backend_tests!(file: $($test),*);
        backend_tests!(file_l1: $($test),*);
        #[cfg(feature = "dbm")]
        backend_tests!(dbm: $($test),*);
        #[cfg(feature = "dbm")]
        backend_tests!(dbm_l1: $($test),*);
        #[cfg(feature = "redis")]
        backend_tests!(redis: $($test),*);
        #[cfg(feature = "redis")]
        backend_tests!(redis_l1: $($test),*);
        #[cfg(feature = "memcached")]
        backend_tests!(memcached: $($test),*);
        #[cfg(feature = "memcached")]
        backend_tests!(memcached_l1: $($test),*);
        #[cfg(feature = "postgres")]
        backend_tests!(postgres: $($test),*);
        #[cfg(feature = "postgres")]
        backend_tests!(postgres_l1: $($test),*);
        #[cfg(feature = "mysql")]
        backend_tests!(mysql: $($test),*);
        #[cfg(feature = "sqlite")]
        backend_tests!(sqlite: $($test),*);
    };
}

all_backends!(
    put_get_remove_contains,
    get_or_create_runs_the_creator_once_then_hits,
    unit_and_none_are_values,
    expiry_then_stale_window_then_missing,
    stale_is_served_while_one_caller_regenerates,
    per_call_expiry_overrides_the_region,
    disabled_region_runs_the_creator_every_time,
    entries_before_starttime_are_stale,
    clear_empties_one_namespace_only,
    soft_invalidation_serves_stale_hard_removes,
    concurrent_cold_calls_run_the_creator_once,
    waiters_share_the_creators_error_and_next_call_retries,
    waiters_get_an_error_when_the_creator_panics,
    a_cancelled_creator_is_taken_over_by_a_waiter,
    another_type_under_the_same_key_is_a_miss,
    regions_keep_their_own_entries,
    background_refresh_serves_stale_to_every_caller,
    a_failed_background_refresh_keeps_the_stale_value,
    background_work_stops_when_the_manager_is_dropped,
    a_borrowing_creator_regenerates_in_the_caller_even_with_background,
    fail_safe_serves_the_last_good_value_when_the_creator_fails,
    fail_safe_stands_in_for_a_panic_and_a_failed_background_refresh,
    without_a_last_good_value_the_error_is_returned,
    early_refresh_renews_a_steadily_read_key_before_it_expires,
    xfetch_renews_early_by_cost_and_chance,
    soft_timeout_serves_the_stale_value_and_the_creator_still_stores,
    hard_timeout_errs_without_a_last_good_value_and_the_creator_still_stores,
    hard_timeout_serves_the_fail_safe_value,
    hard_timeout_drops_a_borrowing_creator,
    get_many_reads_fresh_values_in_order,
    a_creator_sets_its_entry_s_expiry_or_skips_storing_it,
    get_or_create_many_makes_only_the_missing_keys_in_one_call,
    get_or_create_many_waits_for_a_key_another_caller_is_creating,
    overlapping_batches_make_each_key_once,
    a_failing_or_miscounting_batch_creator_fails_its_keys,
    invalidate_tag_hides_what_carries_the_tag_and_nothing_else,
    a_tagged_entry_is_made_anew_after_its_tag_is_invalidated,
    a_creator_tags_its_entry_and_a_bad_tag_fails_the_call,
    bad_tags_are_errors,
);

async fn put_get_remove_contains(backend: &str) {
    let f = fixture(backend, &[]);
    let ns = f.manager.namespace("n");
    assert!(ns.get::<String>("k").await.unwrap().is_none());
    ns.put("k", "v".to_string()).await.unwrap();
    assert_eq!(*ns.get::<String>("k").await.unwrap().unwrap(), "v");
    assert!(ns.contains::<String>("k").await.unwrap());
    assert!(ns.remove("k").await.unwrap());
    assert!(!ns.contains::<String>("k").await.unwrap());
    assert!(!ns.remove("k").await.unwrap());
    // Keys with separators, empty keys and unicode are ordinary keys.
    for key in ["", "a:b#c!d", "späß 🍺", &"x".repeat(1000)] {
        ns.put(key, key.len()).await.unwrap();
        assert_eq!(
            *ns.get::<usize>(key).await.unwrap().unwrap(),
            key.len(),
            "key {key:?}"
        );
    }
}

async fn get_or_create_runs_the_creator_once_then_hits(backend: &str) {
    let f = fixture(backend, &[]);
    let ns = f.manager.namespace("views::hello");
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        let v = ns
            .get_or_create("fetch_data", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                "Hello world".to_string()
            })
            .await
            .unwrap();
        assert_eq!(*v, "Hello world");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = f.manager.default_region().stats();
    assert_eq!((stats.misses, stats.hits, stats.creator_calls), (1, 2, 1));
}

async fn unit_and_none_are_values(backend: &str) {
    let f = fixture(backend, &[]);
    let ns = f.manager.namespace("n");
    let calls = AtomicUsize::new(0);
    for _ in 0..2 {
        ns.get_or_create("unit", || async {
            calls.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
        let none = ns
            .get_or_create("none", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                None::<u32>
            })
            .await
            .unwrap();
        assert_eq!(*none, None);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

async fn expiry_then_stale_window_then_missing(backend: &str) {
    let f = fixture(backend, &[("cache.expire", "10"), ("cache.stale", "5")]);
    let ns = f.manager.namespace("n");
    ns.put("k", 1u32).await.unwrap();
    f.clock.advance(Duration::from_millis(9_999));
    assert_eq!(
        ns.peek::<u32>("k")
            .await
            .unwrap()
            .map(|(v, fresh)| (*v, fresh)),
        Some((1, true))
    );
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(
        ns.peek::<u32>("k")
            .await
            .unwrap()
            .map(|(v, fresh)| (*v, fresh)),
        Some((1, false))
    );
    assert!(
        ns.get::<u32>("k").await.unwrap().is_none(),
        "get returns only fresh values"
    );
    f.clock.advance(Duration::from_secs(5));
    assert!(
        ns.peek::<u32>("k").await.unwrap().is_none(),
        "past the stale window it is gone"
    );
    let v = ns.get_or_create("k", || async { 2u32 }).await.unwrap();
    assert_eq!(*v, 2);
}

async fn stale_is_served_while_one_caller_regenerates(backend: &str) {
    let f = fixture(backend, &[("cache.expire", "10"), ("cache.stale", "60")]);
    let ns = f.manager.namespace("n");
    ns.put("k", "old".to_string()).await.unwrap();
    f.clock.advance(Duration::from_secs(11));

    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let leader = tokio::spawn({
        let ns = ns.clone();
        async move {
            ns.get_or_create("k", || async move {
                let _ = started_tx.send(());
                let _ = release_rx.await;
                "new".to_string()
            })
            .await
        }
    });
    started_rx.await.unwrap();
    for _ in 0..5 {
        let v = ns
            .get_or_create::<String, _, _>("k", || async { panic!("only one caller regenerates") })
            .await
            .unwrap();
        assert_eq!(*v, "old");
    }
    release_tx.send(()).unwrap();
    assert_eq!(*leader.await.unwrap().unwrap(), "new");
    let v = ns
        .get_or_create::<String, _, _>("k", || async { unreachable!() })
        .await
        .unwrap();
    assert_eq!(*v, "new");
    let stats = f.manager.default_region().stats();
    assert_eq!((stats.stale_served, stats.creator_calls), (5, 1));
}

async fn per_call_expiry_overrides_the_region(backend: &str) {
    let f = fixture(backend, &[("cache.expire", "1000")]);
    let short = f
        .manager
        .namespace("n")
        .expire(std::time::Duration::from_secs(5));
    short.put("k", 1u8).await.unwrap();
    f.clock.advance(Duration::from_secs(6));
    assert!(short.get::<u8>("k").await.unwrap().is_none());
    let long = f.manager.namespace("n");
    long.put("k", 1u8).await.unwrap();
    f.clock.advance(Duration::from_secs(6));
    assert!(long.get::<u8>("k").await.unwrap().is_some());
}

async fn disabled_region_runs_the_creator_every_time(backend: &str) {
    let f = fixture(backend, &[("cache.enabled", "false")]);
    let ns = f.manager.namespace("n");
    let calls = AtomicUsize::new(0);
    for i in 0..3 {
        let v = ns
            .get_or_create("k", || async { calls.fetch_add(1, Ordering::SeqCst) })
            .await
            .unwrap();
        assert_eq!(*v, i);
    }
    ns.put("k", 9usize).await.unwrap();
    assert!(ns.get::<usize>("k").await.unwrap().is_none());
}

async fn entries_before_starttime_are_stale(backend: &str) {
    let start_s = (START_MS / 1000 + 500).to_string();
    let f = fixture(
        backend,
        &[("cache.starttime", &start_s), ("cache.stale", "3600")],
    );
    let ns = f.manager.namespace("n");
    ns.put("k", 1u8).await.unwrap();
    assert_eq!(
        ns.peek::<u8>("k").await.unwrap().map(|(_, fresh)| fresh),
        Some(false)
    );
    f.clock.advance(Duration::from_secs(600));
    let v = ns.get_or_create("k", || async { 2u8 }).await.unwrap();
    assert_eq!(*v, 2, "the stale entry was regenerated");
    assert_eq!(
        ns.peek::<u8>("k").await.unwrap().map(|(_, fresh)| fresh),
        Some(true)
    );
}

async fn clear_empties_one_namespace_only(backend: &str) {
    let f = fixture(backend, &[]);
    let (a, b) = (f.manager.namespace("a"), f.manager.namespace("b"));
    a.put("k", 1u8).await.unwrap();
    b.put("k", 2u8).await.unwrap();
    a.clear().await.unwrap();
    assert!(a.get::<u8>("k").await.unwrap().is_none());
    assert_eq!(*b.get::<u8>("k").await.unwrap().unwrap(), 2);
    a.put("k", 3u8).await.unwrap();
    assert_eq!(
        *a.get::<u8>("k").await.unwrap().unwrap(),
        3,
        "writes after a clear are visible"
    );
}

async fn soft_invalidation_serves_stale_hard_removes(backend: &str) {
    let f = fixture(backend, &[]);
    let region = f.manager.default_region();
    let ns = f.manager.namespace("n");
    ns.put("k", 1u8).await.unwrap();
    region.invalidate(Invalidation::Soft).await.unwrap();
    assert_eq!(
        ns.peek::<u8>("k")
            .await
            .unwrap()
            .map(|(v, fresh)| (*v, fresh)),
        Some((1, false))
    );
    // The regenerated entry is fresh even within the same millisecond.
    let v = ns.get_or_create("k", || async { 2u8 }).await.unwrap();
    assert_eq!(*v, 2);
    assert_eq!(
        ns.peek::<u8>("k").await.unwrap().map(|(_, fresh)| fresh),
        Some(true)
    );
    region.invalidate(Invalidation::Hard).await.unwrap();
    assert!(ns.peek::<u8>("k").await.unwrap().is_none());
}

async fn concurrent_cold_calls_run_the_creator_once(backend: &str) {
    let f = fixture(backend, &[]);
    let ns = f.manager.namespace("n");
    let calls = Arc::new(AtomicUsize::new(0));
    let callers = (0..64).map(|_| {
        let ns = ns.clone();
        let calls = calls.clone();
        tokio::spawn(async move {
            ns.get_or_create("cold", || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                "value".to_string()
            })
            .await
        })
    });
    let values = futures_join_all(callers).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(values.iter().all(|v| v == "value"));
}

async fn futures_join_all(
    handles: impl Iterator<Item = tokio::task::JoinHandle<tankard::Result<Arc<String>>>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push((*handle.await.unwrap().unwrap()).clone());
    }
    out
}

#[derive(Debug, PartialEq)]
struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

/// Waits until the region has counted `n` lock waits: the signal that the
/// waiters are parked on the leader.
async fn until_lock_waits(manager: &CacheManager, n: u64) {
    while manager.default_region().stats().lock_waits < n {
        tokio::task::yield_now().await;
    }
}

async fn waiters_share_the_creators_error_and_next_call_retries(backend: &str) {
    let f = fixture(backend, &[]);
    let ns = f.manager.namespace("n");
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (started_tx, started_rx) = oneshot::channel();
    let leader = tokio::spawn({
        let ns = ns.clone();
        async move {
            ns.get_or_try_create::<u8, _, _, _>("k", || async move {
                let _ = started_tx.send(());
                let _ = release_rx.await;
                Err(Boom)
            })
            .await
        }
    });
    // The leader holds the flight once its creator runs.
    started_rx.await.unwrap();
    let waiter = tokio::spawn({
        let ns = ns.clone();
        async move {
            ns.get_or_create::<u8, _, _>("k", || async { unreachable!("waits") })
                .await
        }
    });
    until_lock_waits(&f.manager, 1).await;
    release_tx.send(()).unwrap();
    let leader_err = leader.await.unwrap().unwrap_err();
    let waiter_err = waiter.await.unwrap().unwrap_err();
    for err in [&leader_err, &waiter_err] {
        assert!(err.is_creator());
        assert_eq!(err.creator_error::<Boom>(), Some(&Boom));
    }
    // Nothing was stored; the next call runs its creator.
    assert_eq!(*ns.get_or_create("k", || async { 7u8 }).await.unwrap(), 7);
    assert_eq!(f.manager.default_region().stats().creator_errors, 1);
}

async fn waiters_get_an_error_when_the_creator_panics(backend: &str) {
    let f = fixture(backend, &[]);
    let ns = f.manager.namespace("n");
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (started_tx, started_rx) = oneshot::channel();
    let leader = tokio::spawn({
        let ns = ns.clone();
        async move {
            ns.get_or_create::<u8, _, _>("k", || async move {
                let _ = started_tx.send(());
                let _ = release_rx.await;
                panic!("creator exploded");
            })
            .await
        }
    });
    started_rx.await.unwrap();
    let waiter = tokio::spawn({
        let ns = ns.clone();
        async move {
            ns.get_or_create::<u8, _, _>("k", || async { unreachable!("waits") })
                .await
        }
    });
    until_lock_waits(&f.manager, 1).await;
    release_tx.send(()).unwrap();
    assert!(
        leader.await.unwrap_err().is_panic(),
        "the panic reaches its own caller"
    );
    let err = waiter.await.unwrap().unwrap_err();
    assert!(err.is_creator_panic());
    assert!(err.to_string().contains("creator exploded"));
    assert_eq!(*ns.get_or_create("k", || async { 1u8 }).await.unwrap(), 1);
}

async fn a_cancelled_creator_is_taken_over_by_a_waiter(backend: &str) {
    let f = fixture(backend, &[]);
    let ns = f.manager.namespace("n");
    let (started_tx, started_rx) = oneshot::channel();
    let leader = tokio::spawn({
        let ns = ns.clone();
        async move {
            ns.get_or_create::<u8, _, _>("k", || async move {
                let _ = started_tx.send(());
                std::future::pending::<u8>().await
            })
            .await
        }
    });
    started_rx.await.unwrap();
    let waiter = tokio::spawn({
        let ns = ns.clone();
        async move { ns.get_or_create("k", || async { 42u8 }).await }
    });
    until_lock_waits(&f.manager, 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert_eq!(
        *waiter.await.unwrap().unwrap(),
        42,
        "the waiter ran its own creator"
    );
    assert_eq!(*ns.get::<u8>("k").await.unwrap().unwrap(), 42);
}

async fn another_type_under_the_same_key_is_a_miss(backend: &str) {
    let f = fixture(backend, &[]);
    let ns = f.manager.namespace("n");
    ns.put("k", "text".to_string()).await.unwrap();
    assert!(ns.get::<Vec<u64>>("k").await.unwrap().is_none());
    assert!(f.manager.default_region().stats().decode_errors >= 1);
}

async fn regions_keep_their_own_entries(backend: &str) {
    let f = fixture(backend, &[("cache.regions", "a, b")]);
    let a = f.manager.region("a").unwrap().namespace("n");
    let b = f.manager.region("b").unwrap().namespace("n");
    a.put("k", 1u8).await.unwrap();
    assert!(b.get::<u8>("k").await.unwrap().is_none());
    f.manager
        .region("a")
        .unwrap()
        .invalidate(Invalidation::Hard)
        .await
        .unwrap();
    b.put("k", 2u8).await.unwrap();
    assert!(a.get::<u8>("k").await.unwrap().is_none());
    assert_eq!(*b.get::<u8>("k").await.unwrap().unwrap(), 2);
}

impl std::error::Error for Boom {}

const BACKGROUND: &[(&str, &str)] = &[
    ("cache.expire", "10"),
    ("cache.stale", "60"),
    ("cache.refresh", "background"),
];

async fn background_refresh_serves_stale_to_every_caller(backend: &str) {
    let f = fixture(backend, BACKGROUND);
    let ns = f.manager.namespace("n");
    ns.put("k", "old".to_string()).await.unwrap();
    f.clock.advance(Duration::from_secs(11));

    let (release_tx, release_rx) = oneshot::channel::<()>();
    let calls = Arc::new(AtomicUsize::new(0));
    // The caller that starts the refresh gets the stale value at once:
    // its creator is still waiting for `release` when the call returns.
    let v = ns
        .get_or_spawn("k", {
            let calls = calls.clone();
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = release_rx.await;
                "new".to_string()
            }
        })
        .await
        .unwrap();
    assert_eq!(*v, "old");
    for _ in 0..3 {
        let v = ns
            .get_or_spawn::<String, _, _>("k", || async { panic!("one refresh at a time") })
            .await
            .unwrap();
        assert_eq!(*v, "old");
    }
    release_tx.send(()).unwrap();
    eventually("the refreshed value is stored", async || {
        ns.get::<String>("k")
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str)
            == Some("new")
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = f.manager.default_region().stats();
    assert_eq!((stats.stale_served, stats.creator_calls), (4, 1));
}

async fn a_failed_background_refresh_keeps_the_stale_value(backend: &str) {
    let f = fixture(backend, BACKGROUND);
    let ns = f.manager.namespace("n");
    ns.put("k", 1u32).await.unwrap();
    f.clock.advance(Duration::from_secs(11));
    let v = ns
        .get_or_try_spawn("k", || async { Err::<u32, _>(Boom.to_string()) })
        .await
        .unwrap();
    assert_eq!(*v, 1);
    let region = f.manager.default_region().clone();
    eventually("the failure is counted", async || {
        region.stats().creator_errors == 1
    })
    .await;
    assert_eq!(
        ns.peek::<u32>("k")
            .await
            .unwrap()
            .map(|(v, fresh)| (*v, fresh)),
        Some((1, false)),
        "the stale value stays"
    );
    // The flight is over: the next stale call starts a new refresh.
    let v = ns.get_or_spawn("k", || async { 2u32 }).await.unwrap();
    assert_eq!(*v, 1);
    eventually("the second refresh stores", async || {
        ns.get::<u32>("k").await.unwrap().as_deref() == Some(&2)
    })
    .await;
}

async fn background_work_stops_when_the_manager_is_dropped(backend: &str) {
    let f = fixture(backend, BACKGROUND);
    let ns = f.manager.namespace("n");
    ns.put("k", 1u32).await.unwrap();
    f.clock.advance(Duration::from_secs(11));
    /// Set when the creator's future is dropped, finished or not.
    struct OnDrop(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (started_tx, started_rx) = oneshot::channel();
    let v = ns
        .get_or_spawn("k", {
            let guard = OnDrop(dropped.clone());
            move || async move {
                let _guard = guard;
                let _ = started_tx.send(());
                std::future::pending::<u32>().await
            }
        })
        .await
        .unwrap();
    assert_eq!(*v, 1);
    started_rx.await.unwrap();
    assert!(!dropped.load(Ordering::SeqCst), "the creator runs on");
    let Fixture { manager, dir, .. } = f;
    drop(ns);
    drop(manager);
    eventually("the creator is dropped", async || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    drop(dir);
}

async fn a_borrowing_creator_regenerates_in_the_caller_even_with_background(backend: &str) {
    let f = fixture(backend, BACKGROUND);
    let ns = f.manager.namespace("n");
    ns.put("k", 1u32).await.unwrap();
    f.clock.advance(Duration::from_secs(11));
    let calls = AtomicUsize::new(0);
    let v = ns
        .get_or_create("k", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            2u32
        })
        .await
        .unwrap();
    assert_eq!((*v, calls.load(Ordering::SeqCst)), (2, 1));
}

/// A region with `fail_safe`: fresh for 10 s, kept an hour more, a failed
/// creator throttled for 30 s.
const FAIL_SAFE: [(&str, &str); 3] = [
    ("cache.expire", "10"),
    ("cache.fail_safe", "1h"),
    ("cache.fail_safe_throttle", "30s"),
];

async fn fail_safe_serves_the_last_good_value_when_the_creator_fails(backend: &str) {
    let f = fixture(backend, &FAIL_SAFE);
    let ns = f.manager.namespace("fs");
    let calls = AtomicUsize::new(0);
    let failing = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<u32, _>("upstream down")
    };
    ns.get_or_create("k", || async { 1u32 }).await.unwrap();
    // Past expiry: a miss, but the entry is kept for the fail-safe.
    f.clock.advance(Duration::from_secs(20));
    assert!(ns.peek::<u32>("k").await.unwrap().is_none());
    let v = ns.get_or_try_create("k", failing).await.unwrap();
    assert_eq!((*v, calls.load(Ordering::SeqCst)), (1, 1));
    assert_eq!(f.manager.default_region().stats().fail_safe_served, 1);
    // Served again as fresh for the throttle: the creator is not retried.
    f.clock.advance(Duration::from_secs(29));
    let v = ns.get_or_try_create("k", failing).await.unwrap();
    assert_eq!((*v, calls.load(Ordering::SeqCst)), (1, 1));
    // Then it is tried again, and its value wins once it works.
    f.clock.advance(Duration::from_secs(2));
    let v = ns.get_or_try_create("k", failing).await.unwrap();
    assert_eq!((*v, calls.load(Ordering::SeqCst)), (1, 2));
    f.clock.advance(Duration::from_secs(31));
    let v = ns.get_or_create("k", || async { 2u32 }).await.unwrap();
    assert_eq!(*v, 2);
    assert_eq!(f.manager.default_region().stats().fail_safe_served, 2);
    // Past the fail-safe window there is nothing left to serve.
    f.clock.advance(Duration::from_secs(10 + 3600));
    let err = ns.get_or_try_create("k", failing).await.unwrap_err();
    assert!(err.to_string().contains("upstream down"), "{err}");
}

async fn fail_safe_stands_in_for_a_panic_and_a_failed_background_refresh(backend: &str) {
    let f = fixture(
        backend,
        &[
            FAIL_SAFE.as_slice(),
            &[("cache.stale", "10"), ("cache.refresh", "background")],
        ]
        .concat(),
    );
    let ns = f.manager.namespace("fs");
    ns.put("k", 1u32).await.unwrap();
    // Expired, kept: a panicking creator is a failure like any other.
    f.clock.advance(Duration::from_secs(25));
    let v = ns
        .get_or_create("k", || async {
            if true {
                panic!("creator bug");
            }
            2u32
        })
        .await
        .unwrap();
    assert_eq!(*v, 1);
    assert_eq!(f.manager.default_region().stats().fail_safe_served, 1);
    // Stale with `refresh = background`: the task's failure re-stores the
    // stale value for the throttle, so no caller starts another refresh.
    ns.put("s", 1u32).await.unwrap();
    f.clock.advance(Duration::from_secs(15));
    let calls = Arc::new(AtomicUsize::new(0));
    let spawn = |calls: Arc<AtomicUsize>| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<u32, _>("upstream down")
    };
    let first = ns
        .get_or_try_spawn("s", {
            let calls = calls.clone();
            move || spawn(calls)
        })
        .await
        .unwrap();
    assert_eq!(*first, 1);
    eventually("the failed refresh is counted", async || {
        f.manager.default_region().stats().fail_safe_served == 2
    })
    .await;
    let again = ns
        .get_or_try_spawn("s", {
            let calls = calls.clone();
            move || spawn(calls)
        })
        .await
        .unwrap();
    assert_eq!(*again, 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "throttled: no second refresh"
    );
    // The task counts the failure before it stores the value again, and
    // a store whose writes leave the task (dbm's blocking pool) may not
    // have it yet.
    eventually("the stale value is stored again, fresh", async || {
        ns.peek::<u32>("s")
            .await
            .unwrap()
            .map(|(v, fresh)| (*v, fresh))
            == Some((1, true))
    })
    .await;
}

async fn without_a_last_good_value_the_error_is_returned(backend: &str) {
    // A cold key has nothing to fall back on.
    let f = fixture(backend, &FAIL_SAFE);
    let ns = f.manager.namespace("fs");
    let err = ns
        .get_or_try_create("cold", || async { Err::<u32, _>("upstream down") })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("upstream down"), "{err}");
    // Without `fail_safe` an expired entry is simply gone.
    let f = fixture(backend, &[("cache.expire", "10")]);
    let ns = f.manager.namespace("fs");
    ns.put("k", 1u32).await.unwrap();
    f.clock.advance(Duration::from_secs(20));
    assert!(
        ns.get_or_try_create("k", || async { Err::<u32, _>("upstream down") })
            .await
            .is_err()
    );
    assert_eq!(f.manager.default_region().stats().fail_safe_served, 0);
}

async fn early_refresh_renews_a_steadily_read_key_before_it_expires(backend: &str) {
    let f = fixture(
        backend,
        &[("cache.expire", "10"), ("cache.early_refresh", "0.8")],
    );
    let ns = f.manager.namespace("early");
    let calls = Arc::new(AtomicUsize::new(0));
    let creator = |value: u32| {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            value
        }
    };
    assert_eq!(*ns.get_or_spawn("k", creator(1)).await.unwrap(), 1);
    // Before 80 % of `expire`: a hit, nothing renewed.
    f.clock.advance(Duration::from_millis(7_999));
    assert_eq!(*ns.get_or_spawn("k", creator(2)).await.unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Past it: this caller gets the current value at once, and one task
    // renews the entry.
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(*ns.get_or_spawn("k", creator(2)).await.unwrap(), 1);
    eventually("the entry is renewed", async || {
        ns.peek::<u32>("k").await.unwrap().map(|(v, _)| *v) == Some(2)
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The renewed entry is fresh past the old expiry: no caller ever waits.
    f.clock.advance(Duration::from_secs(5));
    assert_eq!(*ns.get_or_spawn("k", creator(3)).await.unwrap(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A borrowing creator cannot be spawned: it gets the value, renews nothing.
    f.clock.advance(Duration::from_secs(4));
    let v = ns.get_or_create("k", || async { 4u32 }).await.unwrap();
    assert_eq!(*v, 2);
    assert_eq!(ns.peek::<u32>("k").await.unwrap().map(|(v, _)| *v), Some(2));
}

async fn xfetch_renews_early_by_cost_and_chance(backend: &str) {
    use std::sync::atomic::AtomicU64;
    // The random number each read draws, fixed by the test.
    let random = Arc::new(AtomicU64::new(1.0f64.to_bits()));
    let draw = random.clone();
    let clock =
        Clock::manual(START_MS).with_random(move || f64::from_bits(draw.load(Ordering::SeqCst)));
    let f = fixture_on(
        backend,
        &[("cache.expire", "10"), ("cache.early_refresh", "xfetch")],
        clock,
    );
    let ns = f.manager.namespace("xfetch");
    let calls = Arc::new(AtomicUsize::new(0));
    let creator = |value: u32, takes: Duration| {
        let (calls, clock) = (calls.clone(), f.clock.clone());
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            clock.advance(takes);
            value
        }
    };
    // Made in 1 s (δ), so fresh until 11 s after the start.
    assert_eq!(
        *ns.get_or_spawn("k", creator(1, Duration::from_secs(1)))
            .await
            .unwrap(),
        1
    );
    // r = e⁻²: renewed once now + δ·β·2 reaches the expiry, i.e. from 9 s.
    random.store((-2.0f64).exp().to_bits(), Ordering::SeqCst);
    f.clock.set_ms(START_MS + 8_999);
    assert_eq!(
        *ns.get_or_spawn("k", creator(2, Duration::ZERO))
            .await
            .unwrap(),
        1
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(
        *ns.get_or_spawn("k", creator(2, Duration::ZERO))
            .await
            .unwrap(),
        1
    );
    eventually("the entry is renewed", async || {
        ns.peek::<u32>("k").await.unwrap().map(|(v, _)| *v) == Some(2)
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // r = 1: −ln r = 0, so no read renews an entry before it expires.
    random.store(1.0f64.to_bits(), Ordering::SeqCst);
    let made = f.clock.now_ms();
    assert_eq!(
        *ns.get_or_spawn("j", creator(1, Duration::from_secs(1)))
            .await
            .unwrap(),
        1
    );
    f.clock.set_ms(made + 10_999);
    assert_eq!(
        *ns.get_or_spawn("j", creator(2, Duration::ZERO))
            .await
            .unwrap(),
        1
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // A value that was put cost nothing: XFetch never renews it early.
    ns.put("p", 7u32).await.unwrap();
    f.clock.advance(Duration::from_millis(9_999));
    random.store(f64::MIN_POSITIVE.to_bits(), Ordering::SeqCst);
    assert_eq!(
        *ns.get_or_spawn("p", creator(8, Duration::ZERO))
            .await
            .unwrap(),
        7
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// An owned creator that makes `value` once `release` fires.
fn held_creator(
    value: u32,
) -> (
    oneshot::Sender<()>,
    impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>> + Send + 'static,
) {
    let (release, held) = oneshot::channel::<()>();
    let creator = move || {
        Box::pin(async move {
            let _ = held.await;
            value
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>>
    };
    (release, creator)
}

async fn soft_timeout_serves_the_stale_value_and_the_creator_still_stores(backend: &str) {
    let f = fixture(
        backend,
        &[
            ("cache.expire", "10"),
            ("cache.stale", "1m"),
            ("cache.soft_timeout", "20ms"),
            ("cache.hard_timeout", "1h"),
        ],
    );
    let ns = f.manager.namespace("soft");
    ns.put("k", 1u32).await.unwrap();
    f.clock.advance(Duration::from_secs(20));
    // The creator is held: past soft_timeout the caller gets the stale value.
    let (release, creator) = held_creator(2);
    assert_eq!(*ns.get_or_spawn("k", creator).await.unwrap(), 1);
    assert_eq!(f.manager.default_region().stats().stale_served, 1);
    // It goes on, and its value is stored when it is done.
    release.send(()).unwrap();
    eventually("the held creator's value is stored", async || {
        ns.peek::<u32>("k")
            .await
            .unwrap()
            .map(|(v, fresh)| (*v, fresh))
            == Some((2, true))
    })
    .await;
}

async fn hard_timeout_errs_without_a_last_good_value_and_the_creator_still_stores(backend: &str) {
    let f = fixture(backend, &[("cache.hard_timeout", "20ms")]);
    let ns = f.manager.namespace("hard");
    let (release, creator) = held_creator(2);
    let err = ns
        .get_or_spawn::<u32, _, _>("k", creator)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("hard_timeout"), "{err}");
    release.send(()).unwrap();
    eventually("the creator's value is stored after all", async || {
        ns.peek::<u32>("k").await.unwrap().map(|(v, _)| *v) == Some(2)
    })
    .await;
}

async fn hard_timeout_serves_the_fail_safe_value(backend: &str) {
    let f = fixture(
        backend,
        &[
            ("cache.expire", "10"),
            ("cache.fail_safe", "1h"),
            ("cache.hard_timeout", "20ms"),
        ],
    );
    let ns = f.manager.namespace("hard");
    ns.put("k", 1u32).await.unwrap();
    f.clock.advance(Duration::from_secs(20));
    let (release, creator) = held_creator(2);
    assert_eq!(*ns.get_or_spawn("k", creator).await.unwrap(), 1);
    assert_eq!(f.manager.default_region().stats().fail_safe_served, 1);
    release.send(()).unwrap();
    eventually("the creator's value replaces it", async || {
        ns.peek::<u32>("k").await.unwrap().map(|(v, _)| *v) == Some(2)
    })
    .await;
}

async fn hard_timeout_drops_a_borrowing_creator(backend: &str) {
    // The limit covers the second call's store too: long enough for a
    // write on a busy disk (dbm's commit `fsync`s).
    let f = fixture(backend, &[("cache.hard_timeout", "250ms")]);
    let ns = f.manager.namespace("hard");
    let (_release, held) = oneshot::channel::<()>();
    let err = ns
        .get_or_create("k", || async {
            let _ = held.await;
            2u32
        })
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // Nothing stored, nothing left locked: the next caller creates at once.
    assert!(ns.peek::<u32>("k").await.unwrap().is_none());
    assert_eq!(*ns.get_or_create("k", || async { 3u32 }).await.unwrap(), 3);
}

async fn get_many_reads_fresh_values_in_order(backend: &str) {
    let f = fixture(backend, &[("cache.expire", "10"), ("cache.stale", "10")]);
    let ns = f.manager.namespace("many");
    for i in (0..100u32).filter(|i| i % 3 != 0) {
        ns.put(&i.to_string(), i).await.unwrap();
    }
    f.manager.namespace("other").put("1", 999u32).await.unwrap();
    let keys: Vec<String> = (0..100).map(|i: u32| i.to_string()).collect();
    let found = ns.get_many::<u32, _>(&keys).await.unwrap();
    let want: Vec<Option<u32>> = (0..100).map(|i| (i % 3 != 0).then_some(i)).collect();
    assert_eq!(
        found
            .iter()
            .map(|v| v.as_deref().copied())
            .collect::<Vec<_>>(),
        want
    );
    // Only fresh values: a stale one is not returned, a fresh put is.
    f.clock.advance(Duration::from_secs(11));
    ns.put("2", 2_000u32).await.unwrap();
    let found = ns.get_many::<u32, _>(&["1", "2", "3"]).await.unwrap();
    assert_eq!(
        found
            .iter()
            .map(|v| v.as_deref().copied())
            .collect::<Vec<_>>(),
        [None, Some(2_000), None]
    );
    // Another type under a key is no value of this one.
    assert_eq!(ns.get_many::<String, _>(&["2"]).await.unwrap(), [None]);
    assert!(ns.get_many::<u32, &str>(&[]).await.unwrap().is_empty());
}

async fn a_creator_sets_its_entry_s_expiry_or_skips_storing_it(backend: &str) {
    use tankard::CreatorContext;
    let f = fixture(backend, &[("cache.expire", "10"), ("cache.stale", "5")]);
    let ns = f.manager.namespace("context");
    let short = ns
        .get_or_create("short", || async {
            assert!(CreatorContext::set_expire(Duration::from_secs(1)));
            1u32
        })
        .await
        .unwrap();
    let forever = ns
        .get_or_create("forever", || async {
            assert!(CreatorContext::set_expire(None));
            2u32
        })
        .await
        .unwrap();
    let skipped = ns
        .get_or_create("skipped", || async {
            assert!(CreatorContext::skip_store());
            3u32
        })
        .await
        .unwrap();
    assert_eq!((*short, *forever, *skipped), (1, 2, 3));
    // Not stored, and not an error.
    assert!(ns.peek::<u32>("skipped").await.unwrap().is_none());
    assert_eq!(f.manager.default_region().stats().creator_errors, 0);
    let fresh = |key: &'static str| {
        let ns = ns.clone();
        async move {
            ns.peek::<u32>(key)
                .await
                .unwrap()
                .map(|(v, fresh)| (*v, fresh))
        }
    };
    // Its own expiry: stale after 1 s (not the region's 10), kept for
    // the region's stale grace.
    f.clock.advance(Duration::from_secs(2));
    assert_eq!(fresh("short").await, Some((1, false)));
    assert_eq!(fresh("forever").await, Some((2, true)));
    f.clock.advance(Duration::from_secs(365 * 24 * 3600));
    assert_eq!(fresh("forever").await, Some((2, true)));
    // Skipping the store keeps a stale value in place.
    ns.put("kept", 4u32).await.unwrap();
    f.clock.advance(Duration::from_secs(11));
    let got = ns
        .get_or_create("kept", || async {
            CreatorContext::skip_store();
            5u32
        })
        .await
        .unwrap();
    assert_eq!(*got, 5);
    assert_eq!(fresh("kept").await, Some((4, false)));
}

async fn get_or_create_many_makes_only_the_missing_keys_in_one_call(backend: &str) {
    let f = fixture(backend, &[("cache.expire", "60"), ("cache.stale", "60")]);
    let ns = f.manager.namespace("n");
    ns.put("1", "one".to_string()).await.unwrap();
    let asked = std::sync::Mutex::new(Vec::new());
    let make = |missing: Vec<String>| {
        asked.lock().unwrap().push(missing.clone());
        async move { missing.iter().map(|k| format!("made {k}")).collect() }
    };
    let values = ns.get_or_create_many(&["1", "2", "3"], make).await.unwrap();
    let values: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
    assert_eq!(values, ["one", "made 2", "made 3"]);
    assert_eq!(*asked.lock().unwrap(), [vec!["2", "3"]]);
    // Every key is fresh now: no call.
    let again = ns.get_or_create_many(&["3", "2", "1"], make).await.unwrap();
    assert_eq!(*again[0], "made 3");
    assert_eq!(asked.lock().unwrap().len(), 1);
    // Past `expire`, a stale key is regenerated by the batch that finds
    // it (nobody else is), and a key that was never stored is made with it.
    f.clock.advance(Duration::from_secs(61));
    let renewed = ns.get_or_create_many(&["2", "4"], make).await.unwrap();
    assert_eq!(
        (renewed[0].as_str(), renewed[1].as_str()),
        ("made 2", "made 4")
    );
    assert_eq!(asked.lock().unwrap()[1], ["2", "4"]);
    assert_eq!(*ns.get::<String>("4").await.unwrap().unwrap(), "made 4");
}

async fn get_or_create_many_waits_for_a_key_another_caller_is_creating(backend: &str) {
    let f = fixture(backend, &[]);
    let ns = f.manager.namespace("n");
    let (started_tx, started) = oneshot::channel();
    let (release, released) = oneshot::channel::<()>();
    let single = tokio::spawn({
        let ns = ns.clone();
        async move {
            ns.get_or_create("b", || async move {
                started_tx.send(()).unwrap();
                released.await.unwrap();
                "b from the single call".to_string()
            })
            .await
        }
    });
    started.await.unwrap();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let batch = tokio::spawn({
        let ns = ns.clone();
        let asked = asked.clone();
        async move {
            ns.get_or_create_many(&["a", "b"], move |missing: Vec<String>| {
                asked.lock().unwrap().push(missing.clone());
                async move {
                    missing
                        .iter()
                        .map(|k| format!("{k} from the batch"))
                        .collect()
                }
            })
            .await
        }
    });
    // The batch makes "a" and then waits for "b": "a" is stored while the
    // single call still holds "b".
    eventually("the batch stores \"a\"", async || {
        ns.contains::<String>("a").await.unwrap()
    })
    .await;
    assert!(!batch.is_finished());
    release.send(()).unwrap();
    assert_eq!(*single.await.unwrap().unwrap(), "b from the single call");
    let values = batch.await.unwrap().unwrap();
    assert_eq!(*values[0], "a from the batch");
    assert_eq!(*values[1], "b from the single call");
    assert_eq!(*asked.lock().unwrap(), [vec!["a"]]);
}

async fn overlapping_batches_make_each_key_once(backend: &str) {
    let f = fixture(backend, &[]);
    let ns = f.manager.namespace("n");
    let made = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // Eight batches over the same twelve keys, each in its own order, so
    // that they claim keys from each other: none may wait on another
    // while it holds keys of its own.
    let batches = (0..8u32).map(|b| {
        let ns = ns.clone();
        let made = made.clone();
        tokio::spawn(async move {
            let mut keys: Vec<String> = (0..12u32).map(|k| k.to_string()).collect();
            keys.rotate_left(b as usize);
            if b % 2 == 1 {
                keys.reverse();
            }
            let values = ns
                .get_or_create_many(&keys, move |missing: Vec<String>| {
                    let made = made.clone();
                    async move {
                        for _ in 0..5 {
                            tokio::task::yield_now().await;
                        }
                        made.lock().unwrap().extend(missing.iter().cloned());
                        missing.iter().map(|k| format!("v{k}")).collect()
                    }
                })
                .await
                .unwrap();
            for (key, value) in keys.iter().zip(values) {
                assert_eq!(*value, format!("v{key}"));
            }
        })
    });
    for batch in batches.collect::<Vec<_>>() {
        batch.await.unwrap();
    }
    let mut made = made.lock().unwrap().clone();
    made.sort_by_key(|k| k.parse::<u32>().unwrap());
    let expected: Vec<String> = (0..12u32).map(|k| k.to_string()).collect();
    assert_eq!(made, expected, "each key made exactly once");
}

async fn a_failing_or_miscounting_batch_creator_fails_its_keys(backend: &str) {
    let f = fixture(backend, &[]);
    let ns = f.manager.namespace("n");
    ns.put("kept", 1u32).await.unwrap();
    let failed = ns
        .get_or_try_create_many(&["kept", "x"], |_missing: Vec<String>| async move {
            Err::<Vec<u32>, _>(Boom.to_string())
        })
        .await
        .unwrap_err();
    assert!(failed.is_creator());
    assert!(!ns.contains::<u32>("x").await.unwrap());
    let short = ns
        .get_or_create_many(
            &["y", "z"],
            |_missing: Vec<String>| async move { vec![1u32] },
        )
        .await
        .unwrap_err();
    assert!(short.is_creator());
    assert!(short.to_string().contains("1 values for 2 keys"), "{short}");
    // Nothing was left locked: the next call makes them.
    let values = ns
        .get_or_create_many(&["y", "z"], |missing: Vec<String>| async move {
            missing.iter().map(|_| 7u32).collect()
        })
        .await
        .unwrap();
    assert_eq!((*values[0], *values[1]), (7, 7));
}

async fn invalidate_tag_hides_what_carries_the_tag_and_nothing_else(backend: &str) {
    let f = fixture(backend, &[]);
    let region = f.manager.default_region();
    let ns = f.manager.namespace("n");
    let other = f.manager.namespace("other");
    ns.clone()
        .tags(["a"])
        .unwrap()
        .put("k1", 1u8)
        .await
        .unwrap();
    ns.clone()
        .tags(["b #!✓", "a"])
        .unwrap()
        .put("k2", 2u8)
        .await
        .unwrap();
    ns.clone()
        .tags(["b #!✓"])
        .unwrap()
        .put("k3", 3u8)
        .await
        .unwrap();
    ns.put("k4", 4u8).await.unwrap();
    other.put("k1", 5u8).await.unwrap();
    let keys = ["k1", "k2", "k3", "k4"];
    // Read once, so a shape with an L1 holds copies of each.
    for key in keys {
        assert!(ns.get::<u8>(key).await.unwrap().is_some(), "{key}");
    }
    f.clock.advance(Duration::from_millis(1));
    region.invalidate_tag("a").await.unwrap();
    for (key, shown) in [("k1", false), ("k2", false), ("k3", true), ("k4", true)] {
        assert_eq!(ns.contains::<u8>(key).await.unwrap(), shown, "{key}");
        assert_eq!(ns.peek::<u8>(key).await.unwrap().is_some(), shown, "{key}");
    }
    let many: Vec<Option<u8>> = ns
        .get_many::<u8, _>(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.map(|v| *v))
        .collect();
    assert_eq!(many, [None, None, Some(3), Some(4)]);
    assert_eq!(*other.get::<u8>("k1").await.unwrap().unwrap(), 5);
    // An entry written in the same millisecond as the invalidation may
    // predate it: it is hidden too. One written later is not.
    ns.clone()
        .tags(["a"])
        .unwrap()
        .put("k1", 10u8)
        .await
        .unwrap();
    assert!(!ns.contains::<u8>("k1").await.unwrap());
    f.clock.advance(Duration::from_millis(1));
    ns.clone()
        .tags(["a"])
        .unwrap()
        .put("k1", 11u8)
        .await
        .unwrap();
    assert_eq!(*ns.get::<u8>("k1").await.unwrap().unwrap(), 11);
    // Another tag's invalidation (any bytes, separators included) leaves it.
    region.invalidate_tag("b #!✓").await.unwrap();
    assert_eq!(*ns.get::<u8>("k1").await.unwrap().unwrap(), 11);
    assert!(!ns.contains::<u8>("k3").await.unwrap());
    assert_eq!(*ns.get::<u8>("k4").await.unwrap().unwrap(), 4);
}

async fn a_tagged_entry_is_made_anew_after_its_tag_is_invalidated(backend: &str) {
    let f = fixture(backend, &[]);
    let region = f.manager.default_region();
    let ns = f.manager.namespace("n").tags(["user:7"]).unwrap();
    let calls = AtomicUsize::new(0);
    let make = || async { calls.fetch_add(1, Ordering::SeqCst) as u32 };
    assert_eq!(*ns.get_or_create("k", make).await.unwrap(), 0);
    assert_eq!(*ns.get_or_create("k", make).await.unwrap(), 0);
    f.clock.advance(Duration::from_millis(1));
    region.invalidate_tag("user:7").await.unwrap();
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(*ns.get_or_create("k", make).await.unwrap(), 1);
    assert_eq!(*ns.get_or_create("k", make).await.unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A tag nobody carries costs nothing and hides nothing.
    region.invalidate_tag("user:8").await.unwrap();
    assert_eq!(*ns.get_or_create("k", make).await.unwrap(), 1);
}

async fn a_creator_tags_its_entry_and_a_bad_tag_fails_the_call(backend: &str) {
    let f = fixture(backend, &[]);
    let region = f.manager.default_region();
    let ns = f.manager.namespace("n").tags(["post"]).unwrap();
    let calls = AtomicUsize::new(0);
    let make = || async {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        assert!(tankard::CreatorContext::add_tag("author:3")?);
        assert_eq!(tankard::CreatorContext::tags(), ["author:3"]);
        Ok::<_, tankard::Error>(n)
    };
    assert_eq!(*ns.get_or_try_create("p", make).await.unwrap(), 0);
    f.clock.advance(Duration::from_millis(1));
    // The creator's tag and the handle's both hide it.
    region.invalidate_tag("author:3").await.unwrap();
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(*ns.get_or_try_create("p", make).await.unwrap(), 1);
    region.invalidate_tag("post").await.unwrap();
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(*ns.get_or_try_create("p", make).await.unwrap(), 2);
    assert_eq!(*ns.get_or_try_create("p", make).await.unwrap(), 2);
    // A bad tag fails the call, and nothing is stored.
    let err = ns
        .get_or_try_create("bad", || async {
            let refused = tankard::CreatorContext::add_tag("");
            assert!(refused.unwrap_err().is_bad_tag());
            Ok::<_, tankard::Error>(1u8)
        })
        .await
        .unwrap_err();
    assert!(err.is_bad_tag(), "{err}");
    assert!(!ns.contains::<u8>("bad").await.unwrap());
}

async fn bad_tags_are_errors(backend: &str) {
    let f = fixture(backend, &[]);
    let region = f.manager.default_region();
    let ns = f.manager.namespace("n");
    let long = "t".repeat(tankard::MAX_TAG_LEN + 1);
    for tag in ["", long.as_str()] {
        assert!(region.invalidate_tag(tag).await.unwrap_err().is_bad_tag());
        assert!(ns.clone().tags([tag]).unwrap_err().is_bad_tag());
    }
    let most = "t".repeat(tankard::MAX_TAG_LEN);
    region.invalidate_tag(&most).await.unwrap();
    let many: Vec<String> = (0..=tankard::MAX_TAGS).map(|i| format!("t{i}")).collect();
    assert!(ns.clone().tags(&many).unwrap_err().is_bad_tag());
    let all = ns.clone().tags(&many[1..]).unwrap();
    all.put("k", 1u8).await.unwrap();
    f.clock.advance(Duration::from_millis(1));
    region.invalidate_tag("t32").await.unwrap();
    assert!(!ns.contains::<u8>("k").await.unwrap());
}
