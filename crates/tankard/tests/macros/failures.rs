//! Bad input: a region that is not configured, values and keys that do
//! not encode, a failing backend, a panicking body. (A plain function in
//! a missing region: setup.rs.)

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

use tankard::{CacheManager, SerdeKey};

use crate::support;

static SEED: LazyLock<CacheManager> =
    LazyLock::new(|| support::seed(&support::static_dir().join("failures-seed")));

static MISSING_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = SEED, region = "medium_term")]
fn in_missing_region(n: u32) -> Result<u32, tankard::Error> {
    MISSING_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

#[test]
fn a_missing_region_is_an_error_naming_it_and_the_configured_ones() {
    let err = in_missing_region(1).unwrap_err();
    assert!(err.is_region_not_found());
    assert_eq!(
        err.to_string(),
        r#"no cache region named "medium_term"; configured regions: long_term, short_term"#
    );
    // The function was not run uncached behind the caller's back.
    assert_eq!(MISSING_RUNS.load(Ordering::SeqCst), 0);
    assert!(in_missing_region_peek(1).unwrap_err().is_region_not_found());
}

/// A value whose serialization always fails.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
struct Unencodable(u32);

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

static UNENCODABLE_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = SEED, region = "long_term")]
fn unencodable(n: u32) -> Unencodable {
    UNENCODABLE_RUNS.fetch_add(1, Ordering::SeqCst);
    Unencodable(n)
}

#[tankard::cached(manager = SEED, region = "long_term")]
async fn unencodable_result(n: u32) -> Result<Unencodable, tankard::Error> {
    Ok(Unencodable(n))
}

#[tokio::test]
async fn a_value_that_fails_to_encode_is_returned_and_not_stored() {
    let region = SEED.region("long_term").unwrap();
    let errors_before = region.stats().backend_errors;
    assert_eq!(unencodable(3), Unencodable(3));
    assert_eq!(unencodable(3), Unencodable(3));
    assert_eq!(UNENCODABLE_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(unencodable_peek(3).unwrap(), None);
    assert_eq!(unencodable_result(4).await.unwrap(), Unencodable(4));
    assert_eq!(unencodable_result_peek(4).await.unwrap(), None);
    assert!(region.stats().backend_errors >= errors_before + 3);
    // Storing it by hand says why.
    let err = unencodable_set(3, &Unencodable(3)).unwrap_err();
    assert!(err.is_encode(), "{err}");
}

#[derive(serde::Serialize)]
struct Filter {
    refuse: bool,
}

impl serde::Serialize for Refusing {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no key"))
    }
}

struct Refusing;

static KEY_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = SEED, region = "short_term", key = (SerdeKey(filter), SerdeKey(&Refusing)))]
fn keyed_badly(filter: &Filter) -> Result<bool, tankard::Error> {
    KEY_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(filter.refuse)
}

#[tankard::cached(manager = SEED, region = "short_term", key = SerdeKey(&Refusing))]
fn plain_keyed_badly(n: u32) -> u32 {
    KEY_RUNS.fetch_add(1, Ordering::SeqCst);
    n
}

#[test]
fn a_key_that_fails_to_encode_is_an_error_or_an_uncached_run() {
    let err = keyed_badly(&Filter { refuse: true }).unwrap_err();
    assert!(err.is_encode(), "{err}");
    assert_eq!(KEY_RUNS.load(Ordering::SeqCst), 0);
    let logs = support::Logs::default();
    logs.capture(|| {
        assert_eq!(plain_keyed_badly(5), 5);
        assert_eq!(plain_keyed_badly(5), 5);
    });
    assert_eq!(KEY_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(logs.errors().len(), 1, "{:?}", logs.errors());
}

/// A file region whose data directory is a file: every read and write fails.
fn broken_backend(mode: &str) -> CacheManager {
    let dir = support::static_dir().join(format!("broken-{mode}"));
    std::fs::create_dir_all(&dir).unwrap();
    let not_a_dir = dir.join("data");
    std::fs::write(&not_a_dir, b"not a directory").unwrap();
    let config = tankard::Config::from_flat([
        ("cache.type", "file"),
        ("cache.data_dir", not_a_dir.to_str().unwrap()),
        ("cache.lock_dir", dir.join("lock").to_str().unwrap()),
        ("cache.on_backend_error", mode),
    ])
    .unwrap();
    CacheManager::new(config).unwrap()
}

static STRICT: LazyLock<CacheManager> = LazyLock::new(|| broken_backend("error"));
static LENIENT: LazyLock<CacheManager> = LazyLock::new(|| broken_backend("bypass"));
static BROKEN_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = STRICT)]
fn strict_result(n: u32) -> Result<u32, tankard::Error> {
    BROKEN_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

#[tankard::cached(manager = STRICT)]
fn strict_plain(n: u32) -> u32 {
    n + 1
}

#[tankard::cached(manager = LENIENT)]
fn lenient_result(n: u32) -> Result<u32, tankard::Error> {
    Ok(n + 2)
}

#[test]
fn a_failing_backend_is_bypassed_unless_the_region_says_error() {
    let err = strict_result(1).unwrap_err();
    assert!(err.is_backend(), "{err}");
    assert_eq!(BROKEN_RUNS.load(Ordering::SeqCst), 0);
    // A plain function has no error channel: it runs and logs.
    let logs = support::Logs::default();
    logs.capture(|| assert_eq!(strict_plain(1), 2));
    assert!(!logs.errors().is_empty());
    // The default, bypass: the value, and the failure counted.
    assert_eq!(lenient_result(1).unwrap(), 3);
    assert!(LENIENT.default_region().stats().backend_errors >= 1);
}

static PANIC_RUNS: AtomicU32 = AtomicU32::new(0);
static PANIC_MANAGER: LazyLock<CacheManager> = LazyLock::new(support::memory);

#[tankard::cached(manager = PANIC_MANAGER)]
fn panics_first(n: u32) -> u32 {
    if PANIC_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        panic!("first run fails");
    }
    n
}

#[test]
fn a_panicking_body_panics_in_its_caller_and_the_next_call_runs_again() {
    let caught = std::panic::catch_unwind(|| panics_first(1));
    assert!(caught.is_err());
    assert_eq!(panics_first(1), 1);
    assert_eq!(panics_first(1), 1);
    assert_eq!(PANIC_RUNS.load(Ordering::SeqCst), 2);
}
