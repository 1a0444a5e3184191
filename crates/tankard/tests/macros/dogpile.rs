//! The dog-pile contract through the attribute: many concurrent calls on a
//! cold key run the body once and all get its value.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

use tankard::CacheManager;

use crate::support;

const CALLERS: u64 = 64;

static ASYNC_MANAGER: LazyLock<CacheManager> = LazyLock::new(support::memory);
static ASYNC_RUNS: AtomicU32 = AtomicU32::new(0);

/// Holds its creation open until every other caller waits on it, so the
/// test cannot pass by the callers simply arriving one after another.
#[tankard::cached(manager = ASYNC_MANAGER)]
async fn cold_square(n: u64) -> u64 {
    ASYNC_RUNS.fetch_add(1, Ordering::SeqCst);
    while ASYNC_MANAGER.default_region().stats().lock_waits < CALLERS - 1 {
        tokio::task::yield_now().await;
    }
    n * n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_async_calls_on_a_cold_key_run_the_body_once() {
    let calls: Vec<_> = (0..CALLERS)
        .map(|_| tokio::spawn(cold_square(12)))
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 144);
    }
    assert_eq!(ASYNC_RUNS.load(Ordering::SeqCst), 1);
    let stats = ASYNC_MANAGER.default_region().stats();
    assert_eq!(stats.creator_calls, 1);
    assert_eq!(stats.lock_waits, CALLERS - 1);
}

static SYNC_MANAGER: LazyLock<CacheManager> = LazyLock::new(support::memory);
static SYNC_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = SYNC_MANAGER)]
fn cold_cube(n: u64) -> u64 {
    SYNC_RUNS.fetch_add(1, Ordering::SeqCst);
    while SYNC_MANAGER.default_region().stats().lock_waits < CALLERS - 1 {
        std::thread::yield_now();
    }
    n * n * n
}

#[test]
fn sixty_four_sync_calls_on_a_cold_key_run_the_body_once() {
    let threads: Vec<_> = (0..CALLERS)
        .map(|_| std::thread::spawn(|| cold_cube(3)))
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 27);
    }
    assert_eq!(SYNC_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(SYNC_MANAGER.default_region().stats().creator_calls, 1);
}

static FILE_MANAGER: LazyLock<CacheManager> =
    LazyLock::new(|| support::seed(&support::static_dir().join("dogpile-file")));
static FILE_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = FILE_MANAGER, region = "long_term")]
async fn cold_on_disk(name: &str) -> Result<String, tankard::Error> {
    FILE_RUNS.fetch_add(1, Ordering::SeqCst);
    let region = FILE_MANAGER.region("long_term")?;
    while region.stats().lock_waits < CALLERS - 1 {
        tokio::task::yield_now().await;
    }
    Ok(format!("Hello {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_contract_holds_on_a_file_region_too() {
    let calls: Vec<_> = (0..CALLERS)
        .map(|_| tokio::spawn(cold_on_disk("Fred")))
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), "Hello Fred");
    }
    assert_eq!(FILE_RUNS.load(Ordering::SeqCst), 1);
}

static FAIL_MANAGER: LazyLock<CacheManager> = LazyLock::new(support::memory);
static FAIL_RUNS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("database down")]
    Down,
    #[error(transparent)]
    Cache(#[from] tankard::Error),
}

#[tankard::cached(manager = FAIL_MANAGER)]
async fn failing_load(id: u32) -> Result<String, LoadError> {
    FAIL_RUNS.fetch_add(1, Ordering::SeqCst);
    while FAIL_MANAGER.default_region().stats().lock_waits < 7 {
        tokio::task::yield_now().await;
    }
    let _ = id;
    Err(LoadError::Down)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_share_a_failing_body_and_the_next_call_tries_again() {
    let calls: Vec<_> = (0..8).map(|_| tokio::spawn(failing_load(1))).collect();
    let mut own = 0;
    let mut shared = 0;
    for call in calls {
        match call.await.unwrap() {
            Err(LoadError::Down) => own += 1,
            Err(LoadError::Cache(err)) => {
                assert!(err.is_creator(), "{err}");
                assert!(err.to_string().contains("database down"), "{err}");
                shared += 1;
            }
            Ok(v) => panic!("unexpected value {v}"),
        }
    }
    assert_eq!((own, shared), (1, 7));
    assert_eq!(FAIL_RUNS.load(Ordering::SeqCst), 1);
    assert!(matches!(failing_load(1).await, Err(LoadError::Down)));
    assert_eq!(FAIL_RUNS.load(Ordering::SeqCst), 2);
}
