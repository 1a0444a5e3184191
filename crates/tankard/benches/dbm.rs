//! The LMDB store's hit path against the references measured in the same
//! run (numbers go to BENCHMARKS.md):
//!
//! - dbm region hit through `get_or_create` vs a raw heed `get` (a read
//!   transaction, the get, a copy out of the map) of values of the same
//!   size in an environment of the same shape;
//! - the same hit on a file region;
//! - what the harness's `block_on` adds to each tankard figure;
//! - what a hop to the blocking pool costs (an empty `spawn_blocking`),
//!   the price a read would pay if it left the calling thread;
//! - a `put`, which does take that hop (a write waits for LMDB's writer
//!   mutex and `fsync`).
//!
//! A plain harness: each figure is the median of 7 rounds of at least
//! 200 ms, in nanoseconds per operation, 1 thread, 1k keys.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::hint::black_box;
use std::time::{Duration, Instant};

use heed::types::Bytes;

const KEYS: usize = 1_000;
const ROUNDS: usize = 7;

fn time(keys: &[String], op: &dyn Fn(&str)) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut ops = 0;
        while start.elapsed() < Duration::from_millis(200) {
            for k in keys {
                op(k);
            }
            ops += keys.len();
        }
        rounds.push(start.elapsed().as_nanos() as f64 / ops as f64);
    }
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn row(name: &str, ns: f64, reference: Option<(&str, f64)>) {
    match reference {
        Some((what, base)) => println!("| {name} | {ns:.1} ns | {:.2}× {what} |", ns / base),
        None => println!("| {name} | {ns:.1} ns | reference |"),
    }
}

/// A raw heed environment holding `KEYS` rows of `len` bytes.
#[allow(unsafe_code)]
fn raw_env(
    dir: &std::path::Path,
    len: usize,
) -> (
    heed::Env<heed::WithoutTls>,
    heed::Database<'static, Bytes, Bytes>,
) {
    std::fs::create_dir_all(dir).unwrap();
    let mut options = heed::EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(1 << 30).max_dbs(2);
    // SAFETY: a fresh directory of this benchmark's, opened once.
    let env = unsafe { options.open(dir) }.unwrap();
    let wtxn = env.write_txn().unwrap();
    let db = match env
        .create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
            let db = opener.create_database::<Bytes, Bytes>(wtxn, Some("entries"))?;
            Ok(heed::CommitOrAbort::<_, std::convert::Infallible>::Commit(
                db,
            ))
        })
        .unwrap()
    {
        heed::CommitOrAbort::Commit(db) => db,
        heed::CommitOrAbort::Abort(never) => match never {},
    };
    let mut wtxn = env.write_txn().unwrap();
    for i in 0..KEYS {
        db.put(&mut wtxn, format!("key-{i}").as_bytes(), &vec![b'v'; len])
            .unwrap();
    }
    wtxn.commit().unwrap();
    (env, db)
}

fn manager(kind: &str, data: &std::path::Path) -> tankard::CacheManager {
    let data = data.display().to_string();
    let config =
        tankard::Config::from_flat([("cache.type", kind), ("cache.data_dir", data.as_str())])
            .expect("config");
    tankard::CacheManager::new(config).expect("manager")
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let value = "v".repeat(100);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key-{i}")).collect();
    let dbm = manager("dbm", &dir.path().join("dbm"));
    let file = manager("file", &dir.path().join("file"));
    let (dbm_ns, file_ns) = (dbm.namespace("bench"), file.namespace("bench"));
    runtime.block_on(async {
        for k in &keys {
            dbm_ns.put(k, value.clone()).await.expect("put");
            file_ns.put(k, value.clone()).await.expect("put");
        }
    });
    // An entry of a 100-byte string with its header and key: the bytes a
    // hit copies out of the map.
    let entry_len = 64 + "bench#key-000".len() + 101 + 8;
    let (env, db) = raw_env(&dir.path().join("raw"), entry_len);

    let raw = time(&keys, &|k| {
        let txn = env.read_txn().unwrap();
        black_box(db.get(&txn, k.as_bytes()).unwrap().map(<[u8]>::to_vec));
    });
    let hit = |ns: &tankard::Cache| {
        time(&keys, &|k| {
            let v =
                runtime.block_on(ns.get_or_create::<String, _, _>(k, || async { unreachable!() }));
            black_box(v.expect("hit"));
        })
    };
    let dbm_hit = hit(&dbm_ns);
    // `cargo bench --bench dbm hit`: the dbm hit alone (for a profiler).
    if std::env::args().skip(1).any(|a| a == "hit") {
        row(
            "tankard dbm `get_or_create` (hit)",
            dbm_hit,
            Some(("raw heed", raw)),
        );
        return;
    }
    let file_hit = hit(&file_ns);
    // What the harness adds to every tankard figure: one `block_on`.
    let block_on = time(&keys, &|k| {
        black_box(runtime.block_on(async { black_box(k.len()) }));
    });
    let hop = time(&keys, &|_| {
        runtime
            .block_on(async { tokio::task::spawn_blocking(|| black_box(1)).await })
            .unwrap();
    });
    let put_keys = &keys[..100];
    let put = time(put_keys, &|k| {
        runtime.block_on(dbm_ns.put(k, value.clone())).expect("put");
    });

    println!("\n**dbm (LMDB) hit, 1k keys, 100-byte values, 1 thread**\n");
    println!("| path | per op | ratio |\n|---|---|---|");
    row(
        "raw heed `get` of the same bytes (read txn, get, copy)",
        raw,
        None,
    );
    row(
        "tankard dbm `get_or_create` (hit)",
        dbm_hit,
        Some(("raw heed", raw)),
    );
    row(
        "tankard file `get_or_create` (hit)",
        file_hit,
        Some(("raw heed", raw)),
    );
    println!("\ndbm hit vs file hit: {:.2}×", dbm_hit / file_hit);
    row(
        "`block_on` of a ready future (in each tankard figure)",
        block_on,
        Some(("raw heed", raw)),
    );
    row(
        "an empty `spawn_blocking` hop",
        hop,
        Some(("raw heed", raw)),
    );
    row(
        "tankard dbm `put` (blocking pool, LMDB commit)",
        put,
        Some(("raw heed", raw)),
    );
}
