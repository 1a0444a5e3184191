//! Per-region figures: counters (hits, misses, stale values served,
//! creator calls and failures, lock waits, backend and decode errors),
//! latency histograms, and their export through the [`metrics`] facade.
//!
//! The counters sit on the hit path, so a hit must not pay for an atomic
//! read-modify-write on a line other cores write too. Each thread claims
//! one of [`SLOTS`] exclusive slots (a row of counters on its own cache
//! lines) for its lifetime; as the only writer of its row it counts with a
//! plain load and store. Threads beyond the slots share one row and count
//! with `fetch_add`; that, and a thread's first count (which claims its
//! row), are out of line, so a hit carries only the own-row case. A
//! snapshot sums every row.
//!
//! # What reaches a `metrics` recorder, and when
//!
//! Every count is forwarded to the recorder installed at the time
//! (`metrics::set_global_recorder`, or a thread's local one) without any
//! call from the application. A row keeps, beside each count, how much of
//! it was forwarded; forwarding a row adds the difference to the
//! recorder's counter. Every event off the hit path forwards its thread's
//! row at once; the hit path forwards its row with every 64th hit, so a
//! thread holds back at most 63 hits per region (fewer as soon as it does
//! anything else). [`CacheManager::publish_metrics`](crate::CacheManager::publish_metrics)
//! forwards every row. The recorder's handles are registered the first
//! time a count reaches it, and again when another recorder takes over,
//! which is then given the totals so far.
//!
//! # Latency
//!
//! Histograms of bounded size ([`Latency`]): 16 buckets per power of two
//! (a figure read from them is within 3 % of the true value) from 1 ns to
//! about 4.9 hours, with a total since the region opened and two
//! alternating 30-second windows for the recent figures. The memory tier's
//! hit path is timed for one hit in 64 (per thread and region: the 64th
//! hit of the row, which forwards the row too), so a hit pays one load and
//! one comparison more; reads through the shared store and creator runs
//! are timed every time.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::sync::lock;

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
    /// A failed (or timed-out) creator's caller got the last good value.
    FailSafeServed = 8,
}

const EVENTS: usize = 9;

/// How many hits a row counts between two forwards and two timed hits.
const SAMPLE_EVERY: u64 = 64;

/// One thread's counts, and how much of each reached the recorder.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    counts: [AtomicU64; EVENTS],
    /// Only ever raised (`fetch_max`), by whichever thread forwards the
    /// row: each count is forwarded exactly once, whoever forwards.
    forwarded: [AtomicU64; EVENTS],
}

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
        self.add_at(SLOT.with(Cell::get), event);
    }

    /// [`add`](Self::add) with the thread's slot already read.
    #[inline(always)]
    fn add_at(&self, slot: usize, event: Event) {
        if slot < SLOTS {
            // This thread is the row's only writer: no read-modify-write needed.
            let counter = &self.shards[slot].counts[event as usize];
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
        row.counts[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    /// Whether the hit about to be counted on `slot`'s row is its 64th:
    /// that one is timed, and forwards the row.
    #[inline(always)]
    fn hit_due(&self, slot: usize) -> bool {
        slot <= SHARED
            && self.shards[slot].counts[Event::Hit as usize].load(Ordering::Relaxed) % SAMPLE_EVERY
                == SAMPLE_EVERY - 1
    }

    fn sum(&self, event: Event) -> u64 {
        self.shards
            .iter()
            .map(|s| s.counts[event as usize].load(Ordering::Relaxed))
            .sum()
    }

    fn forwarded(&self, event: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.forwarded[event].load(Ordering::Relaxed))
            .sum()
    }

    /// Adds what a row counted since its last forward to the recorder's
    /// counters.
    fn forward_row(&self, row: usize, facade: &Facade) {
        let shard = &self.shards[row];
        for (event, counter) in facade.counters.iter().enumerate() {
            let count = shard.counts[event].load(Ordering::Relaxed);
            if shard.forwarded[event].load(Ordering::Relaxed) >= count {
                continue;
            }
            let before = shard.forwarded[event].fetch_max(count, Ordering::Relaxed);
            if count > before {
                counter.increment(count - before);
            }
        }
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
            fail_safe_served: self.sum(Event::FailSafeServed),
        }
    }
}

/// Sub-buckets per power of two: 16, so a bucket's midpoint is within
/// 1/32 of any value in it.
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// The largest power of two with buckets of its own (2^44 ns, about 4.9
/// hours); longer durations land in the last bucket.
const MAX_EXP: u32 = 44;
const BUCKETS: usize = (MAX_EXP - SUB_BITS + 2) as usize * SUB;
/// The length of one of the two alternating recent windows.
const WINDOW_MS: u64 = 30_000;
/// A window that never held anything.
const NO_WINDOW: u64 = u64::MAX;

/// The bucket of a duration in nanoseconds: exact below 16 ns, then 16
/// buckets per power of two.
fn bucket(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros();
    let sub = (ns >> (exp - SUB_BITS)) as usize & (SUB - 1);
    ((exp - SUB_BITS + 1) as usize * SUB + sub).min(BUCKETS - 1)
}

/// The smallest duration (ns) a bucket holds.
fn bucket_low(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let exp = (index / SUB) as u32 + SUB_BITS - 1;
    ((SUB + index % SUB) as u64) << (exp - SUB_BITS)
}

/// The largest duration (ns) a bucket holds (the last bucket: everything
/// above, reported as its lower bound's double).
fn bucket_high(index: usize) -> u64 {
    if index + 1 >= BUCKETS {
        return bucket_low(index).saturating_mul(2);
    }
    bucket_low(index + 1) - 1
}

/// Counts per bucket and their sum, updated with relaxed atomics.
struct Buckets {
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Buckets {
    fn new() -> Buckets {
        Buckets {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn add(&self, index: usize, ns: u64) {
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn clear(&self) {
        for count in &*self.counts {
            count.store(0, Ordering::Relaxed);
        }
        self.sum_ns.store(0, Ordering::Relaxed);
    }

    fn add_to(&self, latency: &mut Latency) {
        for (sum, count) in latency.counts.iter_mut().zip(&*self.counts) {
            *sum += count.load(Ordering::Relaxed);
        }
        latency.sum_ns += self.sum_ns.load(Ordering::Relaxed);
    }
}

/// One latency histogram: since the region opened, and recent.
struct Histogram {
    total: Buckets,
    /// Two windows of [`WINDOW_MS`], alternating: the recent figures are
    /// the current window and the one before (30 to 60 seconds).
    windows: [Buckets; 2],
    window_ids: [AtomicU64; 2],
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            total: Buckets::new(),
            windows: [Buckets::new(), Buckets::new()],
            window_ids: [AtomicU64::new(NO_WINDOW), AtomicU64::new(NO_WINDOW)],
        }
    }

    fn record(&self, elapsed: Duration, now_ms: u64) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let index = bucket(ns);
        self.total.add(index, ns);
        let id = now_ms / WINDOW_MS;
        let slot = (id % 2) as usize;
        let held = self.window_ids[slot].load(Ordering::Acquire);
        if held != id
            && self.window_ids[slot]
                .compare_exchange(held, id, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // The window's previous contents are a minute old. A record
            // racing this clear may be lost: the recent figures are an
            // approximation, the totals are not.
            self.windows[slot].clear();
        }
        self.windows[slot].add(index, ns);
    }

    fn total(&self) -> Latency {
        let mut latency = Latency::default();
        self.total.add_to(&mut latency);
        latency
    }

    fn recent(&self, now_ms: u64) -> Latency {
        let id = now_ms / WINDOW_MS;
        let mut latency = Latency::default();
        for (window, held) in self.windows.iter().zip(&self.window_ids) {
            let held = held.load(Ordering::Acquire);
            if held != NO_WINDOW && held + 1 >= id {
                window.add_to(&mut latency);
            }
        }
        latency
    }
}

/// A snapshot of one latency histogram, from
/// [`Region::latency`](crate::Region::latency) or
/// [`Region::recent_latency`](crate::Region::recent_latency): 16 buckets
/// per power of two from 1 ns to about 4.9 hours, so every figure read
/// from it is within 3 % of the true value (5 KiB each).
///
/// ```
/// # tokio_test::block_on(async {
/// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
/// let ns = cache.namespace("docs");
/// ns.get_or_create("k", || async {
///     tokio::time::sleep(std::time::Duration::from_millis(2)).await;
///     1u8
/// })
/// .await?;
/// let creator = cache.default_region().latency().creator;
/// assert_eq!(creator.count(), 1);
/// let p50 = creator.quantile(0.5).ok_or("no runs")?;
/// assert!(p50 >= std::time::Duration::from_millis(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Latency {
    counts: Box<[u64]>,
    sum_ns: u64,
}

impl Default for Latency {
    fn default() -> Latency {
        Latency {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            sum_ns: 0,
        }
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

impl Latency {
    /// How many durations were recorded.
    ///
    /// ```
    /// assert_eq!(tankard::Latency::default().count(), 0);
    /// ```
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum of the recorded durations.
    ///
    /// ```
    /// assert_eq!(tankard::Latency::default().sum(), std::time::Duration::ZERO);
    /// ```
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// The duration below which a fraction `q` (0.0 to 1.0) of the
    /// recorded ones fall (`0.5`: the median, `0.99`: p99), as the middle
    /// of its bucket; `None` when nothing was recorded.
    ///
    /// ```
    /// assert_eq!(tankard::Latency::default().quantile(0.99), None);
    /// ```
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // The rank of the wanted value, 1-based: at least the first.
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = (bucket_low(index), bucket_high(index));
                return Some(Duration::from_nanos(low + (high - low) / 2));
            }
        }
        None
    }

    /// What was recorded after `earlier`, a snapshot of the same
    /// histogram taken before this one: the figures of the time between.
    ///
    /// ```
    /// let earlier = tankard::Latency::default();
    /// assert_eq!(earlier.since(&earlier).count(), 0);
    /// ```
    pub fn since(&self, earlier: &Latency) -> Latency {
        Latency {
            counts: self
                .counts
                .iter()
                .zip(&*earlier.counts)
                .map(|(now, before)| now.saturating_sub(*before))
                .collect(),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
        }
    }

    /// The non-empty buckets, smallest first: the longest duration each
    /// holds, and how many it holds. What an exporter turns into its own
    /// buckets (`tankard::web`'s `/metrics` does).
    ///
    /// ```
    /// assert_eq!(tankard::Latency::default().buckets().count(), 0);
    /// ```
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(index, n)| (Duration::from_nanos(bucket_high(index)), *n))
    }

    /// Adds `other`'s durations, each counted `weight` times.
    fn add_weighted(&mut self, other: &Latency, weight: u64) {
        for (sum, n) in self.counts.iter_mut().zip(&*other.counts) {
            *sum += n * weight;
        }
        self.sum_ns += other.sum_ns * weight;
    }
}

/// A region's latency histograms, from
/// [`Region::latency`](crate::Region::latency) (since the region opened)
/// or [`Region::recent_latency`](crate::Region::recent_latency) (the last
/// 30 to 60 seconds).
///
/// ```
/// # tokio_test::block_on(async {
/// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
/// let ns = cache.namespace("docs");
/// for _ in 0..200 {
///     ns.get_or_create("k", || async { 1u8 }).await?;
/// }
/// let latency = cache.default_region().latency();
/// // 199 hits: the 64th, 128th and 192nd of this thread were timed.
/// assert_eq!(latency.memory_hits.count(), 3);
/// assert_eq!(latency.lookup().count(), 3 * 64);
/// assert_eq!(latency.creator.count(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latencies {
    /// Hits answered by the memory tier (a memory region, or an L1 copy),
    /// without waiting for anything: one hit in 64 per thread is timed, so
    /// this is a sample (each stands for 64 hits).
    pub memory_hits: Latency,
    /// Reads through the shared store, whatever they found: the round
    /// trip and the entry's decoding. Every one is timed.
    pub shared_lookups: Latency,
    /// Creator runs, failed ones included. Every one is timed.
    pub creator: Latency,
}

impl Latencies {
    /// Every lookup: the memory hits' sample counted 64 times each, and
    /// the reads through the shared store. What `/stats` reports as
    /// `lookup_us`.
    ///
    /// ```
    /// assert_eq!(tankard::Latencies::default().lookup().count(), 0);
    /// ```
    pub fn lookup(&self) -> Latency {
        let mut lookup = self.shared_lookups.clone();
        lookup.add_weighted(&self.memory_hits, SAMPLE_EVERY);
        lookup
    }
}

#[cfg_attr(not(feature = "memory"), allow(dead_code))]
/// A memory hit under way: the thread's slot, read once for the whole
/// hit, and its start when this hit is the one in 64 that is timed.
#[must_use]
pub(crate) struct HitSample {
    slot: usize,
    start: Option<Instant>,
}

#[cfg_attr(not(feature = "memory"), allow(dead_code))]
#[cold]
#[inline(never)]
fn sample_start() -> Option<Instant> {
    Some(Instant::now())
}

/// The handles of one recorder, for one region. The histograms are
/// registered when first recorded, so a region shows none it never
/// records (a memory region's shared-store reads).
struct Facade {
    /// The recorder they came from (its address).
    recorder: usize,
    labels: [metrics::Label; 2],
    counters: [metrics::Counter; EVENTS],
    memory_hits: Option<metrics::Histogram>,
    shared_lookups: Option<metrics::Histogram>,
    creator: Option<metrics::Histogram>,
}

/// Which of a region's histograms.
#[derive(Clone, Copy)]
enum Timed {
    MemoryHit,
    SharedLookup,
    Creator,
}

impl Facade {
    fn register(recorder: usize, region: &str, backend: &'static str) -> Facade {
        let labels = [
            metrics::Label::new("region", region.to_owned()),
            metrics::Label::new("backend", backend),
        ];
        Facade {
            recorder,
            counters: std::array::from_fn(|event| {
                metrics::counter!(Stats::COUNTERS[event].metric, labels.to_vec())
            }),
            labels,
            memory_hits: None,
            shared_lookups: None,
            creator: None,
        }
    }

    fn record(&mut self, timed: Timed, elapsed: Duration) {
        let labels = &self.labels;
        let lookup = |tier: &'static str| {
            let mut labels = labels.to_vec();
            labels.push(metrics::Label::new("tier", tier));
            metrics::histogram!("tankard_lookup_seconds", labels)
        };
        let histogram = match timed {
            Timed::MemoryHit => self.memory_hits.get_or_insert_with(|| lookup("memory")),
            Timed::SharedLookup => self.shared_lookups.get_or_insert_with(|| lookup("shared")),
            Timed::Creator => self.creator.get_or_insert_with(|| {
                metrics::histogram!("tankard_creator_seconds", labels.to_vec())
            }),
        };
        histogram.record(elapsed.as_secs_f64());
    }
}

/// The address of the recorder the `metrics` macros would use here now.
fn current_recorder() -> usize {
    metrics::with_recorder(|recorder| std::ptr::from_ref(recorder).cast::<()>() as usize)
}

/// Everything one region measures: its counters and latency histograms,
/// kept in the process for [`Region::stats`](crate::Region::stats) and the
/// dashboard, and forwarded to the `metrics` recorder as they happen.
pub(crate) struct Figures {
    region: String,
    backend: &'static str,
    clock: Clock,
    pub(crate) counters: Counters,
    memory_hits: Histogram,
    shared_lookups: Histogram,
    creator: Histogram,
    facade: Mutex<Option<Facade>>,
    /// When the memory tier's size was last given to the recorder.
    usage_sent_ms: AtomicU64,
}

impl std::fmt::Debug for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Figures")
            .field("region", &self.region)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Figures {
    pub(crate) fn new(region: &str, backend: &'static str, clock: Clock) -> Figures {
        Figures {
            region: region.to_owned(),
            backend,
            clock,
            counters: Counters::new(),
            memory_hits: Histogram::new(),
            shared_lookups: Histogram::new(),
            creator: Histogram::new(),
            facade: Mutex::new(None),
            usage_sent_ms: AtomicU64::new(0),
        }
    }

    /// Runs `f` with the handles of the current recorder, registering
    /// them first if this region has none from it yet.
    fn with_facade(&self, f: impl FnOnce(&mut Facade)) {
        let recorder = current_recorder();
        let mut held = lock(&self.facade);
        let facade = match &mut *held {
            Some(facade) if facade.recorder == recorder => facade,
            other => {
                let facade = other.insert(Facade::register(recorder, &self.region, self.backend));
                // A new recorder: the totals forwarded so far, then the
                // rows' increments from here on.
                for (event, counter) in facade.counters.iter().enumerate() {
                    counter.absolute(self.counters.forwarded(event));
                }
                facade
            }
        };
        f(facade);
    }

    /// Counts an event off the hit path, and forwards this thread's row.
    pub(crate) fn count(&self, event: Event) {
        self.counters.add(event);
        self.forward_mine();
    }

    #[cold]
    #[inline(never)]
    fn forward_mine(&self) {
        let row = slot().min(SHARED);
        self.with_facade(|facade| self.counters.forward_row(row, facade));
    }

    /// Forwards every row: the hits threads held back included.
    pub(crate) fn forward_all(&self) {
        self.with_facade(|facade| {
            for row in 0..=SHARED {
                self.counters.forward_row(row, facade);
            }
        });
    }

    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    /// Starts a memory hit: timed if it is this row's 64th.
    #[inline(always)]
    pub(crate) fn start_hit(&self) -> HitSample {
        let slot = SLOT.with(Cell::get);
        HitSample {
            slot,
            start: if self.counters.hit_due(slot) {
                sample_start()
            } else {
                None
            },
        }
    }

    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    /// Counts a memory hit (and, for the timed one, records its time and
    /// forwards the row).
    #[inline(always)]
    pub(crate) fn hit(&self, sample: HitSample) {
        self.counters.add_at(sample.slot, Event::Hit);
        if let Some(start) = sample.start {
            self.sampled_hit(start);
        }
    }

    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    #[cold]
    #[inline(never)]
    fn sampled_hit(&self, start: Instant) {
        let elapsed = start.elapsed();
        self.memory_hits.record(elapsed, self.clock.recent_ms());
        let row = slot().min(SHARED);
        self.with_facade(|facade| {
            facade.record(Timed::MemoryHit, elapsed);
            self.counters.forward_row(row, facade);
        });
    }

    /// Records a read through the shared store.
    pub(crate) fn shared_lookup(&self, elapsed: Duration) {
        self.shared_lookups.record(elapsed, self.clock.recent_ms());
        self.with_facade(|facade| facade.record(Timed::SharedLookup, elapsed));
    }

    /// Records a creator run.
    pub(crate) fn creator_ran(&self, elapsed: Duration) {
        self.creator.record(elapsed, self.clock.recent_ms());
        self.with_facade(|facade| facade.record(Timed::Creator, elapsed));
    }

    /// Gives the recorder the region's size, as far as it is known (a
    /// figure the store cannot tell is never registered, rather than
    /// shown as 0). Rare: registering each time costs nothing here.
    pub(crate) fn usage(&self, entries: Option<u64>, bytes: Option<u64>) {
        self.usage_sent_ms
            .store(self.clock.recent_ms(), Ordering::Relaxed);
        let labels = || {
            [
                ("region", self.region.clone()),
                ("backend", self.backend.to_owned()),
            ]
        };
        if let Some(entries) = entries {
            metrics::gauge!("tankard_entries", &labels()).set(entries as f64);
        }
        if let Some(bytes) = bytes {
            metrics::gauge!("tankard_bytes", &labels()).set(bytes as f64);
        }
    }

    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    /// Whether the memory tier's size is due to go to the recorder again
    /// (at most once a second, from the write path).
    pub(crate) fn usage_due(&self) -> bool {
        let now = self.clock.recent_ms();
        let sent = self.usage_sent_ms.load(Ordering::Relaxed);
        now.saturating_sub(sent) >= 1000
            && self
                .usage_sent_ms
                .compare_exchange(sent, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub(crate) fn snapshot(&self) -> Stats {
        self.counters.snapshot()
    }

    pub(crate) fn latency(&self) -> Latencies {
        Latencies {
            memory_hits: self.memory_hits.total(),
            shared_lookups: self.shared_lookups.total(),
            creator: self.creator.total(),
        }
    }

    pub(crate) fn recent_latency(&self) -> Latencies {
        let now = self.clock.recent_ms();
        Latencies {
            memory_hits: self.memory_hits.recent(now),
            shared_lookups: self.shared_lookups.recent(now),
            creator: self.creator.recent(now),
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
/// assert_eq!(stats.hit_ratio(), Some(0.5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Fresh values returned.
    pub hits: u64,
    /// Lookups that found nothing usable (absent, expired, invalidated,
    /// undecodable), callers that waited for another caller's creator
    /// included, and a stale entry's regeneration in its caller.
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
    /// Last good values served (`fail_safe`) because their creator failed,
    /// panicked or ran past `hard_timeout`.
    pub fail_safe_served: u64,
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
    pub const COUNTERS: [Counter; 9] = [
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
        counter(
            "fail_safe_served",
            "tankard_fail_safe_served_total",
            "Last good values served because their creator failed.",
            |s| s.fail_safe_served,
        ),
    ];

    /// Lookups that got an answer or had to wait for one: hits, stale
    /// values served and misses. Each `get_or_create` call (and each call
    /// of a cached function or page) counts exactly once.
    ///
    /// ```
    /// assert_eq!(tankard::Stats::default().lookups(), 0);
    /// ```
    pub fn lookups(&self) -> u64 {
        self.hits + self.stale_served + self.misses
    }

    /// The share of lookups answered from the cache without waiting for a
    /// creator: `(hits + stale_served) / lookups`, `None` before the first
    /// lookup. A stale value served is an answer from the cache, so it
    /// counts; a caller that waited for another caller's creator got no
    /// cached value, so it counts as a miss (and as a lock wait), as does
    /// the caller that regenerates a stale entry itself.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("docs");
    /// for _ in 0..4 {
    ///     ns.get_or_create("k", || async { 1u8 }).await?;
    /// }
    /// assert_eq!(cache.default_region().stats().hit_ratio(), Some(0.75));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hit_ratio(&self) -> Option<f64> {
        match self.lookups() {
            0 => None,
            lookups => Some((self.hits + self.stale_served) as f64 / lookups as f64),
        }
    }

    /// Publishes this snapshot through the [`metrics`] facade as absolute
    /// counters named `tankard_<counter>_total` with a `region` label.
    ///
    /// Not needed any more: every region forwards its counts to the
    /// recorder as they happen, labelled with `region` and `backend`
    /// (this call's counters, with `region` alone, are other series).
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// tankard::Stats::default().publish("docs");
    /// ```
    #[deprecated(
        since = "0.1.0",
        note = "regions record to the metrics facade as they go; CacheManager::publish_metrics forwards what threads held back"
    )]
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

    #[test]
    fn every_duration_lands_in_a_bucket_that_holds_it_closely() {
        let mut values: Vec<u64> = (0..5000).collect();
        let mut v = 5000u64;
        while v < 1 << MAX_EXP {
            values.extend([v - 1, v, v + 1]);
            v = v * 9 / 7;
        }
        for v in values {
            let index = bucket(v);
            let (low, high) = (bucket_low(index), bucket_high(index));
            assert!(low <= v && v <= high, "{v} in [{low}, {high}]");
            let mid = low + (high - low) / 2;
            assert!(mid.abs_diff(v) * 32 <= v.max(1), "{v}: midpoint {mid}");
            if index > 0 {
                assert_eq!(bucket_high(index - 1) + 1, low, "buckets touch");
            }
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_and_differences_of_snapshots() {
        let histogram = Histogram::new();
        for ms in 1..=100u64 {
            histogram.record(Duration::from_millis(ms), 0);
        }
        let earlier = histogram.total();
        let p50 = earlier.quantile(0.5).unwrap().as_secs_f64();
        assert!((p50 - 0.050).abs() <= 0.050 / 32.0, "{p50}");
        let p99 = earlier.quantile(0.99).unwrap().as_secs_f64();
        assert!((p99 - 0.099).abs() <= 0.099 / 32.0, "{p99}");
        histogram.record(Duration::from_secs(3), 1000);
        let since = histogram.total().since(&earlier);
        assert_eq!(since.count(), 1);
        assert_eq!(since.sum(), Duration::from_secs(3));
        // The recent windows: 0 ms and 1000 ms are the same window; a
        // minute later both windows have moved on.
        assert_eq!(histogram.recent(1000).count(), 101);
        assert_eq!(histogram.recent(WINDOW_MS + 1).count(), 101);
        assert_eq!(histogram.recent(3 * WINDOW_MS).count(), 0);
        histogram.record(Duration::from_millis(1), 2 * WINDOW_MS);
        assert_eq!(
            histogram.recent(2 * WINDOW_MS).count(),
            1,
            "the old window was cleared"
        );
        assert_eq!(histogram.total().count(), 102);
    }

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
