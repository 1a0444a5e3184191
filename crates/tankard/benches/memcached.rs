//! memcached region against the raw protocol, in one run:
//!
//! 1. a hit through `get_or_create` vs a raw `get` round trip of the same
//!    item on the same server (target ≤ 1.15×);
//! 2. 64 concurrent callers vs 64 raw connections (target ≥ 0.8×);
//! 3. a cross-process cold-key stampede (8 processes × 4 tasks, creator
//!    300 ms): wall time over the creator's own 300 ms.
//!
//! The raw baseline is the leanest client there is: one connection per
//! task, `get <key>\r\n` written, the `VALUE`/`END` reply read.
//!
//! Run: `cargo bench -p tankard --features memcached --bench memcached`
//! (the servers of `scripts/services`, or TANKARD_MEMCACHED_URL);
//! `TANKARD_BENCH_NO_STAMPEDE=1` skips the multi-process part.

// Benchmark code, like test code, may stop at the first surprise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Only its child entry point and `Stampede` are used here.
#[allow(unused_imports)]
#[path = "../tests/support/stampede.rs"]
mod stampede;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const VALUE_LEN: usize = 100;

fn servers() -> String {
    std::env::var("TANKARD_MEMCACHED_URL")
        .unwrap_or_else(|_| "127.0.0.1:21211;127.0.0.1:21212;127.0.0.1:21213".to_owned())
}

fn prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bench{nanos:x}-{tag}:")
}

fn manager(url: &str, prefix: &str) -> tankard::CacheManager {
    let config = tankard::Config::from_flat([
        ("cache.type", "ext:memcached"),
        ("cache.url", url),
        ("cache.prefix", prefix),
        ("cache.expire", "3600"),
    ])
    .unwrap();
    tankard::CacheManager::new(config).unwrap()
}

/// The raw client: one connection, one `get` at a time.
struct Raw {
    io: BufReader<TcpStream>,
    line: String,
    data: Vec<u8>,
}

impl Raw {
    async fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("memcached at {addr}: {e}; run scripts/services"));
        stream.set_nodelay(true).unwrap();
        Raw {
            io: BufReader::new(stream),
            line: String::new(),
            data: Vec::new(),
        }
    }

    /// The value's length, or `None` on a miss.
    async fn try_get(&mut self, request: &[u8]) -> Option<usize> {
        self.io.get_mut().write_all(request).await.unwrap();
        self.line.clear();
        self.io.read_line(&mut self.line).await.unwrap();
        if self.line == "END\r\n" {
            return None;
        }
        let len: usize = self
            .line
            .trim_end()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        self.data.resize(len + 2, 0);
        self.io.read_exact(&mut self.data).await.unwrap();
        self.line.clear();
        self.io.read_line(&mut self.line).await.unwrap();
        assert_eq!(self.line, "END\r\n");
        Some(len)
    }

    async fn get(&mut self, request: &[u8]) -> usize {
        self.try_get(request)
            .await
            .expect("the item is on this server")
    }
}

/// The server of `url` that holds the item `request` asks for.
async fn holder(url: &str, request: &[u8]) -> String {
    for server in url.split([';', ',']).map(str::trim) {
        if Raw::connect(server).await.try_get(request).await.is_some() {
            return server.to_owned();
        }
    }
    panic!("no server of {url} holds the benchmark's item")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// Sequential hits: (tankard µs/op, raw µs/op) per round, interleaved.
async fn hit_latency(url: &str, rounds: usize, n: usize) -> (f64, f64, f64) {
    let prefix = prefix("hit");
    let cache = manager(url, &prefix);
    let ns = cache.namespace("bench");
    let value = "v".repeat(VALUE_LEN);
    ns.put("hot", value.clone()).await.unwrap();
    let request = format!("get {prefix}default:bench#hot\r\n").into_bytes();
    let mut raw = Raw::connect(&holder(url, &request).await).await;
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        let start = Instant::now();
        for _ in 0..n {
            let hit = ns
                .get_or_create::<String, _, _>("hot", || async { unreachable!("a hit") })
                .await
                .unwrap();
            assert_eq!(hit.len(), VALUE_LEN);
        }
        let t = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        let start = Instant::now();
        for _ in 0..n {
            raw.get(&request).await;
        }
        let r = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        if round > 0 {
            // Round 0 warms both paths up.
            ours.push(t);
            theirs.push(r);
            ratios.push(t / r);
        }
    }
    (median(ours), median(theirs), median(ratios))
}

/// `tasks` concurrent callers, `n` hits each: (tankard ops/s, raw ops/s, ratio).
async fn throughput(url: &str, tasks: usize, n: usize, rounds: usize) -> (f64, f64, f64) {
    let prefix = prefix("conc");
    let cache = manager(url, &prefix);
    let ns = cache.namespace("bench");
    ns.put("hot", "v".repeat(VALUE_LEN)).await.unwrap();
    let request: Arc<[u8]> = format!("get {prefix}default:bench#hot\r\n")
        .into_bytes()
        .into();
    let server = holder(url, &request).await;
    let mut raws = Vec::new();
    for _ in 0..tasks {
        raws.push(Raw::connect(&server).await);
    }
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let ns = ns.clone();
                tokio::spawn(async move {
                    for _ in 0..n {
                        ns.get_or_create::<String, _, _>("hot", || async { unreachable!("a hit") })
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let t = (tasks * n) as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        let handles: Vec<_> = raws
            .drain(..)
            .map(|mut raw| {
                let request = request.clone();
                tokio::spawn(async move {
                    for _ in 0..n {
                        raw.get(&request).await;
                    }
                    raw
                })
            })
            .collect();
        for h in handles {
            raws.push(h.await.unwrap());
        }
        let r = (tasks * n) as f64 / start.elapsed().as_secs_f64();
        if round > 0 {
            ours.push(t);
            theirs.push(r);
            ratios.push(t / r);
        }
    }
    (median(ours), median(theirs), median(ratios))
}

fn stampede_over(url: &str, runs: usize) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let outcome = stampede::Stampede {
                config_toml: format!(
                    "[cache]\ntype = \"ext:memcached\"\nurl = \"{url}\"\nprefix = \"{}\"\nexpire = 300\n",
                    prefix("stampede")
                ),
                region: None,
                namespace: "bench".into(),
                key: "cold".into(),
                processes: 8,
                tasks_per_process: 4,
                creator_ms: 300,
                counter_file: dir.path().join("runs"),
                until_renewed: false,
            }
            .run();
            assert_eq!(outcome.creator_runs, 1);
            outcome.wall.saturating_sub(Duration::from_millis(300))
        })
        .collect()
}

fn main() {
    // The stampede harness re-executes this binary as its children.
    if std::env::args().any(|a| a == "stampede_child") {
        stampede::run_child();
        return;
    }
    let all = servers();
    let first = all.split([';', ',']).next().unwrap().trim().to_owned();

    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (t1, r1, ratio1) = single.block_on(hit_latency(&first, 7, 5000));
    let (t3, r3, ratio3) = single.block_on(hit_latency(&all, 7, 5000));

    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tc, rc, ratio_c) = multi.block_on(throughput(&first, 64, 1000, 5));
    drop(multi);
    if std::env::var_os("TANKARD_BENCH_NO_STAMPEDE").is_some() {
        println!(
            "hit {t1:.1}/{r1:.1} = {ratio1:.3}; 3-server {t3:.1}/{r3:.1} = {ratio3:.3}; 64 callers {tc:.0}/{rc:.0} = {ratio_c:.3}"
        );
        return;
    }

    let extra = stampede_over(&all, 5);
    let mut sorted = extra.clone();
    sorted.sort();

    println!("memcached benchmark (median of rounds; raw = one connection per task, plain `get`)");
    println!("| comparison | tankard | raw | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| hit, 1-server region vs raw GET (same server) | {t1:.1} µs | {r1:.1} µs | {ratio1:.3}× | ≤ 1.15× |"
    );
    println!(
        "| hit, 3-server region vs raw GET (entry and counters may sit on 2 servers) | {t3:.1} µs | {r3:.1} µs | {ratio3:.3}× | (info) |"
    );
    println!(
        "| 64 concurrent callers, 1-server region | {tc:.0} ops/s | {rc:.0} ops/s | {ratio_c:.3}× | ≥ 0.8× |"
    );
    println!(
        "| cold-key stampede, 8 processes × 4 tasks, creator 300 ms: wall − 300 ms | median {:.1} ms (runs: {}) | | | < 20 ms |",
        sorted[sorted.len() / 2].as_secs_f64() * 1e3,
        extra
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
