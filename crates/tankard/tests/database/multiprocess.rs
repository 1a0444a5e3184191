//! Stampedes of real processes on one key of one database (the test
//! binary re-executing itself, see `support/stampede.rs`): one creator run
//! across all of them, stale values served while one regenerates, and a
//! lock holder killed with SIGKILL mid-creation.

use std::time::{Duration, Instant};

use crate::common::{Engine, manager, server, toml, unique};
use crate::stampede::{Outcome, Stampede};

engines!(
    a_cold_key_is_created_once_across_processes,
    an_expired_key_is_served_stale_while_one_process_regenerates,
    a_killed_holder_s_lock_is_taken_over_and_not_leaked,
);

const PROCESSES: usize = 8;
const TASKS: usize = 4;

fn stampede(config_toml: String, key: &str, creator_ms: u64, dir: &tempfile::TempDir) -> Stampede {
    Stampede {
        config_toml,
        region: None,
        namespace: "stampede".to_owned(),
        key: key.to_owned(),
        processes: PROCESSES,
        tasks_per_process: TASKS,
        creator_ms,
        counter_file: dir.path().join("creator-runs"),
        until_renewed: false,
    }
}

/// Runs a stampede off the async runtime (it blocks on its children).
async fn run(stampede: Stampede) -> Outcome {
    tokio::task::spawn_blocking(move || stampede.run())
        .await
        .unwrap()
}

async fn a_cold_key_is_created_once_across_processes(engine: Engine) {
    let _server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(stampede(
        toml(engine, &dir, &unique("cold"), ""),
        "cold",
        300,
        &dir,
    ))
    .await;
    assert_eq!(outcome.creator_runs, 1, "{outcome:?}");
    assert_eq!(outcome.values.len(), PROCESSES * TASKS, "{outcome:?}");
    let first = &outcome.values[0];
    assert!(first.starts_with("created-by-"), "{outcome:?}");
    assert!(outcome.values.iter().all(|v| v == first), "{outcome:?}");
    eprintln!(
        "{engine:?}: cold stampede of {PROCESSES}x{TASKS}: wall {:?} (creator 300 ms)",
        outcome.wall
    );
}

async fn an_expired_key_is_served_stale_while_one_process_regenerates(engine: Engine) {
    let _server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = toml(engine, &dir, &unique("stale"), "stale = 60");
    // Seeded already expired: only the stale grace keeps it readable.
    manager(&config)
        .namespace("stampede")
        .expire(Duration::ZERO)
        .put("hot", "stale-seed".to_string())
        .await
        .unwrap();
    // The creator outlasts every process's first lookup by far, so every
    // caller but the one regenerating sees the stale entry.
    let outcome = run(stampede(config, "hot", 1000, &dir)).await;
    assert_eq!(outcome.creator_runs, 1, "{outcome:?}");
    let stale = outcome.values.iter().filter(|v| *v == "stale-seed").count();
    let fresh = outcome
        .values
        .iter()
        .filter(|v| v.starts_with("created-by-"))
        .count();
    assert_eq!((stale, fresh), (PROCESSES * TASKS - 1, 1), "{outcome:?}");
}

/// A holder killed inside its creator: the database frees its lock with
/// its session (or the kernel its `flock`), so the next stampede runs one
/// creator at once. Were the lock leaked, every process would wait out
/// `wait_timeout` and run its own creator: 8 runs, not 1.
async fn a_killed_holder_s_lock_is_taken_over_and_not_leaked(engine: Engine) {
    let _server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = toml(
        engine,
        &dir,
        &unique("killed"),
        "lock_timeout = \"1s\"\nwait_timeout = \"30s\"",
    );
    // A holder that would create for a minute, caught in its creator
    // (which it only enters holding the lock)...
    let orphan = stampede(config.clone(), "orphan", 60_000, &dir);
    let mut holder = orphan.start_one();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&orphan.counter_file).is_ok_and(|s| !s.is_empty()) {
        assert!(Instant::now() < deadline, "the holder never took the lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...dies holding it, without releasing it.
    holder.kill().unwrap();
    holder.wait().unwrap();

    let outcome = run(stampede(config, "orphan", 100, &dir)).await;
    // One run by the dead holder, exactly one more after it.
    assert_eq!(outcome.creator_runs, 2, "{outcome:?}");
    let first = &outcome.values[0];
    assert!(first.starts_with("created-by-"), "{outcome:?}");
    assert!(outcome.values.iter().all(|v| v == first), "{outcome:?}");
}
