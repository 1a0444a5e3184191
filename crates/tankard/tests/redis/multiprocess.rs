//! Stampedes of real processes on one key (the test binary re-executing
//! itself, see `support/stampede.rs`): one creator run across all of them,
//! stale values served while one regenerates, and a holder killed with
//! SIGKILL mid-creation.

use std::time::{Duration, Instant};

use crate::common::{Kind, Raw, lock_key, manager, toml, unique_prefix};
use crate::stampede::{Outcome, Stampede};

both!(
    a_cold_key_is_created_once_across_processes,
    a_key_due_for_early_refresh_is_renewed_once_across_processes,
    an_expired_key_is_served_stale_while_one_process_regenerates,
    a_killed_holder_is_taken_over_after_lock_timeout,
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

async fn a_cold_key_is_created_once_across_processes(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let creator_ms = 300;
    let outcome = run(stampede(
        toml(kind, &unique_prefix("cold"), ""),
        "cold",
        creator_ms,
        &dir,
    ))
    .await;
    assert_eq!(outcome.creator_runs, 1, "{outcome:?}");
    assert_eq!(outcome.values.len(), PROCESSES * TASKS, "{outcome:?}");
    let first = &outcome.values[0];
    assert!(first.starts_with("created-by-"), "{outcome:?}");
    assert!(outcome.values.iter().all(|v| v == first), "{outcome:?}");
    eprintln!(
        "{kind:?}: cold stampede of {PROCESSES}x{TASKS}: wall {:?}, {:?} over the creator's {creator_ms} ms",
        outcome.wall,
        outcome
            .wall
            .saturating_sub(Duration::from_millis(creator_ms))
    );
}

async fn an_expired_key_is_served_stale_while_one_process_regenerates(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let config = toml(kind, &unique_prefix("stale"), "stale = 60");
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
    assert_eq!(outcome.values.len(), PROCESSES * TASKS, "{outcome:?}");
    let stale = outcome.values.iter().filter(|v| *v == "stale-seed").count();
    let fresh: Vec<_> = outcome
        .values
        .iter()
        .filter(|v| v.starts_with("created-by-"))
        .collect();
    assert_eq!(
        (stale, fresh.len()),
        (PROCESSES * TASKS - 1, 1),
        "{outcome:?}"
    );
}

async fn a_key_due_for_early_refresh_is_renewed_once_across_processes(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let config = toml(kind, &unique_prefix("early"), "early_refresh = 0.5");
    // Seeded by a clock 40 s behind (expire 60): fresh for 20 s more, and
    // already past half its life, so every process finds it due.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let seeder = tankard::CacheManager::with_clock(
        tankard::Config::from_toml_str(&config).unwrap(),
        tankard::Clock::manual(now_ms - 40_000),
    )
    .unwrap();
    seeder
        .namespace("stampede")
        .put("due", "seed".to_string())
        .await
        .unwrap();
    let stampede = Stampede {
        until_renewed: true,
        ..stampede(config, "due", 200, &dir)
    };
    let outcome = run(stampede).await;
    // Nobody waited: every caller got the current value at once, and one
    // refresh across all the processes renewed it.
    assert_eq!(outcome.values.len(), PROCESSES * TASKS, "{outcome:?}");
    assert!(outcome.values.iter().all(|v| v == "seed"), "{outcome:?}");
    assert_eq!(outcome.creator_runs, 1, "{outcome:?}");
}

async fn a_killed_holder_is_taken_over_after_lock_timeout(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("killed");
    let config = toml(kind, &prefix, "lock_timeout = \"1s\"");
    let lock = lock_key(&prefix, "stampede", "orphan");

    // A holder that would create for a minute, caught in its creator
    // (which it only enters holding the lock)...
    let orphan = stampede(config.clone(), "orphan", 60_000, &dir);
    let mut holder = orphan.start_one();
    let mut raw = Raw::connect(kind).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started = std::fs::read_to_string(&orphan.counter_file).is_ok_and(|s| !s.is_empty());
        let exists: i64 = raw.query(redis::cmd("EXISTS").arg(&lock)).await;
        if started && exists == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the holder never took the lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...dies holding the lock, without releasing it.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let pttl = raw.pttl(&lock).await;
    assert!(
        pttl > 0,
        "the dead holder's lock should still be there (PTTL {pttl})"
    );

    let outcome = run(stampede(config, "orphan", 100, &dir)).await;
    // One run by the dead holder, exactly one more after its lock expired.
    assert_eq!(outcome.creator_runs, 2, "{outcome:?}");
    assert_eq!(outcome.values.len(), PROCESSES * TASKS, "{outcome:?}");
    let first = &outcome.values[0];
    assert!(first.starts_with("created-by-"), "{outcome:?}");
    assert!(outcome.values.iter().all(|v| v == first), "{outcome:?}");
    // Nothing left behind: the dead holder's lock expired, its successor's
    // was released.
    let exists: i64 = raw.query(redis::cmd("EXISTS").arg(&lock)).await;
    assert_eq!(exists, 0, "a lock key was left behind");
}
