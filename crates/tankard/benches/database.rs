//! The SQL store against the raw sqlx client on the same database, in one
//! run: a hit through `get_or_create` against sqlx's own
//! `SELECT entry FROM tankard_cache WHERE cache_key = $1` of the same row
//! by primary key, on a pool of the same size (target ≤ 1.2×), on
//! PostgreSQL, MariaDB and SQLite.
//!
//! Run with `cargo bench -p tankard --features postgres,mysql,sqlite
//! --bench database` after `scripts/services`. Short rounds of Tankard and
//! the raw client alternate and the median round counts, so a noisy
//! neighbour (a compile on the same cores) hurts both alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use sqlx::{MySqlPool, PgPool, SqlitePool};

const ROUNDS: usize = 9;
const SEQUENTIAL_OPS: usize = 500;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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

/// The raw client: the same row, by primary key, on its own pool.
enum Raw {
    Pg(PgPool),
    My(MySqlPool),
    Lite(SqlitePool),
}

impl Raw {
    async fn select(&self, key: &str) -> Vec<u8> {
        match self {
            Raw::Pg(pool) => {
                sqlx::query_scalar("SELECT entry FROM tankard_cache WHERE cache_key = $1")
                    .bind(key)
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }
            Raw::My(pool) => {
                sqlx::query_scalar("SELECT entry FROM tankard_cache WHERE cache_key = ?")
                    .bind(key.as_bytes())
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }
            Raw::Lite(pool) => {
                sqlx::query_scalar("SELECT entry FROM tankard_cache WHERE cache_key = ?")
                    .bind(key)
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }
        }
    }
}

async fn hit(name: &str, url: &str) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("bench-{}-{nanos:x}", std::process::id());
    let config = format!(
        "[cache]\ntype = \"ext:database\"\nurl = \"{url}\"\nprefix = \"{prefix}/\"\nexpire = 3600\n"
    );
    let cache =
        tankard::CacheManager::new(tankard::Config::from_toml_str(&config).unwrap()).unwrap();
    let ns = cache.namespace("bench");
    ns.put("k", "a value of some thirty bytes...".to_string())
        .await
        .unwrap();
    let key = format!("{prefix}/default:bench#k");
    let raw = match name {
        "postgres" => Raw::Pg(PgPool::connect(url).await.unwrap()),
        "mysql" => Raw::My(MySqlPool::connect(url).await.unwrap()),
        _ => Raw::Lite(SqlitePool::connect(url).await.unwrap()),
    };
    assert!(!raw.select(&key).await.is_empty());
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(
            sequential(|| async {
                let v = ns
                    .get_or_create("k", || async { String::from("a miss") })
                    .await
                    .unwrap();
                std::hint::black_box(v);
            })
            .await,
        );
        theirs.push(
            sequential(|| async {
                std::hint::black_box(raw.select(&key).await);
            })
            .await,
        );
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "{name:<9} hit {:>8.1} µs   raw sqlx SELECT {:>8.1} µs   ratio {:.2}× (target ≤ 1.2×)",
        ours * 1e6,
        theirs * 1e6,
        ours / theirs
    );
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run scripts/services, source its env")
            })
        };
        hit("postgres", &var("TANKARD_POSTGRES_URL")).await;
        hit("mysql", &var("TANKARD_MYSQL_URL")).await;
        let dir = std::env::temp_dir().join(format!("tankard-bench-{}.db", std::process::id()));
        hit("sqlite", &format!("sqlite://{}", dir.display())).await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", dir.display()));
        }
        let _ = std::fs::remove_dir_all(format!("{}.locks", dir.display()));
    });
}
