//! The attribute on sync and async functions, free and methods, with each
//! option, and the companions.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tankard::{CacheManager, Clock, Config};

use crate::support;

static MEM: LazyLock<CacheManager> = LazyLock::new(support::memory);

fn runs(counter: &AtomicU32) -> u32 {
    counter.load(Ordering::SeqCst)
}

static SUM_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = MEM)]
fn slow_sum(a: u64, b: u64) -> u64 {
    SUM_RUNS.fetch_add(1, Ordering::SeqCst);
    a + b
}

#[test]
fn a_sync_function_runs_once_per_argument_list() {
    assert_eq!(slow_sum(1, 2), 3);
    assert_eq!(slow_sum(1, 2), 3);
    assert_eq!(runs(&SUM_RUNS), 1);
    assert_eq!(slow_sum(2, 1), 3);
    assert_eq!(runs(&SUM_RUNS), 2);
}

static FETCH_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = MEM)]
async fn fetch(name: &str, times: usize) -> String {
    FETCH_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    name.repeat(times)
}

#[tokio::test]
async fn an_async_function_runs_once_per_argument_list() {
    assert_eq!(fetch("ab", 2).await, "abab");
    assert_eq!(fetch("ab", 2).await, "abab");
    assert_eq!(runs(&FETCH_RUNS), 1);
    // "ab",2 and "a","b"-like lists cannot collide: strings are quoted.
    assert_eq!(fetch("abab", 1).await, "abab");
    assert_eq!(runs(&FETCH_RUNS), 2);
}

#[test]
fn the_default_namespace_is_the_module_path() {
    assert_eq!(slow_sum(40, 2), 42);
    assert_eq!(slow_sum_peek(40, 2).unwrap(), Some(42));
    // On a memory region the function keeps its results in its own map,
    // which the namespace's clear reaches.
    let ns = MEM.namespace(concat!(module_path!(), "::slow_sum"));
    tankard::blocking::Cache::new(ns.clone()).clear().unwrap();
    assert_eq!(slow_sum_peek(40, 2).unwrap(), None);
    let before = runs(&SUM_RUNS);
    assert_eq!(slow_sum(40, 2), 42);
    assert_eq!(runs(&SUM_RUNS), before + 1);
    // Another namespace's clear does not.
    tankard::blocking::Cache::new(MEM.namespace("elsewhere"))
        .clear()
        .unwrap();
    assert_eq!(slow_sum_peek(40, 2).unwrap(), Some(42));
}

static TWIN_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = MEM)]
fn twin_a(n: u32) -> String {
    TWIN_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("a{n}")
}

#[tankard::cached(manager = MEM)]
fn twin_b(n: u32) -> String {
    TWIN_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("b{n}")
}

#[test]
fn two_functions_with_the_same_arguments_never_share_entries() {
    assert_eq!(twin_a(1), "a1");
    assert_eq!(twin_b(1), "b1");
    assert_eq!(twin_a(1), "a1");
    assert_eq!(twin_b(1), "b1");
    assert_eq!(runs(&TWIN_RUNS), 2);
}

mod inner {
    use super::*;

    pub static SHARED_RUNS: AtomicU32 = AtomicU32::new(0);

    #[tankard::cached(manager = MEM)]
    pub fn shared(n: u32) -> u32 {
        SHARED_RUNS.fetch_add(1, Ordering::SeqCst);
        n + 1
    }
}

mod reexport {
    pub use super::inner::shared as also_shared;
}

#[test]
fn one_function_reached_through_two_paths_shares_entries() {
    assert_eq!(inner::shared(5), 6);
    assert_eq!(reexport::also_shared(5), 6);
    assert_eq!(runs(&inner::SHARED_RUNS), 1);
    // Companions are items of their own: re-export them too where needed.
    assert_eq!(inner::shared_peek(5).unwrap(), Some(6));
}

struct Greeter {
    greeting: &'static str,
}

static GREET_RUNS: AtomicU32 = AtomicU32::new(0);

impl Greeter {
    #[tankard::cached(manager = MEM)]
    fn greet(&self, name: &str) -> String {
        GREET_RUNS.fetch_add(1, Ordering::SeqCst);
        format!("{} {name}", self.greeting)
    }

    #[tankard::cached(manager = MEM, key = (self.greeting, name))]
    async fn greet_keyed(&self, name: &str) -> String {
        format!("{} {name}", self.greeting)
    }
}

#[test]
fn a_method_keys_on_its_arguments_not_on_self() {
    let hello = Greeter { greeting: "Hello" };
    let howdy = Greeter { greeting: "Howdy" };
    assert_eq!(hello.greet("Fred"), "Hello Fred");
    // Same arguments: the receiver is not part of the key.
    assert_eq!(howdy.greet("Fred"), "Hello Fred");
    assert_eq!(runs(&GREET_RUNS), 1);
    assert_eq!(
        howdy.greet_peek("Fred").unwrap().as_deref(),
        Some("Hello Fred")
    );
}

#[tokio::test]
async fn a_key_expression_can_key_on_self() {
    let hello = Greeter { greeting: "Hello" };
    let howdy = Greeter { greeting: "Howdy" };
    assert_eq!(hello.greet_keyed("Fred").await, "Hello Fred");
    assert_eq!(howdy.greet_keyed("Fred").await, "Howdy Fred");
    assert_eq!(hello.greet_keyed("Fred").await, "Hello Fred");
}

mod two_types {
    use super::*;

    pub struct Users;
    pub struct Posts;

    impl Users {
        #[tankard::cached(manager = MEM)]
        pub fn get(&self, id: u32) -> String {
            format!("user {id}")
        }
    }

    impl Posts {
        #[tankard::cached(manager = MEM)]
        pub fn get(&self, id: u32) -> String {
            format!("post {id}")
        }
    }

    pub struct Typed<T>(pub std::marker::PhantomData<T>);

    impl<T: 'static> Typed<T> {
        #[tankard::cached(manager = MEM)]
        pub fn name(&self, n: u8) -> String {
            format!("{}:{n}", std::any::type_name::<T>())
        }
    }
}

#[test]
fn methods_of_two_types_in_one_module_never_share_entries() {
    use two_types::*;
    assert_eq!(Users.get(1), "user 1");
    assert_eq!(Posts.get(1), "post 1");
    assert_eq!(Users.get(1), "user 1");
    assert_eq!(Posts.get(1), "post 1");
    let a = Typed::<u8>(Default::default());
    let b = Typed::<u16>(Default::default());
    assert_eq!(a.name(1), "u8:1");
    assert_eq!(b.name(1), "u16:1");
    assert_eq!(a.name(1), "u8:1");
    assert_eq!(b.name(1), "u16:1");
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Beer {
    name: String,
}

static BEER_RUNS: AtomicU32 = AtomicU32::new(0);

impl Beer {
    #[tankard::cached(manager = MEM)]
    fn load(id: u32) -> Self {
        BEER_RUNS.fetch_add(1, Ordering::SeqCst);
        Beer {
            name: format!("ale {id}"),
        }
    }

    #[tankard::cached(manager = MEM, associated)]
    fn label(id: u32) -> String {
        format!("label {id}")
    }
}

#[test]
fn associated_functions_are_cached_and_have_companions() {
    assert_eq!(Beer::load(1).name, "ale 1");
    assert_eq!(Beer::load(1).name, "ale 1");
    assert_eq!(runs(&BEER_RUNS), 1);
    assert!(Beer::load_invalidate(1).unwrap());
    assert_eq!(Beer::label(2), "label 2");
    assert_eq!(Beer::label_refresh(2), "label 2");
    assert_eq!(Beer::label_peek(2).unwrap().as_deref(), Some("label 2"));
}

static SKIP_RUNS: AtomicU32 = AtomicU32::new(0);

struct Conn(&'static str);

#[tankard::cached(manager = MEM, skip(conn, verbose))]
fn count_rows(conn: &Conn, table: &str, verbose: bool) -> usize {
    SKIP_RUNS.fetch_add(1, Ordering::SeqCst);
    if verbose {
        eprintln!("counting {table} on {}", conn.0);
    }
    table.len()
}

#[test]
fn skipped_arguments_are_not_part_of_the_key() {
    assert_eq!(count_rows(&Conn("primary"), "ales", false), 4);
    assert_eq!(count_rows(&Conn("replica"), "ales", true), 4);
    assert_eq!(runs(&SKIP_RUNS), 1);
    assert_eq!(count_rows(&Conn("primary"), "stouts", false), 6);
    assert_eq!(runs(&SKIP_RUNS), 2);
    // The companions take every argument; the skipped ones do not matter.
    assert_eq!(
        count_rows_peek(&Conn("other"), "stouts", true).unwrap(),
        Some(6)
    );
}

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("bad input: {0}")]
    Bad(String),
    #[error(transparent)]
    Cache(#[from] tankard::Error),
}

static PARSE_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = MEM)]
async fn parse(text: &str) -> Result<u32, AppError> {
    PARSE_RUNS.fetch_add(1, Ordering::SeqCst);
    let n: u32 = text.parse().map_err(|_| AppError::Bad(text.to_owned()))?;
    if n == 0 {
        return Err(AppError::Bad("zero".into()));
    }
    Ok(n)
}

#[tokio::test]
async fn a_result_function_caches_only_ok() {
    assert_eq!(parse("7").await.unwrap(), 7);
    assert_eq!(parse("7").await.unwrap(), 7);
    assert_eq!(runs(&PARSE_RUNS), 1);
    assert!(matches!(parse("x").await, Err(AppError::Bad(t)) if t == "x"));
    assert!(matches!(parse("x").await, Err(AppError::Bad(_))));
    assert!(matches!(parse("0").await, Err(AppError::Bad(t)) if t == "zero"));
    assert_eq!(runs(&PARSE_RUNS), 4);
    assert_eq!(parse_peek("x").await.unwrap(), None);
    assert_eq!(parse_peek("7").await.unwrap(), Some(7));
}

#[tankard::cached(manager = MEM)]
fn read_len(path: &str) -> std::io::Result<usize> {
    Ok(path.len())
}

#[tankard::cached(manager = MEM)]
fn anyhow_len(text: &str) -> anyhow::Result<usize> {
    anyhow::ensure!(!text.is_empty(), "empty");
    Ok(text.len())
}

#[tankard::cached(manager = MEM)]
fn boxed_len(text: &str) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    Ok(text.len())
}

#[test]
fn result_aliases_and_common_error_types_work() {
    assert_eq!(read_len("abc").unwrap(), 3);
    assert_eq!(anyhow_len("abcd").unwrap(), 4);
    assert_eq!(anyhow_len("").unwrap_err().to_string(), "empty");
    assert_eq!(boxed_len("ab").unwrap(), 2);
    assert_eq!(read_len_peek("abc").unwrap(), Some(3));
}

static FIND_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = MEM)]
fn find(id: u32) -> Option<String> {
    FIND_RUNS.fetch_add(1, Ordering::SeqCst);
    (id < 10).then(|| format!("item {id}"))
}

static FIND_ALL_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = MEM, cache_none = true)]
fn find_remembering_none(id: u32) -> Option<String> {
    FIND_ALL_RUNS.fetch_add(1, Ordering::SeqCst);
    (id < 10).then(|| format!("item {id}"))
}

#[test]
fn an_option_function_caches_none_only_when_asked() {
    assert_eq!(find(1).as_deref(), Some("item 1"));
    assert_eq!(find(1).as_deref(), Some("item 1"));
    assert_eq!(find(50), None);
    assert_eq!(find(50), None);
    assert_eq!(runs(&FIND_RUNS), 3);
    assert_eq!(find_peek(50).unwrap(), None);

    assert_eq!(find_remembering_none(50), None);
    assert_eq!(find_remembering_none(50), None);
    assert_eq!(runs(&FIND_ALL_RUNS), 1);
    // With cache_none the cached type is the Option itself.
    assert_eq!(find_remembering_none_peek(50).unwrap(), Some(None));
}

/// A manager of its own: the test reads its region's counters.
static DECLINING: LazyLock<CacheManager> = LazyLock::new(support::memory);

#[tankard::cached(manager = DECLINING)]
fn find_declining(id: u32) -> Option<String> {
    (id < 10).then(|| format!("item {id}"))
}

#[test]
fn a_none_counts_as_a_creator_call_not_a_creator_error() {
    assert_eq!(find_declining(50), None);
    assert_eq!(find_declining(50), None);
    assert_eq!(find_declining(1).as_deref(), Some("item 1"));
    assert_eq!(find_declining(1).as_deref(), Some("item 1"));
    let stats = DECLINING.default_region().stats();
    assert_eq!((stats.creator_calls, stats.creator_errors), (3, 0));
    assert_eq!((stats.misses, stats.hits), (3, 1));
}

static COMPANION_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = MEM)]
fn page(name: &str) -> String {
    COMPANION_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("page {name} #{}", runs(&COMPANION_RUNS))
}

#[test]
fn sync_companions_share_the_functions_key() {
    assert_eq!(page_peek("a").unwrap(), None);
    assert!(!page_invalidate("a").unwrap());
    assert_eq!(page("a"), "page a #1");
    assert_eq!(page_peek("a").unwrap().as_deref(), Some("page a #1"));
    // refresh runs the body even though a value is cached, and stores it.
    assert_eq!(page_refresh("a"), "page a #2");
    assert_eq!(page("a"), "page a #2");
    page_set("a", &"set by hand".to_string()).unwrap();
    assert_eq!(page("a"), "set by hand");
    assert!(page_invalidate("a").unwrap());
    assert_eq!(page("a"), "page a #3");
    assert_eq!(runs(&COMPANION_RUNS), 3);
}

static ASYNC_COMPANION_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = MEM)]
async fn async_page(name: &str) -> Result<String, tankard::Error> {
    // A cached call made by the body during a refresh is an ordinary call.
    let inner = fetch(name, 1).await;
    let n = ASYNC_COMPANION_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(format!("{inner} #{n}"))
}

#[tokio::test]
async fn async_companions_share_the_functions_key() {
    assert_eq!(async_page("b").await.unwrap(), "b #1");
    assert_eq!(async_page_refresh("b").await.unwrap(), "b #2");
    assert_eq!(async_page("b").await.unwrap(), "b #2");
    assert_eq!(async_page_peek("b").await.unwrap().as_deref(), Some("b #2"));
    async_page_set("b", &"manual".to_string()).await.unwrap();
    assert_eq!(async_page("b").await.unwrap(), "manual");
    assert!(async_page_invalidate("b").await.unwrap());
    assert_eq!(async_page_peek("b").await.unwrap(), None);
    // fetch("b", 1) ran once, as an ordinary cached call, despite the refresh.
    assert_eq!(fetch_peek("b", 1).await.unwrap().as_deref(), Some("b"));
}

static REGION_RUNS: AtomicU32 = AtomicU32::new(0);

static SEED: LazyLock<CacheManager> =
    LazyLock::new(|| support::seed(&support::static_dir().join("functions-seed")));

#[tankard::cached(manager = SEED, region = "long_term")]
fn on_disk(name: &str) -> String {
    REGION_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("disk {name}")
}

#[tankard::cached(manager = SEED, region = "short_term", namespace = "views::hello")]
fn in_memory(name: &str) -> String {
    format!("memory {name}")
}

#[test]
fn region_and_namespace_choose_where_values_live() {
    assert_eq!(on_disk("Fred"), "disk Fred");
    assert_eq!(on_disk("Fred"), "disk Fred");
    assert_eq!(runs(&REGION_RUNS), 1);
    assert_eq!(SEED.region("long_term").unwrap().backend_name(), "file");
    assert!(SEED.region("long_term").unwrap().stats().hits >= 1);

    // On a shared backend the key is the argument list's text (DESIGN §6).
    let ns = SEED
        .region("long_term")
        .unwrap()
        .namespace(concat!(module_path!(), "::on_disk"));
    let stored = tankard::blocking::Cache::new(ns)
        .get::<String>(r#""Fred""#)
        .unwrap();
    assert_eq!(stored.as_deref().map(String::as_str), Some("disk Fred"));

    assert_eq!(in_memory("Fred"), "memory Fred");
    assert_eq!(
        in_memory_peek("Fred").unwrap().as_deref(),
        Some("memory Fred")
    );
    let short_term = SEED.region("short_term").unwrap();
    assert_eq!(short_term.backend_name(), "memory");
    assert!(short_term.stats().misses >= 1);
    tankard::blocking::Cache::new(short_term.namespace("views::hello"))
        .clear()
        .unwrap();
    assert_eq!(in_memory_peek("Fred").unwrap(), None);
}

static CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::manual(1_000_000));
static TIMED: LazyLock<CacheManager> = LazyLock::new(|| {
    let config = Config::from_flat([
        ("cache.type", "memory"),
        ("cache.regions", "long_term"),
        ("cache.long_term.expire", "86400"),
    ])
    .unwrap();
    CacheManager::with_clock(config, CLOCK.clone()).unwrap()
});

static EXPIRE_RUNS: AtomicU32 = AtomicU32::new(0);
static OVERRIDE_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = TIMED, expire = 10)]
fn ten_seconds(n: u8) -> u8 {
    EXPIRE_RUNS.fetch_add(1, Ordering::SeqCst);
    n
}

#[tankard::cached(manager = TIMED, region = "long_term", expire = 60 * 2)]
fn two_minutes(n: u8) -> u8 {
    OVERRIDE_RUNS.fetch_add(1, Ordering::SeqCst);
    n
}

#[test]
fn expire_sets_how_long_a_value_stays_fresh() {
    assert_eq!(ten_seconds(1), 1);
    assert_eq!(two_minutes(1), 1);
    CLOCK.advance(Duration::from_secs(9));
    assert_eq!(ten_seconds(1), 1);
    assert_eq!(runs(&EXPIRE_RUNS), 1);
    CLOCK.advance(Duration::from_secs(2));
    assert_eq!(ten_seconds(1), 1);
    assert_eq!(runs(&EXPIRE_RUNS), 2);
    // The region's day is overridden by the function's two minutes.
    assert_eq!(two_minutes(1), 1);
    assert_eq!(runs(&OVERRIDE_RUNS), 1);
    CLOCK.advance(Duration::from_secs(120));
    assert_eq!(two_minutes(1), 1);
    assert_eq!(runs(&OVERRIDE_RUNS), 2);
}

static DISABLED: LazyLock<CacheManager> = LazyLock::new(|| {
    let config = Config::from_flat([
        ("cache.type", "memory"),
        ("cache.regions", "off"),
        ("cache.off.enabled", "false"),
    ])
    .unwrap();
    CacheManager::new(config).unwrap()
});

static DISABLED_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = DISABLED, region = "off")]
fn uncached(n: u8) -> u8 {
    DISABLED_RUNS.fetch_add(1, Ordering::SeqCst);
    n
}

#[test]
fn a_disabled_region_runs_the_function_every_time() {
    let logs = support::Logs::default();
    logs.capture(|| {
        assert_eq!(uncached(1), 1);
        assert_eq!(uncached(1), 1);
    });
    assert_eq!(runs(&DISABLED_RUNS), 2);
    assert!(logs.errors().is_empty(), "{:?}", logs.errors());
}

#[tankard::cached(manager = MEM)]
fn borrowed(bytes: &[u8], pair: &(u8, char), tags: Vec<&str>, mut n: u8) -> String {
    n += 1;
    format!("{bytes:?}{pair:?}{tags:?}{n}")
}

#[test]
fn borrowed_and_mutable_arguments_work() {
    let a = borrowed(&[1, 2], &(3, 'x'), vec!["t"], 1);
    assert_eq!(a, "[1, 2](3, 'x')[\"t\"]2");
    assert_eq!(
        borrowed_peek(&[1, 2], &(3, 'x'), vec!["t"], 1).unwrap(),
        Some(a)
    );
    assert_eq!(borrowed_peek(&[1], &(3, 'x'), vec!["t"], 1).unwrap(), None);
}

#[tankard::cached]
fn through_the_global(n: u32) -> u32 {
    n * 3
}

#[test]
fn without_manager_the_installed_global_is_used() {
    let global = support::install_global();
    assert_eq!(through_the_global(3), 9);
    assert_eq!(through_the_global_peek(3).unwrap(), Some(9));
    let ns = global.namespace(concat!(module_path!(), "::through_the_global"));
    tankard::blocking::Cache::new(ns).clear().unwrap();
    assert_eq!(through_the_global_peek(3).unwrap(), None);
}

static HIT_MANAGER: LazyLock<CacheManager> = LazyLock::new(support::memory);

#[tankard::cached(manager = HIT_MANAGER)]
fn hit_sync(name: &str, n: u64) -> u64 {
    name.len() as u64 + n
}

#[tankard::cached(manager = HIT_MANAGER)]
async fn hit_async(name: &str, n: u64) -> Result<u64, tankard::Error> {
    Ok(name.len() as u64 + n)
}

/// Polls a future once: a memory hit completes in its first poll.
fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

#[test]
fn a_memory_hit_allocates_nothing_and_needs_no_runtime() {
    // Misses allocate (the entry, the key kept for the slow path): do them first.
    assert_eq!(hit_sync("abc", 1), 4);
    assert_eq!(
        poll_once(hit_async_peek("abc", 1)).map(|r| r.unwrap()),
        Some(None)
    );
    assert!(poll_once(hit_async("abc", 1)).is_none_or(|r| r.is_ok()));
    tankard::blocking::Cache::new(HIT_MANAGER.namespace("twin"))
        .put("k", 5u64)
        .unwrap();
    let twin = tankard::blocking::Cache::new(HIT_MANAGER.namespace("twin"));

    // The counter works: a String allocates.
    let info = allocation_counter::measure(|| {
        std::hint::black_box(String::from("x"));
    });
    assert_eq!(info.count_total, 1);
    let info = allocation_counter::measure(|| {
        assert_eq!(hit_sync("abc", 1), 4);
    });
    assert_eq!(info.count_total, 0, "sync hit: {info:?}");
    let info = allocation_counter::measure(|| {
        // Ready on the first poll, with no runtime at all: the fast path.
        assert_eq!(poll_once(hit_async("abc", 1)).map(|r| r.unwrap()), Some(4));
    });
    assert_eq!(info.count_total, 0, "async hit: {info:?}");
    let info = allocation_counter::measure(|| {
        assert_eq!(*twin.get_or_create("k", || 0u64).unwrap(), 5);
    });
    assert_eq!(info.count_total, 0, "blocking twin hit: {info:?}");
}

static LONG_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = SEED, region = "long_term")]
fn long_key(text: &str, n: u32) -> usize {
    LONG_RUNS.fetch_add(1, Ordering::SeqCst);
    text.len() + n as usize
}

#[test]
fn long_keys_are_hashed_on_shared_backends_and_stay_distinct() {
    let a = "a".repeat(1000);
    let b = format!("{}b", "a".repeat(999));
    assert_eq!(long_key(&a, 1), 1001);
    assert_eq!(long_key(&a, 1), 1001);
    assert_eq!(long_key(&b, 1), 1001);
    assert_eq!(long_key(&a, 2), 1002);
    assert_eq!(runs(&LONG_RUNS), 3);
    assert_eq!(long_key_peek(&b, 1).unwrap(), Some(1001));
}

static FLAKY_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = MEM)]
fn flaky(id: u32) -> Option<u32> {
    // Found the first time, gone afterwards.
    (FLAKY_RUNS.fetch_add(1, Ordering::SeqCst) == 0).then_some(id)
}

#[test]
fn a_refresh_that_finds_nothing_removes_the_old_value() {
    assert_eq!(flaky(7), Some(7));
    assert_eq!(flaky_peek(7).unwrap(), Some(7));
    assert_eq!(flaky_refresh(7), None);
    assert_eq!(flaky_peek(7).unwrap(), None);
}

/// The slow paths are boxed, so a cached call's future (and every future
/// that awaits one) stays small; unboxed they were over 700 bytes.
#[test]
fn a_cached_call_future_stays_small() {
    assert!(std::mem::size_of_val(&fetch("a", 1)) < 400);
    assert!(std::mem::size_of_val(&parse("1")) < 400);
}

static SEARCH_RUNS: AtomicU32 = AtomicU32::new(0);

/// An empty result is not worth keeping: the body says so.
#[tankard::cached(manager = MEM)]
async fn search(term: &str) -> Vec<String> {
    SEARCH_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    let found: Vec<String> = term
        .split('+')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    if found.is_empty() {
        assert!(tankard::CreatorContext::skip_store());
    }
    found
}

#[tokio::test]
async fn a_body_can_decline_to_store_its_value() {
    assert!(search("+").await.is_empty());
    assert!(search("+").await.is_empty());
    assert_eq!(runs(&SEARCH_RUNS), 2, "an empty result is not kept");
    assert_eq!(search("a+b").await, ["a", "b"]);
    assert_eq!(search("a+b").await, ["a", "b"]);
    assert_eq!(runs(&SEARCH_RUNS), 3);
}
