//! Time, as the cache sees it: epoch milliseconds, cheap to read, and
//! replaceable by a manual clock so expiry can be tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a [`CacheManager`](crate::CacheManager) reads the time from.
///
/// The system clock is the wall clock sampled once per process plus a
/// coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`), which also keeps a
/// wall clock step from expiring every entry at once. Lookups need the time
/// on every hit, so they read a copy that a background thread
/// (`tankard-clock`, started with the first manager) refreshes every
/// millisecond: one atomic load instead of a clock call. Entries are
/// stamped from the same copy, so a lookup never sees an entry made after
/// the time it read as fresh; invalidations read the clock itself, which
/// errs toward stale.
///
/// A manual clock moves only when told to; tests use it to walk through
/// fresh, stale and expired states instantly.
///
/// ```
/// use std::time::Duration;
/// let clock = tankard::Clock::manual(1_000);
/// assert_eq!(clock.now_ms(), 1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_ms(), 3_000);
/// ```
///
/// The clock also draws the random numbers of `early_refresh = xfetch`;
/// [`with_random`](Clock::with_random) fixes them for a test.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
    random: Option<Random>,
}

/// A random source a test gave the clock.
#[derive(Clone)]
struct Random(Arc<dyn Fn() -> f64 + Send + Sync>);

impl std::fmt::Debug for Random {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Random(..)")
    }
}

impl Clock {
    /// The same clock, drawing its random numbers from `draw`, which must
    /// return values in (0, 1]: what a test of `early_refresh = xfetch`
    /// uses to decide, without chance, whether a read renews its entry.
    ///
    /// ```
    /// let clock = tankard::Clock::manual(1_000).with_random(|| 0.5);
    /// # let _ = clock;
    /// ```
    pub fn with_random(mut self, draw: impl Fn() -> f64 + Send + Sync + 'static) -> Clock {
        self.random = Some(Random(Arc::new(draw)));
        self
    }

    /// A random number in (0, 1]: the test's, or a per-thread
    /// xorshift64* generator's (no lock, no system call).
    pub(crate) fn random(&self) -> f64 {
        if let Some(Random(draw)) = &self.random {
            return draw().clamp(f64::MIN_POSITIVE, 1.0);
        }
        thread_local! {
            static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
                use std::hash::{BuildHasher, Hasher};
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u64(precise_ms());
                hasher.finish() | 1
            });
        }
        let x = STATE.with(|state| {
            let mut x = state.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            state.set(x);
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        });
        // 53 random bits, shifted into (0, 1].
        ((x >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// The milliseconds in `d`, at most `u64::MAX` (585 million years): what
/// every duration added to an epoch-millisecond time goes through, since
/// `as_millis() as u64` would wrap a long duration to a short one.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The last time the ticker thread stored; 0 until it has run.
static RECENT_MS: AtomicU64 = AtomicU64::new(0);
const TICK: std::time::Duration = std::time::Duration::from_millis(1);

/// [`Clock::recent_ms`] before the ticker runs (a clock used without a
/// manager): start it, and read the system clock this once.
#[cold]
fn first_recent_ms() -> u64 {
    start_ticker();
    precise_ms()
}

fn start_ticker() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        // If no thread can be spawned, lookups keep reading the clock itself.
        let _ = std::thread::Builder::new()
            .name("tankard-clock".into())
            .spawn(|| {
                loop {
                    RECENT_MS.store(precise_ms(), Ordering::Relaxed);
                    std::thread::sleep(TICK);
                }
            });
    });
}

fn precise_ms() -> u64 {
    let origin = origin();
    origin.epoch_ms
        + coarsetime::Instant::now()
            .duration_since(origin.instant)
            .as_millis()
}

struct Origin {
    epoch_ms: u64,
    instant: coarsetime::Instant,
}

fn origin() -> &'static Origin {
    static ORIGIN: OnceLock<Origin> = OnceLock::new();
    ORIGIN.get_or_init(|| Origin {
        epoch_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        instant: coarsetime::Instant::now(),
    })
}

impl Clock {
    /// The system clock (the default).
    ///
    /// ```
    /// assert!(tankard::Clock::system().now_ms() > 1_600_000_000_000);
    /// ```
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that starts at `epoch_ms` and moves only with
    /// [`advance`](Clock::advance) or [`set_ms`](Clock::set_ms). Clones share
    /// the same time.
    ///
    /// ```
    /// let clock = tankard::Clock::manual(5);
    /// let other = clock.clone();
    /// clock.set_ms(10);
    /// assert_eq!(other.now_ms(), 10);
    /// ```
    pub fn manual(epoch_ms: u64) -> Clock {
        Clock {
            random: None,
            manual: Some(Arc::new(AtomicU64::new(epoch_ms))),
        }
    }

    /// Milliseconds since the Unix epoch.
    ///
    /// ```
    /// assert_eq!(tankard::Clock::manual(42).now_ms(), 42);
    /// ```
    #[inline]
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::Acquire),
            None => precise_ms(),
        }
    }

    /// A point in time for measuring how long something took, in
    /// microseconds: the monotonic clock, or a manual clock's time (so a
    /// test's creator "takes" what it advances the clock by).
    pub(crate) fn stopwatch_us(&self) -> u64 {
        static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
        match &self.manual {
            Some(ms) => ms.load(Ordering::Acquire).saturating_mul(1000),
            None => {
                let origin = *ORIGIN.get_or_init(std::time::Instant::now);
                u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
            }
        }
    }

    /// Starts the ticker a system clock's [`recent_ms`](Clock::recent_ms)
    /// reads, so that the first hit does not (it spawns a thread).
    pub(crate) fn start_ticking(&self) {
        if self.manual.is_none() {
            start_ticker();
        }
    }

    /// The time as of at most a millisecond or two ago: what lookups use to
    /// decide fresh or stale, where that lag does not matter and the cost
    /// of reading a clock on every hit does.
    #[inline(always)]
    pub(crate) fn recent_ms(&self) -> u64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::Acquire),
            None => match RECENT_MS.load(Ordering::Relaxed) {
                0 => first_recent_ms(),
                recent => recent,
            },
        }
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    ///
    /// ```
    /// let clock = tankard::Clock::manual(0);
    /// clock.advance(std::time::Duration::from_millis(1500));
    /// assert_eq!(clock.now_ms(), 1500);
    /// ```
    pub fn advance(&self, by: std::time::Duration) {
        if let Some(ms) = &self.manual {
            let by = millis(by);
            // Saturates at the end of time rather than wrapping to the epoch.
            let _ = ms.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(by))
            });
        }
    }

    /// Sets a manual clock; does nothing to the system clock.
    ///
    /// ```
    /// let clock = tankard::Clock::manual(0);
    /// clock.set_ms(7);
    /// assert_eq!(clock.now_ms(), 7);
    /// ```
    pub fn set_ms(&self, epoch_ms: u64) {
        if let Some(ms) = &self.manual {
            ms.store(epoch_ms, Ordering::Release);
        }
    }
}
