//! Per-region counters: hits, misses, stale values served, creator calls
//! and failures, lock waits and backend errors.
//!
//! The counters sit on the hit path, so a hit must not pay for an atomic
//! read-modify-write on a line other cores write too. Each thread claims
//! one of [`SLOTS`] exclusive slots (a row of counters on its own cache
//! lines) for its lifetime; as the only writer of its row it counts with a
//! plain load and store. Threads beyond the slots share one row and count
//! with `fetch_add`; that, and a thread's first count (which claims its
//! row), are out of line, so a hit carries only the own-row case. A
//! snapshot sums every row.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Exclusive counter rows; more concurrent threads than this share a row.
const SLOTS: usize = 64;
const SHARED: usize = SLOTS;

/// Which slots are taken, one bit each.
static TAKEN: AtomicU64 = AtomicU64::new(0);

/// A thread's claim on a slot, given back when the thread ends.
struct Claim(usize);

impl Drop for Claim {
    fn drop(&mut self) {
        // Counting during the rest of this thread's teardown uses the
        // shared row, so the slot's next owner is its only writer.
        let _ = SLOT.try_with(|slot| slot.set(SHARED));
        if self.0 < SLOTS {
            TAKEN.fetch_and(!(1 << self.0), Ordering::AcqRel);
        }
    }
}

fn claim_slot() -> usize {
    let mut taken = TAKEN.load(Ordering::Acquire);
    loop {
        let free = (!taken).trailing_zeros() as usize;
        if free >= SLOTS {
            return SHARED;
        }
        match TAKEN.compare_exchange_weak(
            taken,
            taken | (1 << free),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return free,
            Err(now) => taken = now,
        }
    }
}

thread_local! {
    static CLAIM: Claim = Claim(claim_slot());
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[inline(always)]
fn slot() -> usize {
    match SLOT.with(Cell::get) {
        usize::MAX => first_slot(),
        index => index,
    }
}

#[cold]
fn first_slot() -> usize {
    // The claim lives in its own thread-local so its destructor returns
    // the slot; a thread being torn down shares the row.
    let index = CLAIM.try_with(|claim| claim.0).unwrap_or(SHARED);
    SLOT.with(|slot| slot.set(index));
    index
}

/// One event the cache counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Hit = 0,
    Miss = 1,
    StaleServed = 2,
    CreatorCall = 3,
    CreatorError = 4,
    LockWait = 5,
    BackendError = 6,
    DecodeError = 7,
    // Counted by the fail-safe policy (DESIGN §4 `fail_safe`) once it lands;
    // its figure is already in `/stats` and the metrics.
    #[allow(dead_code)]
    FailSafeServed = 8,
}

const EVENTS: usize = 9;

#[repr(align(128))]
#[derive(Default)]
struct Shard([AtomicU64; EVENTS]);

/// The live counters of one region.
pub(crate) struct Counters {
    shards: Box<[Shard; SLOTS + 1]>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            shards: Box::new(std::array::from_fn(|_| Shard::default())),
        }
    }

    #[inline(always)]
    pub(crate) fn add(&self, event: Event) {
        let slot = SLOT.with(Cell::get);
        if slot < SLOTS {
            // This thread is the row's only writer: no read-modify-write needed.
            let counter = &self.shards[slot].0[event as usize];
            counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        } else {
            self.add_first_or_shared(event);
        }
    }

    /// [`add`](Self::add) on a thread's first count, or on a thread that
    /// shares the last row.
    #[cold]
    #[inline(never)]
    fn add_first_or_shared(&self, event: Event) {
        // On the shared row other threads add too; on a row just claimed
        // the read-modify-write is merely unneeded.
        let row = &self.shards[slot().min(SHARED)];
        row.0[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self, event: Event) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0[event as usize].load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            hits: self.sum(Event::Hit),
            misses: self.sum(Event::Miss),
            stale_served: self.sum(Event::StaleServed),
            creator_calls: self.sum(Event::CreatorCall),
            creator_errors: self.sum(Event::CreatorError),
            lock_waits: self.sum(Event::LockWait),
            backend_errors: self.sum(Event::BackendError),
            decode_errors: self.sum(Event::DecodeError),
        }
    }
}

/// A snapshot of one region's counters, from
/// [`Region::stats`](crate::Region::stats).
///
/// ```
/// # tokio_test::block_on(async {
/// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
/// let ns = cache.namespace("docs");
/// ns.get_or_create("k", || async { 1u32 }).await?;
/// ns.get_or_create("k", || async { 2u32 }).await?;
/// let stats = cache.default_region().stats();
/// assert_eq!((stats.misses, stats.hits, stats.creator_calls), (1, 1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Fresh values returned.
    pub hits: u64,
    /// Lookups that found nothing usable (absent, expired, invalidated, undecodable).
    pub misses: u64,
    /// Stale values returned while another caller regenerated them.
    pub stale_served: u64,
    /// Times a creator ran.
    pub creator_calls: u64,
    /// Times a creator failed or panicked. A creator that ran and made
    /// nothing to store (a `#[tankard::cached]` function's `None`, a page
    /// the page layer may not keep) is a call, not an error.
    pub creator_errors: u64,
    /// Callers that waited on another caller's creator (in this process or another).
    pub lock_waits: u64,
    /// Backend operations that failed or timed out.
    pub backend_errors: u64,
    /// Stored entries that could not be decoded (corrupt, foreign, tampered, changed type).
    pub decode_errors: u64,
}

/// One of a region's counters: its names and what it counts. The list is
/// [`Stats::COUNTERS`]; exporters read it instead of spelling the names out.
///
/// ```
/// let stats = tankard::Stats::default();
/// for counter in tankard::Stats::COUNTERS {
///     assert!(counter.metric.starts_with("tankard_"));
///     assert_eq!(counter.read(&stats), 0);
/// }
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Counter {
    /// The field of [`Stats`]: `hits`, `misses`, …
    pub name: &'static str,
    /// Its name in the `metrics` facade and in Prometheus: `tankard_hits_total`, …
    pub metric: &'static str,
    /// What it counts, in one sentence.
    pub help: &'static str,
    value: fn(&Stats) -> u64,
}

impl Counter {
    /// This counter's value in a snapshot.
    ///
    /// ```
    /// let hits = tankard::Stats::COUNTERS[0];
    /// assert_eq!((hits.name, hits.read(&tankard::Stats::default())), ("hits", 0));
    /// ```
    pub fn read(&self, stats: &Stats) -> u64 {
        (self.value)(stats)
    }
}

const fn counter(
    name: &'static str,
    metric: &'static str,
    help: &'static str,
    value: fn(&Stats) -> u64,
) -> Counter {
    Counter {
        name,
        metric,
        help,
        value,
    }
}

impl Stats {
    /// Every counter, in the order of the fields.
    ///
    /// ```
    /// let names: Vec<_> = tankard::Stats::COUNTERS.iter().map(|c| c.name).collect();
    /// assert_eq!(names[..2], ["hits", "misses"]);
    /// ```
    pub const COUNTERS: [Counter; 8] = [
        counter(
            "hits",
            "tankard_hits_total",
            "Fresh values returned.",
            |s| s.hits,
        ),
        counter(
            "misses",
            "tankard_misses_total",
            "Lookups that found nothing usable.",
            |s| s.misses,
        ),
        counter(
            "stale_served",
            "tankard_stale_served_total",
            "Stale values returned while another caller regenerated them.",
            |s| s.stale_served,
        ),
        counter(
            "creator_calls",
            "tankard_creator_calls_total",
            "Times a creator ran.",
            |s| s.creator_calls,
        ),
        counter(
            "creator_errors",
            "tankard_creator_errors_total",
            "Times a creator failed or panicked.",
            |s| s.creator_errors,
        ),
        counter(
            "lock_waits",
            "tankard_lock_waits_total",
            "Callers that waited on another caller's creator.",
            |s| s.lock_waits,
        ),
        counter(
            "backend_errors",
            "tankard_backend_errors_total",
            "Backend operations that failed or timed out.",
            |s| s.backend_errors,
        ),
        counter(
            "decode_errors",
            "tankard_decode_errors_total",
            "Stored entries that could not be decoded.",
            |s| s.decode_errors,
        ),
    ];

    /// Publishes this snapshot through the [`metrics`] facade as absolute
    /// counters named `tankard_<counter>_total` with a `region` label.
    /// Call it where the recorder is read (a `/metrics` handler, a timer):
    /// the hit path itself never goes through the facade.
    ///
    /// ```
    /// tankard::Stats::default().publish("docs");
    /// ```
    pub fn publish(&self, region: &str) {
        for counter in Stats::COUNTERS {
            metrics::counter!(counter.metric, "region" => region.to_owned())
                .absolute(counter.read(self));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;

    /// More threads at once than there are exclusive rows: the first
    /// count of each thread, the counts on its own row and those on the
    /// shared row are all kept.
    #[test]
    fn every_count_is_kept_by_more_threads_than_rows() {
        const THREADS: usize = SLOTS + 16;
        const COUNTS: u64 = 1_000;
        let counters = Counters::new();
        let all_alive = Barrier::new(THREADS);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    counters.add(Event::Miss);
                    // Every thread holds its row (or none) before any ends.
                    all_alive.wait();
                    for _ in 0..COUNTS {
                        counters.add(Event::Hit);
                    }
                });
            }
        });
        let stats = counters.snapshot();
        assert_eq!(stats.misses, THREADS as u64);
        assert_eq!(stats.hits, THREADS as u64 * COUNTS);
        assert_eq!(stats.creator_calls, 0);
    }
}
