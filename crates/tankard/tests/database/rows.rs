//! Rows as the database holds them: the documented schema, damaged and
//! oversized entries (misses, never errors), and `gc` over many expired
//! rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{Engine, Raw, entry_key, manager, server, toml, unique};

engines!(
    rows_follow_the_documented_schema,
    damaged_and_oversized_entries_are_misses,
    gc_deletes_100_000_expired_rows_in_batches_and_keeps_the_rest,
    gc_keeps_an_entry_through_its_stale_and_fail_safe_windows,
    keys_of_any_text_are_kept_apart,
    a_table_dropped_by_hand_is_made_again,
);

fn counted(runs: &Arc<AtomicUsize>, value: &str) -> impl FnOnce() -> std::future::Ready<String> {
    let (runs, value) = (runs.clone(), value.to_owned());
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::ready(value)
    }
}

async fn rows_follow_the_documented_schema(engine: Engine) {
    let _server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("schema");
    let table = format!("s_{}", unique("t").to_ascii_lowercase());
    let cache = manager(&toml(
        engine,
        &dir,
        &prefix,
        &format!("table = \"{table}\""),
    ));
    let ns = cache.namespace("n");
    ns.put("k", "v".to_string()).await.unwrap();
    ns.clear().await.unwrap();
    let raw = Raw::connect(engine, &dir).await;
    let key = entry_key(&prefix, "n", "k");
    // One row for the entry, with its bytes and an expiry (60 s from its
    // creation); one counter row for the namespace's generation.
    let entry_rows = raw
        .count(&format!(
            "SELECT COUNT(*) FROM {table} WHERE cache_key = '{key}' \
             AND entry IS NOT NULL AND expires_at IS NOT NULL AND counter IS NULL"
        ))
        .await;
    assert_eq!(entry_rows, 1);
    let counters = raw
        .count(&format!(
            "SELECT COUNT(*) FROM {table} WHERE cache_key = '{prefix}/default:n!gen' \
             AND entry IS NULL AND counter > 0"
        ))
        .await;
    assert_eq!(counters, 1);
    // The clear hides the entry: its row's generation is the old one.
    assert_eq!(ns.get::<String>("k").await.unwrap(), None);
    raw.execute(&format!("DROP TABLE {table}")).await;
}

async fn damaged_and_oversized_entries_are_misses(engine: Engine) {
    let _server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("damaged");
    let cache = manager(&toml(engine, &dir, &prefix, "max_entry_bytes = 4096"));
    let ns = cache.namespace("n");
    let region = cache.default_region();
    let runs = Arc::new(AtomicUsize::new(0));
    let table = "tankard_cache";

    // Written first: it makes the SQLite file the raw client opens.
    ns.put("k", "good".to_string()).await.unwrap();
    let raw = Raw::connect(engine, &dir).await;
    let key = entry_key(&prefix, "n", "k");
    let damage = |bytes: &[u8]| {
        format!(
            "UPDATE {table} SET entry = {} WHERE cache_key = '{key}'",
            engine.blob(bytes)
        )
    };
    for (what, bytes) in [
        ("garbage", b"not an entry at all".to_vec()),
        ("empty", Vec::new()),
        ("oversized", vec![7u8; 10_000]),
    ] {
        assert_eq!(
            raw.execute(&damage(&bytes)).await,
            1,
            "{what}: the row is there"
        );
        let decode_errors = region.stats().decode_errors;
        assert_eq!(ns.get::<String>("k").await.unwrap(), None, "{what}");
        assert!(
            region.stats().decode_errors > decode_errors,
            "{what}: counted as a decode error"
        );
        // The creator runs and its value replaces the bad row.
        let value = ns.get_or_create("k", counted(&runs, what)).await.unwrap();
        assert_eq!(*value, what);
        assert_eq!(*ns.get::<String>("k").await.unwrap().unwrap(), what);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    // An entry too large to store is refused, and the store unchanged.
    let err = ns.put("k", "x".repeat(10_000)).await.unwrap_err();
    assert!(err.is_too_large(), "{err}");
    assert_eq!(region.stats().backend_errors, 0);
}

async fn gc_deletes_100_000_expired_rows_in_batches_and_keeps_the_rest(engine: Engine) {
    let _server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let table = format!("gc_{}", unique("t").to_ascii_lowercase());
    let cache = manager(&toml(
        engine,
        &dir,
        &unique("gc"),
        &format!("table = \"{table}\""),
    ));
    let ns = cache.namespace("n");
    // A live entry, which creates the table.
    ns.put("live", "kept".to_string()).await.unwrap();
    let raw = Raw::connect(engine, &dir).await;
    // 100 000 rows expired at epoch ms 1, in one statement.
    let digit = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                 UNION ALL SELECT 8 UNION ALL SELECT 9)";
    let inserted = raw
        .execute(&format!(
            "INSERT INTO {table} (cache_key, expires_at, entry) \
             SELECT concat('expired-', a.d, b.d, c.d, d.d, e.d), 1, {} \
             FROM {digit} a, {digit} b, {digit} c, {digit} d, {digit} e",
            engine.blob(b"old")
        ))
        .await;
    assert_eq!(inserted, 100_000);

    let seen = std::sync::Mutex::new(Vec::new());
    let purged = cache
        .default_region()
        .purge_expired_with(|so_far| seen.lock().unwrap().push(so_far.entries))
        .await
        .unwrap();
    assert_eq!(purged.entries, 100_000);
    // Batches of 5 000, each reported as it is done (`tankard gc` shows
    // them), then the total.
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 21, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&100_000));
    assert_eq!(
        raw.count(&format!("SELECT COUNT(*) FROM {table}")).await,
        1,
        "only the live entry is left"
    );
    assert_eq!(*ns.get::<String>("live").await.unwrap().unwrap(), "kept");
    raw.execute(&format!("DROP TABLE {table}")).await;
}

async fn gc_keeps_an_entry_through_its_stale_and_fail_safe_windows(engine: Engine) {
    let _server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let table = format!("fs_{}", unique("t").to_ascii_lowercase());
    let clock = tankard::Clock::manual(1_700_000_000_000);
    let config = toml(
        engine,
        &dir,
        &unique("failsafe"),
        &format!("table = \"{table}\"\nstale = 5\nfail_safe = 60"),
    );
    let cache = tankard::CacheManager::with_clock(
        tankard::Config::from_toml_str(&config).unwrap(),
        clock.clone(),
    )
    .unwrap();
    let region = cache.default_region();
    cache
        .namespace("n")
        .put("k", "v".to_string())
        .await
        .unwrap();
    // Past expire (60 s) and stale, within fail_safe: kept, to stand in
    // for a failing creator.
    clock.advance(std::time::Duration::from_secs(66));
    assert_eq!(region.purge_expired().await.unwrap().entries, 0);
    clock.advance(std::time::Duration::from_secs(58));
    assert_eq!(region.purge_expired().await.unwrap().entries, 0);
    // Past all three: gone.
    clock.advance(std::time::Duration::from_secs(2));
    assert_eq!(region.purge_expired().await.unwrap().entries, 1);
    Raw::connect(engine, &dir)
        .await
        .execute(&format!("DROP TABLE {table}"))
        .await;
}

/// Keys differing only in case (a case-insensitive MySQL collation would
/// merge them), with quotes, a NUL (PostgreSQL's `TEXT` refuses one),
/// non-ASCII text, and longer than the 512-byte key column.
async fn keys_of_any_text_are_kept_apart(engine: Engine) {
    let _server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(&toml(engine, &dir, &unique("keys"), "key_length = 4000"));
    let ns = cache.namespace("n");
    let long_a = format!("{}a", "x".repeat(600));
    let long_b = format!("{}b", "x".repeat(600));
    let keys = [
        "k", "K", "it's", "a\0b", "a\0c", "ключ", "ﬁ", &long_a, &long_b,
    ];
    for key in keys {
        ns.put(key, format!("value of {key}")).await.unwrap();
        assert_eq!(cache.default_region().stats().backend_errors, 0, "{key:?}");
    }
    for key in keys {
        let got = ns.get::<String>(key).await.unwrap();
        assert_eq!(
            got.as_deref().map(String::as_str),
            Some(&*format!("value of {key}")),
            "{key:?}"
        );
    }
    assert_eq!(cache.default_region().stats().backend_errors, 0);
}

async fn a_table_dropped_by_hand_is_made_again(engine: Engine) {
    let _server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let table = format!("dr_{}", unique("t").to_ascii_lowercase());
    let cache = manager(&toml(
        engine,
        &dir,
        &unique("dropped"),
        &format!("table = \"{table}\""),
    ));
    let ns = cache.namespace("n");
    ns.put("k", "first".to_string()).await.unwrap();
    Raw::connect(engine, &dir)
        .await
        .execute(&format!("DROP TABLE {table}"))
        .await;
    // The first statement finds it gone (a backend error, bypassed)...
    let _ = ns.get::<String>("k").await;
    // ...and the next makes it again.
    ns.put("k", "again".to_string()).await.unwrap();
    assert_eq!(*ns.get::<String>("k").await.unwrap().unwrap(), "again");
    assert_eq!(cache.default_region().stats().backend_errors, 1);
    Raw::connect(engine, &dir)
        .await
        .execute(&format!("DROP TABLE {table}"))
        .await;
}

/// A manager is made by a plain function, outside any runtime (the
/// `tankard` binary does): opening a database region connects to nothing
/// and starts no task until its first use inside one. An SQLite file's
/// missing directories are made, as the file store makes its `data_dir`.
#[test]
fn a_database_region_opens_outside_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not/yet/there/cache.db");
    let cache = manager(&format!(
        "[cache]\ntype = \"ext:database\"\nurl = \"sqlite://{}\"\n",
        file.display()
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ns = cache.namespace("n");
        ns.put("k", "v".to_string()).await.unwrap();
        assert_eq!(*ns.get::<String>("k").await.unwrap().unwrap(), "v");
    });
    drop(runtime);
    drop(cache);
    assert!(file.exists());
}
