//! The dog-pile contract across real processes on the file backend: the
//! test binary starts copies of itself (see `support/stampede.rs`).

use std::time::Duration;

use crate::stampede::Stampede;

fn stampede(dir: &std::path::Path, key: &str) -> Stampede {
    Stampede {
        config_toml: format!(
            "[cache]\ntype = \"file\"\ndata_dir = {:?}\nlock_dir = {:?}\nstale = 600\nexpire = 3600\n",
            dir.join("data").display().to_string(),
            dir.join("lock").display().to_string(),
        ),
        region: None,
        namespace: "multiprocess".into(),
        key: key.into(),
        processes: 4,
        tasks_per_process: 8,
        creator_ms: 300,
        counter_file: dir.join("creator-runs"),
        until_renewed: false,
    }
}

#[test]
fn a_cold_key_is_created_once_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let run = stampede(dir.path(), "cold").run();
    assert_eq!(
        run.creator_runs, 1,
        "creator ran {} times",
        run.creator_runs
    );
    assert_eq!(run.values.len(), 32);
    let first = &run.values[0];
    assert!(first.starts_with("created-by-"), "{first}");
    assert!(run.values.iter().all(|v| v == first), "{:?}", run.values);
    eprintln!(
        "cold stampede: 4 processes x 8 tasks, wall {:?} for a 300 ms creator",
        run.wall
    );
}

#[test]
fn an_expired_key_is_regenerated_once_and_others_get_the_stale_value() {
    let dir = tempfile::tempdir().unwrap();
    let setup = stampede(dir.path(), "stale");
    // Seed an entry that is stale at once (expire 0) but readable for 600 s.
    let config = tankard::Config::from_toml_str(&setup.config_toml).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let manager = tankard::CacheManager::new(config).unwrap();
        let ns = manager.namespace("multiprocess").expire(Duration::ZERO);
        ns.put("stale", "seeded".to_string()).await.unwrap();
    });
    let run = setup.run();
    assert_eq!(run.creator_runs, 1);
    let stale = run.values.iter().filter(|v| *v == "seeded").count();
    let fresh: Vec<_> = run
        .values
        .iter()
        .filter(|v| v.starts_with("created-by-"))
        .collect();
    assert_eq!(fresh.len(), 1, "{:?}", run.values);
    assert_eq!(
        stale, 31,
        "every other caller got the stale value: {:?}",
        run.values
    );
}
