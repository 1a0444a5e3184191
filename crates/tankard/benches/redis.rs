//! Redis backend against the raw `redis` client on the same server, in one
//! run (DESIGN §11):
//!
//! - a hit through `get_or_create` against the raw client's `GET` of the
//!   same stored bytes (target ≤ 1.15×);
//! - 64 concurrent callers' throughput against the raw client at the same
//!   concurrency (target ≥ 0.8×);
//! - `get_many` of 100 keys against one raw `MGET` of the same 100
//!   stored entries (target ≤ 1.2×);
//! - a cold-key stampede of 8 processes with a 300 ms creator: the wall
//!   time over the creator's own (target < 20 ms), on Redis and on the
//!   cluster.
//!
//! Run with `cargo bench -p tankard --features redis --bench redis` after
//! `scripts/services`. Short rounds of Tankard and the raw client
//! alternate and the median round counts, so a noisy neighbour (a compile
//! on the same cores) hurts both alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Only `Stampede` and `run_child` are used here, not the test-binary macro.
#[allow(unused_imports)]
#[path = "../tests/support/stampede.rs"]
mod stampede;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const REDIS_DEFAULT: &str = "redis://127.0.0.1:26379/";
const CLUSTER_DEFAULT: &str =
    "redis://127.0.0.1:27001,redis://127.0.0.1:27002,redis://127.0.0.1:27003";
const ROUNDS: usize = 15;
const SEQUENTIAL_OPS: usize = 1000;
const CONCURRENCY: usize = 64;
const THROUGHPUT_WINDOW: Duration = Duration::from_millis(250);
const CREATOR_MS: u64 = 300;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn config(backend: &str, url: &str, prefix: &str) -> String {
    format!(
        "[cache]\ntype = \"{backend}\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\nexpire = 3600\n"
    )
}

fn unique_prefix(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bench-{}-{nanos:x}/{what}/", std::process::id())
}

/// Mean time of one sequential call, over `SEQUENTIAL_OPS` calls.
async fn sequential<F, Fut>(mut call: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    for _ in 0..SEQUENTIAL_OPS {
        call().await;
    }
    start.elapsed().as_secs_f64() / SEQUENTIAL_OPS as f64
}

/// This process's CPU time so far (user + system), in clock ticks of
/// 10 ms; `None` off Linux.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Calls per second of `CONCURRENCY` tasks calling in a loop, and this
/// process's CPU time per call in µs (the client's cost of one call, which
/// a busy machine disturbs less than the call rate).
async fn throughput<F, Fut>(call: F) -> (f64, f64)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (stop, count, call) = (stop.clone(), count.clone(), call.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    call().await;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Let every task get going before counting.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (before, ticks_before) = (count.load(Ordering::Relaxed), cpu_ticks());
    let start = Instant::now();
    tokio::time::sleep(THROUGHPUT_WINDOW).await;
    let done = (count.load(Ordering::Relaxed) - before) as f64;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_us = match (ticks_before, cpu_ticks()) {
        (Some(a), Some(b)) => (b - a) as f64 * 10_000.0 / done,
        _ => f64::NAN,
    };
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    (done / elapsed, cpu_us)
}

/// Medians of the call rates and of the CPU times per call.
fn medians(rounds: Vec<(f64, f64)>) -> (f64, f64) {
    let (rates, cpu): (Vec<f64>, Vec<f64>) = rounds.into_iter().unzip();
    (median(rates), median(cpu))
}

struct Row {
    name: String,
    tankard: String,
    reference: String,
    ratio: String,
    target: &'static str,
}

async fn hit_rows(url: &str) -> Vec<Row> {
    let prefix = unique_prefix("hit");
    let manager = tankard::CacheManager::new(
        tankard::Config::from_toml_str(&config("ext:redis", url, &prefix)).unwrap(),
    )
    .unwrap();
    let cache = manager.namespace("bench");
    let value = "x".repeat(128);
    cache.put("hit", value.clone()).await.unwrap();

    // The raw client reads the very bytes Tankard stored, from its own key.
    let client = redis::Client::open(url).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let entry_key = format!("{{{prefix}default:bench}}#hit");
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(&entry_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    let raw_key = format!("{prefix}raw");
    redis::cmd("SET")
        .arg(&raw_key)
        .arg(&bytes)
        .query_async::<()>(&mut raw)
        .await
        .unwrap();

    let tankard_call = {
        let cache = cache.clone();
        move || {
            let cache = cache.clone();
            async move {
                let got: Arc<String> = cache
                    .get_or_create("hit", || async { unreachable!("a hit") })
                    .await
                    .unwrap();
                assert_eq!(got.len(), 128);
            }
        }
    };
    let raw_call = {
        let (raw, raw_key) = (raw.clone(), raw_key.clone());
        move || {
            let (mut raw, raw_key) = (raw.clone(), raw_key.clone());
            async move {
                let got: Vec<u8> = redis::cmd("GET")
                    .arg(&raw_key)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                assert!(!got.is_empty());
            }
        }
    };

    // Warm both paths (connections, script caches, allocator).
    sequential(tankard_call.clone()).await;
    sequential(raw_call.clone()).await;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(sequential(tankard_call.clone()).await);
        theirs.push(sequential(raw_call.clone()).await);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    // Where the difference comes from: a hit reads four keys (the entry and
    // the three generations) where the raw client reads one.
    let keys = vec![
        format!("{{{prefix}default}}!gen"),
        format!("{{{prefix}default}}!soft"),
        format!("{{{prefix}default:bench}}!gen"),
        entry_key.clone(),
    ];
    let mget_call = move || {
        let (mut raw, keys) = (raw.clone(), keys.clone());
        async move {
            let got: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut raw)
                .await
                .unwrap();
            assert_eq!(got.len(), 4);
        }
    };
    let (mut ours_tp, mut theirs_tp, mut mget_tp) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours_tp.push(throughput(tankard_call.clone()).await);
        theirs_tp.push(throughput(raw_call.clone()).await);
        mget_tp.push(throughput(mget_call.clone()).await);
    }
    let ((ours_tp, ours_cpu), (theirs_tp, theirs_cpu), (mget_tp, mget_cpu)) =
        (medians(ours_tp), medians(theirs_tp), medians(mget_tp));
    assert_eq!(manager.default_region().stats().backend_errors, 0);
    vec![
        Row {
            name: "Redis hit, one caller (get_or_create vs raw GET)".into(),
            tankard: format!("{:.1} µs", ours * 1e6),
            reference: format!("{:.1} µs", theirs * 1e6),
            ratio: format!("{:.2}×", ours / theirs),
            target: "≤ 1.15×",
        },
        Row {
            name: format!("Redis hit, {CONCURRENCY} concurrent callers"),
            tankard: format!("{:.0} ops/s", ours_tp),
            reference: format!("{:.0} ops/s", theirs_tp),
            ratio: format!("{:.2}×", ours_tp / theirs_tp),
            target: "≥ 0.8×",
        },
        Row {
            name: format!(
                "… the raw client's MGET of the 4 keys a hit reads, {CONCURRENCY} callers"
            ),
            tankard: format!("{:.0} ops/s", ours_tp),
            reference: format!("{:.0} ops/s", mget_tp),
            ratio: format!("{:.2}×", ours_tp / mget_tp),
            target: "(for reference)",
        },
        Row {
            name: format!(
                "client CPU per hit, {CONCURRENCY} callers (vs raw GET; vs raw MGET of 4)"
            ),
            tankard: format!("{ours_cpu:.2} µs"),
            reference: format!("{theirs_cpu:.2} µs; {mget_cpu:.2} µs"),
            ratio: format!("{:.2}×; {:.2}×", ours_cpu / theirs_cpu, ours_cpu / mget_cpu),
            target: "(for reference)",
        },
    ]
}

/// `get_many` of 100 keys against one raw `MGET` of the same entries.
async fn get_many_row(url: &str) -> Row {
    const KEYS: usize = 100;
    let prefix = unique_prefix("many");
    let manager = tankard::CacheManager::new(
        tankard::Config::from_toml_str(&config("ext:redis", url, &prefix)).unwrap(),
    )
    .unwrap();
    let cache = manager.namespace("many");
    let keys: Vec<String> = (0..KEYS).map(|i| i.to_string()).collect();
    for key in &keys {
        cache.put(key, "x".repeat(128)).await.unwrap();
    }
    let entry_keys: Vec<String> = keys
        .iter()
        .map(|key| format!("{{{prefix}default:many}}#{key}"))
        .collect();
    let client = redis::Client::open(url).unwrap();
    let raw = client.get_multiplexed_async_connection().await.unwrap();
    let tankard_call = || {
        let (cache, keys) = (cache.clone(), keys.clone());
        async move {
            let found = cache.get_many::<String, _>(&keys).await.unwrap();
            assert!(found.iter().all(Option::is_some));
        }
    };
    let raw_call = || {
        let (mut raw, entry_keys) = (raw.clone(), entry_keys.clone());
        async move {
            let found: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(&entry_keys)
                .query_async(&mut raw)
                .await
                .unwrap();
            assert!(found.iter().all(Option::is_some));
        }
    };
    let rounds = |ours: bool| {
        let tankard_call = &tankard_call;
        let raw_call = &raw_call;
        async move {
            let started = Instant::now();
            for _ in 0..100 {
                if ours {
                    tankard_call().await;
                } else {
                    raw_call().await;
                }
            }
            started.elapsed().as_secs_f64() / 100.0
        }
    };
    rounds(true).await;
    rounds(false).await;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(rounds(true).await);
        theirs.push(rounds(false).await);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    Row {
        name: "get_many of 100 keys vs one MGET".into(),
        tankard: format!("{:.1} µs", ours * 1e6),
        reference: format!("{:.1} µs", theirs * 1e6),
        ratio: format!("{:.2}×", ours / theirs),
        target: "≤ 1.2×",
    }
}

fn stampede_row(label: &str, backend: &str, url: &str) -> Row {
    let mut extra = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let outcome = stampede::Stampede {
            config_toml: config(backend, url, &unique_prefix("stampede")),
            region: None,
            namespace: "bench".into(),
            key: "cold".into(),
            processes: 8,
            tasks_per_process: 4,
            creator_ms: CREATOR_MS,
            counter_file: dir.path().join("runs"),
            until_renewed: false,
        }
        .run();
        assert_eq!(outcome.creator_runs, 1, "{outcome:?}");
        extra.push(
            outcome
                .wall
                .saturating_sub(Duration::from_millis(CREATOR_MS))
                .as_secs_f64(),
        );
    }
    let runs: Vec<String> = extra.iter().map(|s| format!("{:.1}", s * 1e3)).collect();
    Row {
        name: format!("{label} cold stampede, 8 processes × 4 tasks, creator {CREATOR_MS} ms"),
        tankard: format!("+{:.1} ms", median(extra) * 1e3),
        reference: format!("runs: {} ms", runs.join(", ")),
        ratio: "—".into(),
        target: "< 20 ms extra",
    }
}

fn main() {
    // The stampede's children are this binary again.
    if std::env::args().any(|a| a == "stampede_child") {
        stampede::run_child();
        return;
    }
    let url = std::env::var("TANKARD_REDIS_URL").unwrap_or_else(|_| REDIS_DEFAULT.into());
    let cluster =
        std::env::var("TANKARD_REDIS_CLUSTER_URL").unwrap_or_else(|_| CLUSTER_DEFAULT.into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = runtime.block_on(hit_rows(&url));
    rows.push(runtime.block_on(get_many_row(&url)));
    drop(runtime);
    rows.push(stampede_row("Redis", "ext:redis", &url));
    rows.push(stampede_row("Redis Cluster", "ext:rediscluster", &cluster));

    println!("\nRedis backend vs the raw redis client (same server, same run)\n");
    println!("| measurement | tankard | raw client | ratio | target |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            row.name, row.tankard, row.reference, row.ratio, row.target
        );
    }
}
