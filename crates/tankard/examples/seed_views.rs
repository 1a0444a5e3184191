//! The seed post's two Django views, written with `#[tankard::cached]`.
//!
//! ```text
//! cargo run -p tankard --example seed_views               # the seed's 15 s and 4 s of work
//! cargo run -p tankard --example seed_views -- --work-ms 300
//! ```
//!
//! The regions are the seed's: `long_term` on disk for a day, `short_term`
//! for 20 minutes. The seed puts `short_term` in memcached; this example
//! keeps it in memory so it runs anywhere (with the `memcached` feature,
//! set `cache.short_term.type = "ext:memcached"` and a `url`). The first
//! request of each view waits for the work; the next ones are served from
//! the cache with the same timestamp, as in the post.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod beakercache {
    use std::path::Path;

    /// The seed's `cache_opts`, with `short_term` in memory (see above).
    pub(crate) fn cache_manager(dir: &Path) -> Result<tankard::CacheManager, tankard::Error> {
        let data_dir = dir.join("data");
        let lock_dir = dir.join("lock");
        let config = tankard::Config::from_flat([
            ("cache.type", "file"),
            ("cache.data_dir", data_dir.to_string_lossy().as_ref()),
            ("cache.lock_dir", lock_dir.to_string_lossy().as_ref()),
            ("cache.regions", "short_term, long_term"),
            ("cache.short_term.type", "memory"),
            ("cache.short_term.expire", "1200"),
            ("cache.long_term.type", "file"),
            ("cache.long_term.expire", "86400"),
        ])?;
        tankard::CacheManager::new(config)
    }
}

mod views {
    use super::{now, work};

    /// What a Django view returns.
    #[derive(Debug)]
    pub(crate) struct HttpResponse(pub(crate) String);

    pub(crate) fn hello() -> HttpResponse {
        HttpResponse(fetch_hello())
    }

    pub(crate) fn goodbye() -> HttpResponse {
        HttpResponse(fetch_goodbye())
    }

    // `@cache.region('long_term')`
    #[tankard::cached(region = "long_term")]
    pub(crate) fn fetch_hello() -> String {
        std::thread::sleep(work(15_000));
        format!("Hello world, its {}", now())
    }

    // `@cache.region('short_term')`
    #[tankard::cached(region = "short_term")]
    pub(crate) fn fetch_goodbye() -> String {
        std::thread::sleep(work(4_000));
        format!("Bye world, its {}", now())
    }
}

/// The seed's sleep, or `--work-ms N` / `SEED_WORK_MS=N` to run faster.
fn work(seed_ms: u64) -> Duration {
    let from_args = std::env::args().skip_while(|arg| arg != "--work-ms").nth(1);
    let ms = from_args
        .or_else(|| std::env::var("SEED_WORK_MS").ok())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(seed_ms);
    Duration::from_millis(ms)
}

/// `datetime.now()`, in UTC, without a date crate.
fn now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{:06}",
        since.subsec_micros()
    )
}

fn request(name: &str, view: fn() -> views::HttpResponse) -> String {
    let started = Instant::now();
    let views::HttpResponse(body) = view();
    println!(
        "GET /{name:<8} {:>7.1} ms  {body}",
        started.elapsed().as_secs_f64() * 1000.0
    );
    body
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("tankard-seed-views-{}", std::process::id()));
    // A region the views name and the configuration lacks fails here, at
    // start-up, naming it.
    tankard::install(beakercache::cache_manager(&dir)?)?;

    let first_hello = request("hello", views::hello);
    let second_hello = request("hello", views::hello);
    assert_eq!(
        first_hello, second_hello,
        "the second request is a cache hit"
    );
    let first_bye = request("goodbye", views::goodbye);
    let second_bye = request("goodbye", views::goodbye);
    assert_eq!(first_bye, second_bye, "the second request is a cache hit");

    // Beaker's region_invalidate: the next request does the work again.
    views::fetch_hello_invalidate()?;
    let third_hello = request("hello", views::hello);
    assert_ne!(first_hello, third_hello);

    let manager = tankard::global()?;
    for region in manager.regions() {
        let stats = region.stats();
        println!(
            "region {:<10} backend {:<6} hits {} misses {} creator calls {}",
            region.name(),
            region.backend_name(),
            stats.hits,
            stats.misses,
            stats.creator_calls
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
