//! The file backend's own promises: damaged files are misses that get
//! replaced, a deleted or unusable directory never takes the app down,
//! lock files stay bounded, and two managers (two processes' views) share
//! entries, clears and invalidations.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tankard::{CacheManager, Clock, Config, Invalidation};

use crate::conformance::{START_MS, fixture};

fn entry_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for item in read.flatten() {
            let path = item.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "tke") {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_corrupt_or_truncated_file_is_a_miss_and_is_replaced() {
    let f = fixture("file", &[]);
    let data = f.dir.path().join("data");
    let ns = f.manager.namespace("n");
    ns.put("k", "good".to_string()).await.unwrap();
    let files = entry_files(&data);
    assert_eq!(files.len(), 1);
    let path = files[0].clone();
    let bytes = std::fs::read(&path).unwrap();

    for damage in [
        bytes[..bytes.len() / 2].to_vec(),
        Vec::new(),
        b"not a tankard entry at all".to_vec(),
        {
            let mut b = bytes.clone();
            let last = b.len() - 1;
            b[last] ^= 0xff;
            b
        },
    ] {
        std::fs::write(&path, &damage).unwrap();
        assert!(ns.get::<String>("k").await.unwrap().is_none());
        let v = ns
            .get_or_create("k", || async { "fresh".to_string() })
            .await
            .unwrap();
        assert_eq!(*v, "fresh");
        assert_ne!(
            std::fs::read(&path).unwrap(),
            damage,
            "the damaged file was replaced"
        );
    }
    assert!(f.manager.default_region().stats().decode_errors >= 4);
}

#[tokio::test]
async fn a_deleted_data_dir_is_recreated_on_the_next_write() {
    let f = fixture("file", &[]);
    let ns = f.manager.namespace("n");
    ns.put("k", 1u8).await.unwrap();
    std::fs::remove_dir_all(f.dir.path()).unwrap();
    assert!(ns.get::<u8>("k").await.unwrap().is_none());
    let v = ns.get_or_create("k", || async { 2u8 }).await.unwrap();
    assert_eq!(*v, 2);
    assert_eq!(*ns.get::<u8>("k").await.unwrap().unwrap(), 2);
    assert_eq!(f.manager.default_region().stats().backend_errors, 0);
}

#[tokio::test]
async fn an_unusable_data_dir_is_bypassed_or_reported() {
    unusable_data_dir_is_bypassed_or_reported("file").await;
}

/// A store of `kind` under a `data_dir` that cannot be made: with
/// `bypass`, the creator's value every time; with `error`, an error that
/// names the key.
pub(crate) async fn unusable_data_dir_is_bypassed_or_reported(kind: &str) {
    // A directory below a regular file can never be created, even by root.
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let bad = blocker.join("data").display().to_string();
    let manager = CacheManager::new(
        Config::from_flat([("cache.type", kind), ("cache.data_dir", bad.as_str())]).unwrap(),
    )
    .unwrap();
    let ns = manager.namespace("n");
    for _ in 0..2 {
        let v = ns.get_or_create("k", || async { 5u8 }).await.unwrap();
        assert_eq!(*v, 5, "bypass: the creator's value is returned");
    }
    let stats = manager.default_region().stats();
    assert_eq!(stats.creator_calls, 2);
    assert!(stats.backend_errors >= 2);

    let strict = CacheManager::new(
        Config::from_flat([
            ("cache.type", kind),
            ("cache.data_dir", bad.as_str()),
            ("cache.on_backend_error", "error"),
        ])
        .unwrap(),
    )
    .unwrap();
    let err = strict
        .namespace("n")
        .get_or_create("k", || async { 5u8 })
        .await
        .unwrap_err();
    assert!(err.is_backend());
    assert!(err.to_string().contains("cache.data_dir"), "{err}");
}

#[tokio::test]
async fn lock_files_do_not_grow_with_keys() {
    let f = fixture("file", &[]);
    let ns = f.manager.namespace("n");
    for i in 0..500 {
        ns.get_or_create(&format!("key-{i}"), || async move { i })
            .await
            .unwrap();
    }
    let locks = std::fs::read_dir(f.dir.path().join("lock"))
        .unwrap()
        .count();
    assert!(locks <= 64, "{locks} lock files for 500 keys");
}

#[tokio::test]
async fn purge_removes_only_dead_entries() {
    let f = fixture("file", &[("cache.expire", "10"), ("cache.stale", "10")]);
    let data = f.dir.path().join("data");
    let ns = f.manager.namespace("n");
    ns.put("old", 1u8).await.unwrap();
    f.clock.advance(Duration::from_secs(15));
    ns.put("new", 2u8).await.unwrap();
    std::fs::write(data.join("ab.tke"), b"junk").unwrap();
    f.clock.advance(Duration::from_secs(6));
    // "old" is past expire + stale; "new" is still fresh; junk is dead.
    assert_eq!(
        f.manager
            .default_region()
            .purge_expired()
            .await
            .unwrap()
            .entries,
        2
    );
    assert_eq!(entry_files(&data).len(), 1);
    assert_eq!(*ns.get::<u8>("new").await.unwrap().unwrap(), 2);
    let usage = f.manager.default_region().usage().await.unwrap();
    assert_eq!(usage.entries, Some(1));
}

#[tokio::test]
async fn entries_written_with_another_secret_are_misses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let manager = |secret: &str| {
        CacheManager::new(
            Config::from_flat([
                ("cache.type", "file"),
                ("cache.data_dir", data.as_str()),
                ("cache.secret", secret),
            ])
            .unwrap(),
        )
        .unwrap()
    };
    let (a, b) = (manager("one"), manager("two"));
    a.namespace("n").put("k", 1u8).await.unwrap();
    assert_eq!(*a.namespace("n").get::<u8>("k").await.unwrap().unwrap(), 1);
    assert!(b.namespace("n").get::<u8>("k").await.unwrap().is_none());
    assert_eq!(b.default_region().stats().decode_errors, 1);
}

#[tokio::test]
async fn two_managers_share_entries_clears_and_invalidations() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let open = || {
        let config = Config::from_flat([
            ("cache.type", "file"),
            ("cache.data_dir", data.as_str()),
            ("cache.stale", "60"),
        ])
        .unwrap();
        CacheManager::with_clock(config, Clock::manual(START_MS)).unwrap()
    };
    let (one, two) = (open(), open());
    let (n1, n2) = (one.namespace("n"), two.namespace("n"));
    n1.put("k", 1u8).await.unwrap();
    assert_eq!(*n2.get::<u8>("k").await.unwrap().unwrap(), 1);
    n2.clear().await.unwrap();
    assert!(
        n1.get::<u8>("k").await.unwrap().is_none(),
        "a clear elsewhere is seen here"
    );
    n1.put("k", 2u8).await.unwrap();
    two.default_region()
        .invalidate(Invalidation::Soft)
        .await
        .unwrap();
    assert_eq!(
        n1.peek::<u8>("k")
            .await
            .unwrap()
            .map(|(v, fresh)| (*v, fresh)),
        Some((2, false))
    );
    two.default_region()
        .invalidate(Invalidation::Hard)
        .await
        .unwrap();
    assert!(n1.peek::<u8>("k").await.unwrap().is_none());
    // Other namespaces sharing the directory are untouched by a clear.
    one.namespace("other").put("k", 3u8).await.unwrap();
    n2.clear().await.unwrap();
    assert_eq!(
        *two.namespace("other")
            .get::<u8>("k")
            .await
            .unwrap()
            .unwrap(),
        3
    );
}

/// A manager on the fixture's directories, as a second part of the same
/// process (another region, another library) would open them.
fn same_dirs(f: &crate::conformance::Fixture, kind: &str) -> CacheManager {
    let at = |dir: &str| f.dir.path().join(dir).display().to_string();
    let config = Config::from_flat([
        ("cache.type", kind.to_owned()),
        ("cache.data_dir", at("data")),
        ("cache.lock_dir", at("lock")),
    ])
    .unwrap();
    CacheManager::with_clock(config, f.clock.clone()).unwrap()
}

/// DESIGN §5 rule 7: two keys share one of the 64 lock stripes about one
/// time in 64, and a creator that calls `get_or_create` on a key of its own
/// stripe must not wait on the stripe its own process holds (it waited the
/// whole `wait_timeout`, 60 s by default, before stripes were reentrant),
/// whether that key is in its own region or in another manager's.
#[tokio::test]
async fn a_creator_may_call_a_key_on_its_own_stripe_without_waiting() {
    creator_calls_a_key_on_its_own_stripe("file").await;
}

/// [`a_creator_may_call_a_key_on_its_own_stripe_without_waiting`] on a
/// store of `kind` (file or dbm: both take `flock` stripes).
pub(crate) async fn creator_calls_a_key_on_its_own_stripe(kind: &str) {
    let f = fixture(kind, &[]);
    let other = same_dirs(&f, kind);
    let ns = f.manager.namespace("n");
    let elsewhere = other.namespace("n");
    let nested = async {
        for i in 0..300u64 {
            let (inner, elsewhere) = (ns.clone(), elsewhere.clone());
            let outer = ns
                .get_or_create(&format!("a{i}"), || async move {
                    let b = inner
                        .get_or_create(&format!("b{i}"), || async move { i * 2 })
                        .await
                        .unwrap();
                    let c = elsewhere
                        .get_or_create(&format!("c{i}"), || async move { i * 3 })
                        .await
                        .unwrap();
                    *b + *c
                })
                .await
                .unwrap();
            assert_eq!(*outer, i * 5);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), nested)
        .await
        .expect("300 nested calls within 20 s (the default wait_timeout is 60 s)");
    let stats = f.manager.default_region().stats();
    assert_eq!(stats.creator_calls, 600);
    assert_eq!(stats.backend_errors, 0);
    assert_eq!(other.default_region().stats().creator_calls, 300);
}

/// Reentrant stripes still hold one key once per process: two managers of
/// one process (each with its own single-flight map) that miss the same
/// key run one creator, the second waiting for the first's value.
#[tokio::test(start_paused = true)]
async fn two_managers_in_one_process_create_a_key_once() {
    two_managers_create_a_key_once("file").await;
}

/// [`two_managers_in_one_process_create_a_key_once`] on a store of `kind`.
pub(crate) async fn two_managers_create_a_key_once(kind: &str) {
    let f = fixture(kind, &[]);
    let other = same_dirs(&f, kind);
    let runs = Arc::new(AtomicUsize::new(0));
    let call = |ns: tankard::Cache| {
        let runs = runs.clone();
        async move {
            ns.get_or_create("k", || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // Paused time: this lets the other caller reach the lock.
                tokio::time::sleep(Duration::from_secs(1)).await;
                7u8
            })
            .await
            .unwrap()
        }
    };
    let (one, two) = tokio::join!(call(f.manager.namespace("n")), call(other.namespace("n")));
    assert_eq!((*one, *two), (7, 7));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one creator for one key");
}

/// Issue 11 item 4: an entry file over `max_entry_bytes` (here a 64 MiB
/// sparse file at an entry's path, with a 1 MiB bound) is a miss, counted
/// as a decode error, and is never read into memory; a value over the
/// bound is refused, and `gc` removes the foreign file.
#[test]
fn an_entry_over_max_entry_bytes_is_a_miss_never_read_whole() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = fixture("file", &[("cache.max_entry_bytes", "1048576")]);
    let data = f.dir.path().join("data");
    let ns = f.manager.namespace("n");
    runtime.block_on(ns.put("k", 1u8)).unwrap();
    let path = entry_files(&data).pop().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let peak = allocation_counter::measure(|| {
        let got = runtime.block_on(ns.get::<u8>("k")).unwrap();
        assert!(got.is_none(), "an oversized entry is a miss");
    });
    assert!(
        peak.bytes_max < 1 << 20,
        "peak {} bytes allocated to look at a 64 MiB entry",
        peak.bytes_max
    );
    let region = f.manager.default_region();
    assert_eq!(region.stats().decode_errors, 1);
    assert_eq!(region.stats().backend_errors, 0);

    let err = runtime
        .block_on(ns.put("big", vec![7u8; 2 << 20]))
        .unwrap_err();
    assert!(err.is_too_large(), "{err}");
    assert!(
        runtime
            .block_on(ns.get::<Vec<u8>>("big"))
            .unwrap()
            .is_none()
    );
    assert_eq!(entry_files(&data).len(), 1, "nothing was written");

    let purged = runtime.block_on(region.purge_expired()).unwrap();
    assert_eq!(purged.entries, 1, "gc removes what can only be a miss");
    assert!(entry_files(&data).is_empty());
}

/// The generation log of the fixture's one region.
fn meta_file(f: &crate::conformance::Fixture) -> PathBuf {
    let dir = f.dir.path().join("data").join(".meta");
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|item| item.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "meta"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs.pop().unwrap()
}

/// Issue 11 item 7: garbage over the region's generation log read as an
/// error, so every call ran the creator and counted backend errors. It
/// now reads as a counter restarted past the clock: caching goes on, no
/// entry written before the damage comes back (not even one a `clear`
/// hid), and the next `clear` or invalidation repairs the log for every
/// process.
#[tokio::test]
async fn garbage_in_the_generation_log_keeps_caching_on_until_the_next_clear_repairs_it() {
    let f = fixture("file", &[]);
    let ns = f.manager.namespace("n");
    ns.put("cleared", 1u8).await.unwrap();
    ns.clear().await.unwrap();
    ns.put("before", 2u8).await.unwrap();
    let log = meta_file(&f);
    let mut garbage = b"\x07\x00\x00\x00TKMF\xde\xad\xbe\xef not a generation log ".to_vec();
    garbage.extend((0..=255u8).rev());
    std::fs::write(&log, &garbage).unwrap();

    let runs = Arc::new(AtomicUsize::new(0));
    for _ in 0..20 {
        let runs = runs.clone();
        let v = ns
            .get_or_create("k", || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                5u8
            })
            .await
            .unwrap();
        assert_eq!(*v, 5);
    }
    let region = f.manager.default_region();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "caching stays on");
    assert_eq!(region.stats().backend_errors, 0);
    assert!(
        ns.get::<u8>("cleared").await.unwrap().is_none(),
        "stays hidden"
    );
    assert!(ns.get::<u8>("before").await.unwrap().is_none());

    // Another process reading the same damaged log agrees with this one.
    let other = same_dirs(&f, "file");
    assert_eq!(
        *other.namespace("n").get::<u8>("k").await.unwrap().unwrap(),
        5
    );

    // A clear of another namespace repairs the log and keeps "n" as it was.
    f.manager.namespace("m").clear().await.unwrap();
    assert_ne!(std::fs::read(&log).unwrap(), garbage, "rewritten");
    assert_eq!(*ns.get::<u8>("k").await.unwrap().unwrap(), 5);
    assert_eq!(
        *other.namespace("n").get::<u8>("k").await.unwrap().unwrap(),
        5
    );
    ns.clear().await.unwrap();
    assert!(other.namespace("n").get::<u8>("k").await.unwrap().is_none());
    assert_eq!(region.stats().backend_errors, 0);
}

/// Issue 11 item 5: what a writer killed between creating its temporary
/// file and renaming it leaves behind is counted by `usage` and removed by
/// `purge_expired` once its last write is 10 minutes old (younger, it may
/// belong to a live writer). The age is set with `set_modified`, not waited.
#[tokio::test]
async fn temp_files_of_crashed_writers_are_counted_and_purged_once_old() {
    let f = fixture("file", &[]);
    let data = f.dir.path().join("data");
    let ns = f.manager.namespace("n");
    ns.put("k", 1u8).await.unwrap();
    ns.clear().await.unwrap(); // makes the meta log, whose writer uses temp files too
    ns.put("k", 2u8).await.unwrap();
    let fan_out = entry_files(&data)[0].parent().unwrap().to_path_buf();
    let left = [
        (fan_out.join(".tmp-4194000-0"), 3000),
        (fan_out.join(".tmp-4194000-1"), 500),
        (data.join(".meta").join(".tmp-4194001-7"), 40),
    ];
    for (path, len) in &left {
        std::fs::write(path, vec![1u8; *len]).unwrap();
    }
    let region = f.manager.default_region();
    let usage = region.usage().await.unwrap();
    assert_eq!(
        (usage.entries, usage.temp_files, usage.temp_bytes),
        (Some(1), Some(3), Some(3540))
    );

    let purged = region.purge_expired().await.unwrap();
    assert_eq!(
        purged.temp_files, 0,
        "young temp files may be a live writer's"
    );

    let aged = std::time::SystemTime::now() - Duration::from_secs(11 * 60);
    for (path, _) in &left[1..] {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_modified(aged).unwrap();
    }
    let purged = region.purge_expired().await.unwrap();
    assert_eq!(
        (purged.entries, purged.temp_files, purged.temp_bytes),
        (0, 2, 540)
    );
    let usage = region.usage().await.unwrap();
    assert_eq!((usage.temp_files, usage.temp_bytes), (Some(1), Some(3000)));
    assert!(left[0].0.exists() && !left[1].0.exists() && !left[2].0.exists());
    assert_eq!(*ns.get::<u8>("k").await.unwrap().unwrap(), 2);
}
