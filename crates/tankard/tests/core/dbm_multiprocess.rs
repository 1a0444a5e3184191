//! The dog-pile contract across real processes on one LMDB environment
//! (`type = dbm`): the test binary starts copies of itself (see
//! `support/stampede.rs`), 8 processes of 4 tasks each.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::stampede::Stampede;

const PROCESSES: usize = 8;
const TASKS: usize = 4;

fn config(dir: &Path) -> String {
    format!(
        "[cache]\ntype = \"dbm\"\ndata_dir = {:?}\nlock_dir = {:?}\nstale = 600\nexpire = 3600\n",
        dir.join("data").display().to_string(),
        dir.join("lock").display().to_string(),
    )
}

fn stampede(dir: &Path, key: &str, creator_ms: u64) -> Stampede {
    Stampede {
        config_toml: config(dir),
        region: None,
        namespace: "multiprocess".into(),
        key: key.into(),
        processes: PROCESSES,
        tasks_per_process: TASKS,
        creator_ms,
        counter_file: dir.join("creator-runs"),
        until_renewed: false,
    }
}

/// The stripe files in `lock_dir` that another open file description
/// (as another process has) could not lock now.
fn held_stripes(lock_dir: &Path) -> Vec<String> {
    let Ok(files) = std::fs::read_dir(lock_dir) else {
        return Vec::new();
    };
    files
        .flatten()
        .filter(|file| file.file_name().to_string_lossy().starts_with("stripe-"))
        .filter(|file| {
            let stripe = File::open(file.path()).unwrap();
            match stripe.try_lock() {
                Ok(()) => false,
                Err(TryLockError::WouldBlock) => true,
                Err(TryLockError::Error(err)) => panic!("{err}"),
            }
        })
        .map(|file| file.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_cold_key_is_created_once_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let run = stampede(dir.path(), "cold", 300).run();
    assert_eq!(run.creator_runs, 1, "{run:?}");
    assert_eq!(run.values.len(), PROCESSES * TASKS, "{run:?}");
    let first = &run.values[0];
    assert!(first.starts_with("created-by-"), "{run:?}");
    assert!(run.values.iter().all(|v| v == first), "{run:?}");
    assert!(held_stripes(&dir.path().join("lock")).is_empty());
    eprintln!(
        "dbm cold stampede: {PROCESSES} processes x {TASKS} tasks, wall {:?} for a 300 ms creator",
        run.wall
    );
}

#[test]
fn an_expired_key_is_regenerated_once_and_others_get_the_stale_value() {
    let dir = tempfile::tempdir().unwrap();
    let setup = stampede(dir.path(), "stale", 1000);
    // Seed an entry that is stale at once (expire 0) but readable for 600 s.
    let config = tankard::Config::from_toml_str(&setup.config_toml).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let manager = tankard::CacheManager::new(config).unwrap();
        let ns = manager.namespace("multiprocess").expire(Duration::ZERO);
        ns.put("stale", "seeded".to_string()).await.unwrap();
    });
    // The creator outlasts every process's first lookup by far, so every
    // caller but the one regenerating sees the stale entry.
    let run = setup.run();
    assert_eq!(run.creator_runs, 1, "{run:?}");
    let stale = run.values.iter().filter(|v| *v == "seeded").count();
    let fresh = run
        .values
        .iter()
        .filter(|v| v.starts_with("created-by-"))
        .count();
    assert_eq!(
        (stale, fresh),
        (PROCESSES * TASKS - 1, 1),
        "every other caller got the stale value: {run:?}"
    );
}

#[test]
fn a_killed_holder_s_lock_is_taken_over_and_nothing_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("lock");
    // A holder that would create for a minute, caught in its creator
    // (which it only enters holding the stripe's flock)...
    let orphan = stampede(dir.path(), "orphan", 60_000);
    let mut holder = orphan.start_one();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started = std::fs::read_to_string(&orphan.counter_file).is_ok_and(|s| !s.is_empty());
        if started {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the holder never ran its creator"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(held_stripes(&lock_dir).len(), 1, "the holder's stripe");
    // ...dies holding it, without releasing anything.
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(
        held_stripes(&lock_dir).is_empty(),
        "the kernel released the dead holder's flock"
    );

    let run = stampede(dir.path(), "orphan", 100).run();
    // One run by the dead holder, exactly one more by its successors.
    assert_eq!(run.creator_runs, 2, "{run:?}");
    assert_eq!(run.values.len(), PROCESSES * TASKS, "{run:?}");
    let first = &run.values[0];
    assert!(first.starts_with("created-by-"), "{run:?}");
    assert!(run.values.iter().all(|v| v == first), "{run:?}");
    assert!(held_stripes(&lock_dir).is_empty(), "no lock left behind");
}

/// A value of about 16 KiB: four pages of the map and more.
fn big(tag: usize) -> String {
    format!("{tag}-{}", "x".repeat(16 * 1024))
}

/// Entry point of the reader process of the test below: opens the
/// environment `TANKARD_DBM_ENV` with heed, begins a read transaction and
/// keeps it open until killed.
#[test]
#[ignore = "child process of a_killed_reader_does_not_pin_the_map; started by it"]
#[allow(unsafe_code)]
fn dbm_reader_child() {
    let path = std::env::var("TANKARD_DBM_ENV").expect("run only by its parent test");
    let mut options = heed::EnvOpenOptions::new().read_txn_without_tls();
    options.max_dbs(2);
    // SAFETY: an environment LMDB shares with the parent process under its
    // own locks; nothing else writes its files.
    let env = unsafe { options.open(&path) }.expect("open the environment");
    let txn = env.read_txn().expect("read transaction");
    println!("reader:ready");
    std::thread::sleep(Duration::from_secs(120));
    drop(txn);
}

#[tokio::test]
async fn a_killed_reader_does_not_pin_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let config = tankard::Config::from_flat([
        ("cache.type", "dbm"),
        ("cache.data_dir", data.as_str()),
        ("cache.max_bytes", "262144"),
        ("cache.on_backend_error", "error"),
    ])
    .unwrap();
    let manager = tankard::CacheManager::new(config).unwrap();
    let ns = manager.namespace("n");
    ns.put("k", big(0)).await.unwrap();
    let env = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .flatten()
        .map(|item| item.path())
        .find(|path| path.extension().is_some_and(|e| e == "lmdb"))
        .unwrap();

    // Another process reads the environment as it is now...
    let mut reader = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "dbm_multiprocess::dbm_reader_child",
            "--nocapture",
        ])
        .env("TANKARD_DBM_ENV", &env)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(reader.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("reader:ready") {
        line.clear();
        let read = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(read > 0, "the reader exited before it was ready");
    }
    // ...so no page freed from then on can be reused while it lives:
    // rewriting one entry soon fills the map.
    let mut full = None;
    for i in 1..200 {
        if let Err(err) = ns.put("k", big(i)).await {
            full = Some(err);
            break;
        }
    }
    let full = full.expect("a live reader pins the pages it can see");
    assert!(full.to_string().contains("is full"), "{full}");

    // Killed, it leaves its reader slot behind; the store clears it, and
    // rewriting goes on as long as it likes.
    reader.kill().unwrap();
    reader.wait().unwrap();
    for i in 200..400 {
        ns.put("k", big(i))
            .await
            .unwrap_or_else(|err| panic!("rewrite {i}: {err}"));
    }
    assert!(
        ns.get::<String>("k")
            .await
            .unwrap()
            .unwrap()
            .starts_with("399-")
    );
}

/// The file store's fault suite on LMDB: writers SIGKILLed at varying
/// moments (mid-commit too, holding LMDB's writer mutex, or mid-read,
/// holding a reader slot) while this process reads. Every read is a
/// whole, correct value or a miss; afterwards the environment takes
/// writes and serves them (the dead writer's mutex was recovered).
#[test]
fn writers_killed_mid_write_leave_no_corrupt_value_and_no_wedged_environment() {
    use crate::file_faults::{
        KEYS, NAMESPACE, Reads, config_toml, kill_writers, manager, read_all,
    };

    let dir = tempfile::tempdir().unwrap();
    let config = config_toml(dir.path(), "dbm");
    let (during, chaos) = kill_writers(&config, 40);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cache = manager(&config);
    let ns = cache.namespace(NAMESPACE);
    let mut after = Reads::default();
    runtime.block_on(read_all(&ns, &mut after));
    after.decode_errors = cache.default_region().stats().decode_errors;
    eprintln!(
        "dbm writers SIGKILLed: 40 kills in {chaos:?}; reads during: {during:?}; after: {after:?}"
    );
    assert_eq!(during.corrupt + after.corrupt, 0, "never a corrupt value");
    assert_eq!(during.errors + after.errors, 0, "never a failed read");
    assert_eq!(
        during.decode_errors + after.decode_errors,
        0,
        "never a torn entry"
    );
    assert!(during.whole > 0, "the reader saw values: {during:?}");

    // Nothing is wedged: a write and a read go through at once.
    runtime.block_on(async {
        for key in KEYS {
            ns.put(key, key.to_owned()).await.unwrap();
            assert_eq!(*ns.get::<String>(key).await.unwrap().unwrap(), key);
        }
    });
}
