//! Cached functions on memory regions, whose results live in the
//! function's own typed map: the region's invalidations, `starttime`, its
//! bounds, `usage` and `purge_expired` must reach that map as they reach
//! the region's own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Barrier, LazyLock};
use std::time::Duration;

use tankard::{CacheManager, Clock, Config, Invalidation, blocking};

fn runs(counter: &AtomicU32) -> u32 {
    counter.load(Ordering::SeqCst)
}

fn memory_with(clock: &Clock, options: &[(&str, &str)]) -> CacheManager {
    let mut flat = vec![("cache.type", "memory")];
    flat.extend_from_slice(options);
    CacheManager::with_clock(Config::from_flat(flat).unwrap(), clock.clone()).unwrap()
}

static SOFT_CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::manual(1_000_000));
static SOFT: LazyLock<CacheManager> = LazyLock::new(|| memory_with(&SOFT_CLOCK, &[]));
static SOFT_RUNS: AtomicU32 = AtomicU32::new(0);
/// The regenerating body and the test meet here twice: once when the body
/// has started, once to let it finish.
static SOFT_GATE: Barrier = Barrier::new(2);

#[tankard::cached(manager = SOFT)]
fn gated(n: u8) -> u32 {
    let run = SOFT_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if run == 2 {
        SOFT_GATE.wait();
        SOFT_GATE.wait();
    }
    u32::from(n) * 100 + run
}

#[test]
fn a_soft_invalidation_serves_the_old_value_while_one_caller_regenerates() {
    assert_eq!(gated(1), 101);
    SOFT_CLOCK.advance(Duration::from_millis(1));
    blocking::block_on(SOFT.default_region().invalidate(Invalidation::Soft))
        .unwrap()
        .unwrap();
    assert_eq!(gated_peek(1).unwrap(), None, "stale is not fresh");
    let leader = std::thread::spawn(|| gated(1));
    SOFT_GATE.wait(); // the leader's body is running
    assert_eq!(
        gated(1),
        101,
        "a second caller gets the stale value at once"
    );
    assert_eq!(SOFT.default_region().stats().stale_served, 1);
    SOFT_GATE.wait();
    assert_eq!(leader.join().unwrap(), 102);
    assert_eq!(gated(1), 102);
    assert_eq!(runs(&SOFT_RUNS), 2);
}

static HARD: LazyLock<CacheManager> = LazyLock::new(|| memory_with(&Clock::manual(5_000), &[]));
static HARD_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = HARD)]
fn hard(n: u8) -> u8 {
    HARD_RUNS.fetch_add(1, Ordering::SeqCst);
    n
}

#[test]
fn a_hard_invalidation_makes_every_result_missing() {
    assert_eq!(hard(1), 1);
    assert_eq!(hard(2), 2);
    assert_eq!(runs(&HARD_RUNS), 2);
    blocking::block_on(HARD.default_region().invalidate(Invalidation::Hard))
        .unwrap()
        .unwrap();
    assert_eq!(hard_peek(1).unwrap(), None);
    assert_eq!(hard(1), 1);
    assert_eq!(hard(2), 2);
    assert_eq!(runs(&HARD_RUNS), 4);
    assert_eq!(hard(1), 1);
    assert_eq!(runs(&HARD_RUNS), 4);
}

static START_CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::manual(10_000));
/// `starttime` is in seconds: results made before 20 s are stale.
static STARTING: LazyLock<CacheManager> =
    LazyLock::new(|| memory_with(&START_CLOCK, &[("cache.starttime", "20")]));
static START_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = STARTING)]
fn started(n: u8) -> u8 {
    START_RUNS.fetch_add(1, Ordering::SeqCst);
    n
}

#[test]
fn results_made_before_starttime_are_never_fresh() {
    assert_eq!(started(1), 1);
    assert_eq!(started(1), 1);
    assert_eq!(runs(&START_RUNS), 2, "stale from the start: made again");
    START_CLOCK.advance(Duration::from_secs(11));
    assert_eq!(started(1), 1);
    assert_eq!(started(1), 1);
    assert_eq!(runs(&START_RUNS), 3);
}

static BOUND_CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::manual(50_000));
static BOUNDED: LazyLock<CacheManager> = LazyLock::new(|| {
    memory_with(
        &BOUND_CLOCK,
        &[("cache.max_entries", "20"), ("cache.expire", "10")],
    )
});

#[tankard::cached(manager = BOUNDED)]
fn bounded(n: u32) -> u32 {
    n
}

#[tankard::cached(manager = BOUNDED)]
fn long_keyed(name: &str) -> usize {
    name.len()
}

#[test]
fn usage_bounds_and_purge_reach_the_functions_maps() {
    let region = BOUNDED.default_region();
    let entries = || blocking::block_on(region.usage()).unwrap().unwrap().entries;
    assert_eq!(entries(), Some(0));
    bounded(1);
    long_keyed(&"x".repeat(100));
    assert_eq!(entries(), Some(2));
    for n in 0..500 {
        assert_eq!(bounded(n), n);
    }
    let held = entries().unwrap();
    assert!(held <= 25, "max_entries = 20 per function map, held {held}");
    BOUND_CLOCK.advance(Duration::from_secs(11));
    let purged = blocking::block_on(region.purge_expired()).unwrap().unwrap();
    assert_eq!(purged.entries, held);
    assert_eq!(entries(), Some(0));
}

static FIRST: LazyLock<CacheManager> = LazyLock::new(|| memory_with(&Clock::manual(1), &[]));
static SECOND: LazyLock<CacheManager> = LazyLock::new(|| memory_with(&Clock::manual(1), &[]));
static PICKED_RUNS: AtomicU32 = AtomicU32::new(0);

fn pick(first: bool) -> &'static CacheManager {
    if first { &FIRST } else { &SECOND }
}

#[tankard::cached(manager = pick(first), key = n)]
fn picked(first: bool, n: u8) -> u8 {
    PICKED_RUNS.fetch_add(1, Ordering::SeqCst);
    n
}

#[test]
fn one_function_on_two_managers_keeps_a_map_in_each() {
    assert_eq!(picked(true, 1), 1);
    assert_eq!(picked(false, 1), 1);
    assert_eq!(runs(&PICKED_RUNS), 2, "each manager made its own");
    assert_eq!(picked(true, 1), 1);
    assert_eq!(picked(false, 1), 1);
    assert_eq!(runs(&PICKED_RUNS), 2, "and each kept it");
    assert_eq!(FIRST.default_region().stats().hits, 1);
    assert_eq!(SECOND.default_region().stats().hits, 1);
}

// Keys of one or two integers, `bool`s or `char`s are looked up as words,
// without their text; they must still name the entry their text key does.
static WORDS: LazyLock<CacheManager> = LazyLock::new(|| memory_with(&Clock::manual(9_000), &[]));
static NARROW_RUNS: AtomicU32 = AtomicU32::new(0);
static KEY_EVALUATIONS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = WORDS, namespace = "words::shared")]
fn narrow(n: u8, flag: bool) -> String {
    NARROW_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("narrow {n} {flag}")
}

#[tankard::cached(manager = WORDS, namespace = "words::shared")]
fn wide(n: i64, flag: bool) -> String {
    format!("wide {n} {flag}")
}

fn counted_key(n: u32) -> u32 {
    KEY_EVALUATIONS.fetch_add(1, Ordering::SeqCst);
    n / 10
}

#[tankard::cached(manager = WORDS, key = counted_key(n))]
fn by_tens(n: u32) -> u32 {
    n
}

#[test]
fn word_keys_name_the_entries_their_text_keys_name() {
    // `5u8,true` and `5i64,true` are both the text `5,true`: one entry.
    assert_eq!(narrow(5, true), "narrow 5 true");
    assert_eq!(wide(5, true), "narrow 5 true");
    assert_eq!(
        wide_peek(5, true).unwrap().as_deref(),
        Some("narrow 5 true")
    );
    // `-5` is another text, and so is `5,false`.
    assert_eq!(wide(-5, true), "wide -5 true");
    assert_eq!(narrow(5, false), "narrow 5 false");
    assert_eq!(runs(&NARROW_RUNS), 2);

    // The companions reach the same entries.
    assert!(wide_invalidate(5, true).unwrap());
    assert_eq!(narrow_peek(5, true).unwrap(), None);
    narrow_set(7, true, &"set".to_owned()).unwrap();
    assert_eq!(wide(7, true), "set");
    assert_eq!(narrow(5, true), "narrow 5 true");
    assert_eq!(runs(&NARROW_RUNS), 3);
}

#[test]
fn a_key_expression_is_evaluated_once_a_call() {
    assert_eq!(by_tens(12), 12);
    assert_eq!(KEY_EVALUATIONS.load(Ordering::SeqCst), 1, "miss");
    assert_eq!(by_tens(15), 12, "same key, 1");
    assert_eq!(KEY_EVALUATIONS.load(Ordering::SeqCst), 2, "hit");
    assert_eq!(by_tens_peek(19).unwrap(), Some(12));
    assert_eq!(KEY_EVALUATIONS.load(Ordering::SeqCst), 3, "companion");
}

static TAG_CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::manual(1_000_000));
static TAGGED: LazyLock<CacheManager> = LazyLock::new(|| memory_with(&TAG_CLOCK, &[]));
static TAG_RUNS: AtomicU32 = AtomicU32::new(0);

/// Tagged with its argument: `user:{id}`, and `users` for all of them.
#[tankard::cached(manager = TAGGED, tags = ["user:{id}", "users"])]
fn tagged_profile(id: u32) -> u32 {
    id * 100 + TAG_RUNS.fetch_add(1, Ordering::SeqCst) + 1
}

/// A format string that makes an empty tag: the result is not stored.
#[tankard::cached(manager = TAGGED, tags = ["{name}"])]
fn tagged_by_name(name: &str) -> Result<String, tankard::Error> {
    Ok(format!("hello {name}"))
}

#[test]
fn tags_written_over_the_arguments_hide_the_results_that_carry_them() {
    let invalidate = |tag: &str| {
        blocking::block_on(TAGGED.default_region().invalidate_tag(tag))
            .unwrap()
            .unwrap();
    };
    assert_eq!(tagged_profile(1), 101);
    assert_eq!(tagged_profile(2), 202);
    assert_eq!((tagged_profile(1), tagged_profile(2)), (101, 202), "hits");
    TAG_CLOCK.advance(Duration::from_millis(1));
    invalidate("user:1");
    TAG_CLOCK.advance(Duration::from_millis(1));
    assert_eq!(tagged_profile(1), 103, "made anew");
    assert_eq!(tagged_profile(2), 202, "another user's result stays");
    invalidate("users");
    TAG_CLOCK.advance(Duration::from_millis(1));
    assert_eq!((tagged_profile(1), tagged_profile(2)), (104, 205));
    assert_eq!(runs(&TAG_RUNS), 5);
    // `_set` tags what it writes as the body's results are tagged.
    tagged_profile_set(3, &999).unwrap();
    assert_eq!(tagged_profile_peek(3).unwrap(), Some(999));
    TAG_CLOCK.advance(Duration::from_millis(1));
    invalidate("user:3");
    assert_eq!(tagged_profile_peek(3).unwrap(), None);

    assert_eq!(tagged_by_name("ann").unwrap(), "hello ann");
    assert_eq!(tagged_by_name("").unwrap(), "hello ");
    assert_eq!(tagged_by_name_peek("").unwrap(), None, "nothing stored");
    assert_eq!(
        tagged_by_name_peek("ann").unwrap().as_deref(),
        Some("hello ann")
    );
}

static FILE_TAG_CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::manual(1_000_000));
static TAGGED_ON_FILES: LazyLock<CacheManager> = LazyLock::new(|| {
    let dir = crate::support::static_dir().join("tags-on-files");
    let data = dir.join("data").display().to_string();
    let lock = dir.join("lock").display().to_string();
    let flat = [
        ("cache.type", "file"),
        ("cache.data_dir", data.as_str()),
        ("cache.lock_dir", lock.as_str()),
    ];
    CacheManager::with_clock(Config::from_flat(flat).unwrap(), FILE_TAG_CLOCK.clone()).unwrap()
});
static FILE_TAG_RUNS: AtomicU32 = AtomicU32::new(0);

/// The same on a file region: the tags travel in the stored entry.
#[tankard::cached(manager = TAGGED_ON_FILES, tags = ["user:{id}"])]
async fn tagged_on_files(id: u32) -> u32 {
    id * 100 + FILE_TAG_RUNS.fetch_add(1, Ordering::SeqCst) + 1
}

#[tokio::test]
async fn tags_of_a_function_on_a_file_region_travel_in_its_entries() {
    TAGGED_ON_FILES.namespace("n").clear().await.unwrap();
    let first = tagged_on_files(1).await;
    let other = tagged_on_files(2).await;
    assert_eq!(tagged_on_files(1).await, first, "a hit");
    FILE_TAG_CLOCK.advance(Duration::from_millis(1));
    TAGGED_ON_FILES
        .default_region()
        .invalidate_tag("user:1")
        .await
        .unwrap();
    FILE_TAG_CLOCK.advance(Duration::from_millis(1));
    assert_ne!(tagged_on_files(1).await, first, "made anew");
    assert_eq!(tagged_on_files(2).await, other);
    tagged_on_files_set(3, &7).await.unwrap();
    assert_eq!(tagged_on_files_peek(3).await.unwrap(), Some(7));
    FILE_TAG_CLOCK.advance(Duration::from_millis(1));
    TAGGED_ON_FILES
        .default_region()
        .invalidate_tag("user:3")
        .await
        .unwrap();
    assert_eq!(tagged_on_files_peek(3).await.unwrap(), None);
}
