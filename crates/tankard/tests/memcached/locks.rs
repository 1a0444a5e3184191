//! The distributed creation lock: stampedes across real processes, a
//! holder killed mid-creation, renewal, and owner-checked release.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tankard::CacheManager;

use crate::stampede::{Outcome, Stampede};
use crate::support::{Raw, config, find, lock_key, servers, unique_prefix, url};

fn toml(prefix: &str, extra: &str) -> String {
    format!(
        "[cache]\ntype = \"ext:memcached\"\nurl = \"{}\"\nprefix = \"{prefix}\"\nexpire = 300\nwait_timeout = \"30s\"\n{extra}\n",
        url()
    )
}

/// Runs a stampede, failing the test instead of hanging if it never ends.
fn run(stampede: Stampede) -> Outcome {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(stampede.run()));
    outcome
        .recv_timeout(Duration::from_secs(90))
        .expect("the stampede hung: some caller never returned")
}

fn stampede(prefix: &str, extra: &str, dir: &tempfile::TempDir) -> Stampede {
    Stampede {
        config_toml: toml(prefix, extra),
        region: None,
        namespace: "n".into(),
        key: "k".into(),
        processes: 8,
        tasks_per_process: 4,
        creator_ms: 300,
        counter_file: dir.path().join("runs"),
        until_renewed: false,
    }
}

#[test]
fn cold_key_stampede_across_processes_runs_the_creator_once() {
    servers();
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(stampede(
        &unique_prefix("cold"),
        "lock_timeout = \"5s\"",
        &dir,
    ));
    assert_eq!(outcome.creator_runs, 1, "{:?}", outcome.values);
    assert_eq!(outcome.values.len(), 32);
    let first = &outcome.values[0];
    assert!(first.starts_with("created-by-"), "{first}");
    assert!(
        outcome.values.iter().all(|v| v == first),
        "{:?}",
        outcome.values
    );
    eprintln!(
        "memcached cold-key stampede, 8 processes x 4 tasks: wall {:?}, {:?} over the creator's 300 ms",
        outcome.wall,
        outcome.wall.saturating_sub(Duration::from_millis(300))
    );
}

#[test]
fn expired_entry_stampede_serves_stale_to_all_but_the_regenerating_caller() {
    servers();
    let prefix = unique_prefix("stalestampede");
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cache = CacheManager::new(config(
            &url(),
            &prefix,
            &[("cache.expire", "300"), ("cache.stale", "60")],
        ))
        .unwrap();
        // Stale from the moment it is written.
        let ns = cache.namespace("n").expire(Duration::ZERO);
        ns.put("k", "stale-value".to_string()).await.unwrap();
        assert!(!ns.peek::<String>("k").await.unwrap().unwrap().1);
    });
    let outcome = run(stampede(&prefix, "stale = 60\nlock_timeout = \"5s\"", &dir));
    assert_eq!(outcome.creator_runs, 1, "{:?}", outcome.values);
    let stale = outcome
        .values
        .iter()
        .filter(|v| *v == "stale-value")
        .count();
    let created: Vec<_> = outcome
        .values
        .iter()
        .filter(|v| v.starts_with("created-by-"))
        .collect();
    assert_eq!((stale, created.len()), (31, 1), "{:?}", outcome.values);
}

/// Child process of `killed_lock_holder_is_taken_over`: takes the creation
/// lock, says so, and creates forever (until the parent kills it).
#[test]
#[ignore = "child process of killed_lock_holder_is_taken_over; started by it"]
fn hold_lock_child() {
    let config =
        std::env::var("TANKARD_HOLD_CONFIG").expect("run by killed_lock_holder_is_taken_over");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cache = CacheManager::new(tankard::Config::from_toml_str(&config).unwrap()).unwrap();
        let value = cache
            .namespace("n")
            .get_or_create("k", || async {
                println!("hold:creating");
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never".to_string()
            })
            .await;
        println!("hold:returned {value:?}");
    });
}

/// A child process that is killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn killed_lock_holder_is_taken_over_after_lock_timeout() {
    let servers = servers();
    let prefix = unique_prefix("killed");
    let dir = tempfile::tempdir().unwrap();
    let config = toml(&prefix, "lock_timeout = \"1s\"");
    let mut holder = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "locks::hold_lock_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TANKARD_HOLD_CONFIG", &config)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(holder.0.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("holder exited before creating")
            .unwrap();
        if line.contains("hold:creating") {
            break;
        }
    }
    assert_eq!(
        find(&servers, &lock_key(&prefix, "n", "k")).len(),
        1,
        "holder has no lock"
    );
    holder.0.kill().unwrap(); // SIGKILL: no release, no renewal
    holder.0.wait().unwrap();
    let killed = std::time::Instant::now();

    let mut stampede = stampede(&prefix, "lock_timeout = \"1s\"", &dir);
    stampede.config_toml = config;
    stampede.processes = 4;
    stampede.tasks_per_process = 2;
    stampede.creator_ms = 100;
    let outcome = run(stampede);
    assert_eq!(outcome.creator_runs, 1, "{:?}", outcome.values);
    assert_eq!(outcome.values.len(), 8);
    let first = &outcome.values[0];
    assert!(first.starts_with("created-by-"), "{first}");
    assert!(
        outcome.values.iter().all(|v| v == first),
        "{:?}",
        outcome.values
    );
    // The dead holder's lock lapsed and the new holder released its own.
    let lock = lock_key(&prefix, "n", "k");
    assert!(find(&servers, &lock).is_empty(), "a lock was left behind");
    eprintln!(
        "memcached lock holder SIGKILLed (lock_timeout 1 s): 4 processes x 2 tasks served {:?} after the kill (creator 100 ms), 1 creator run, no lock left",
        killed.elapsed()
    );
}

/// Polls until the lock of `key` exists and returns its server and token.
async fn wait_for_lock(servers: &[String], prefix: &str, key: &str) -> (String, Vec<u8>) {
    let lock = lock_key(prefix, "n", key);
    for _ in 0..500 {
        if let Some(found) = find(servers, &lock).pop() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("lock {lock} never taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_renewed_while_creating_and_only_its_owner_releases_it() {
    let servers = servers();
    let prefix = unique_prefix("owner");
    let options = [
        ("cache.expire", "300"),
        ("cache.lock_timeout", "1s"),
        ("cache.wait_timeout", "30s"),
    ];
    // Two managers share nothing but the servers, like two processes.
    let first = CacheManager::new(config(&url(), &prefix, &options)).unwrap();
    let second = CacheManager::new(config(&url(), &prefix, &options)).unwrap();
    let (n1, n2) = (first.namespace("n"), second.namespace("n"));

    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let creating = tokio::spawn({
        let n1 = n1.clone();
        async move {
            n1.get_or_create("k", || async move {
                let _ = wait.await;
                "from-first".to_string()
            })
            .await
        }
    });
    let (server, token) = wait_for_lock(&servers, &prefix, "k").await;
    let second_runs = Arc::new(AtomicUsize::new(0));
    let waiting = tokio::spawn({
        let runs = second_runs.clone();
        async move {
            n2.get_or_create("k", || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                "from-second".to_string()
            })
            .await
        }
    });
    // Three lock lifetimes: without renewal the lock would have lapsed and
    // the second manager would have run its creator.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lock = lock_key(&prefix, "n", "k");
    assert_eq!(
        Raw::connect(&server).unwrap().get(&lock),
        Some(token),
        "lock lapsed"
    );
    assert!(!waiting.is_finished());
    go.send(()).unwrap();
    assert_eq!(*creating.await.unwrap().unwrap(), "from-first");
    assert_eq!(*waiting.await.unwrap().unwrap(), "from-first");
    assert_eq!(second_runs.load(Ordering::SeqCst), 0);
    assert!(
        find(&servers, &lock).is_empty(),
        "the owner did not release its lock"
    );

    // The lock changes hands behind the holder's back (as when it expires
    // and another process takes it): the old holder must not release it.
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let creating = tokio::spawn(async move {
        n1.get_or_create("k2", || async move {
            let _ = wait.await;
            "v".to_string()
        })
        .await
    });
    let (server, _) = wait_for_lock(&servers, &prefix, "k2").await;
    let lock = lock_key(&prefix, "n", "k2");
    Raw::connect(&server)
        .unwrap()
        .set(&lock, b"someone-else", 30);
    go.send(()).unwrap();
    assert_eq!(*creating.await.unwrap().unwrap(), "v");
    assert_eq!(
        Raw::connect(&server).unwrap().get(&lock).as_deref(),
        Some(&b"someone-else"[..]),
        "a non-owner released (or renewed over) the lock"
    );
    Raw::connect(&server).unwrap().delete(&lock);
}
