//! A database restarted under load, or hung: calls bypass it while it is
//! down (the creator's value, never an error), and caching resumes when it
//! is back, without rebuilding the manager. The servers are the shared
//! ones, stopped and started through `scripts/services` (or stopped with
//! SIGSTOP), so these tests hold [`SERVERS`] alone.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Engine, SERVERS, manager, toml, unique};

mod restarted_under_load {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_database_restarted_under_load_is_bypassed_then_used_again(
            crate::common::Engine::Postgres,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql() {
        super::a_database_restarted_under_load_is_bypassed_then_used_again(
            crate::common::Engine::MySql,
        )
        .await
    }
}

/// `scripts/services <action> <service>`, failing the test if it fails.
async fn services(action: &'static str, service: &'static str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services");
    let status = tokio::task::spawn_blocking(move || {
        Command::new(script)
            .args([action, service])
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        status.success(),
        "scripts/services {action} {service}: {status}"
    );
}

async fn a_database_restarted_under_load_is_bypassed_then_used_again(engine: Engine) {
    let _alone = SERVERS.write().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(&toml(
        engine,
        &dir,
        &unique("restart"),
        "timeout = \"500ms\"\nretry_after = \"200ms\"",
    ));
    let ns = cache.namespace("n");
    let region = cache.default_region();
    ns.put("warm", "v".to_string()).await.unwrap();

    // Load: four tasks reading and creating keys until told to stop;
    // every call must return the value, cached or bypassed.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|task| {
            let (ns, stop, calls) = (ns.clone(), stop.clone(), calls.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k{task}-{}", i % 16);
                    let want = format!("value of {key}");
                    let got = ns
                        .get_or_create(&key, || std::future::ready(want.clone()))
                        .await
                        .expect("bypassed, never an error");
                    assert_eq!(*got, want);
                    calls.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();

    services("stop", engine.service()).await;
    // Calls go on while it is down, bypassing it.
    let (errors, before) = (region.stats().backend_errors, calls.load(Ordering::Relaxed));
    let deadline = Instant::now() + Duration::from_secs(20);
    while region.stats().backend_errors == errors || calls.load(Ordering::Relaxed) < before + 20 {
        assert!(
            Instant::now() < deadline,
            "no call went on while it was down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    services("start", engine.service()).await;

    // Caching resumes: a value put is read back from the database.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = ns.put("back", "again".to_string()).await;
        let read = ns.get::<String>("back").await;
        if put.is_ok() && matches!(read, Ok(Some(v)) if *v == "again") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache was not used again after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hits = region.stats().hits;
    let deadline = Instant::now() + Duration::from_secs(30);
    while region.stats().hits < hits + 20 {
        assert!(
            Instant::now() < deadline,
            "the load never hit the database again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
}

/// Sends `signal` to the shared MariaDB server (one process, so a
/// stopped one answers nothing on any connection).
fn signal_mariadb(signal: &str) {
    let dir = std::env::var("TANKARD_SERVICES_DIR").unwrap_or("/tmp/tankard-services".to_owned());
    let pid = std::fs::read_to_string(format!("{dir}/mariadb/mariadb.pid")).unwrap();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), pid.trim()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Resumes the server however the test ends.
struct Resume;

impl Drop for Resume {
    fn drop(&mut self) {
        signal_mariadb("CONT");
    }
}

/// A stopped server keeps its sockets open and answers nothing: the call's
/// first operation gives up after `timeout`, the breaker skips the rest
/// (the creation lock included), and the call bypasses. Once the server
/// resumes, the key is created as usual by another manager: nothing the
/// hung call began (its timed-out statement's connection is closed, not
/// pooled) stands in its way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_cannot_hang_a_call_nor_keep_a_lock() {
    let _alone = SERVERS.write().await;
    let dir = tempfile::tempdir().unwrap();
    let config = toml(
        Engine::MySql,
        &dir,
        &unique("hung"),
        "timeout = \"300ms\"\nretry_after = \"100ms\"\nwait_timeout = \"30s\"",
    );
    let cache = manager(&config);
    let ns = cache.namespace("n");
    ns.put("k", "cached".to_string()).await.unwrap();

    let resume = Resume;
    signal_mariadb("STOP");
    let runs = Arc::new(AtomicUsize::new(0));
    let call = ns.get_or_create("cold", {
        let runs = runs.clone();
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            std::future::ready("made while it hung".to_string())
        }
    });
    let value = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("a call hung on a stopped database")
        .unwrap();
    assert_eq!(*value, "made while it hung");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(cache.default_region().stats().backend_errors >= 1);
    drop(resume);

    // Back: caching resumes, and the cold key is created at once (a lock
    // left held would make the call wait `wait_timeout`, 30 s, and the
    // deadline below fail the test first).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let put = ns.put("back", "again".to_string()).await;
        let read = ns.get::<String>("back").await;
        if put.is_ok() && matches!(read, Ok(Some(v)) if *v == "again") {
            break;
        }
        assert!(Instant::now() < deadline, "the cache was not used again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = manager(&config);
    let made = tokio::time::timeout(
        Duration::from_secs(20),
        other
            .namespace("n")
            .get_or_create("cold", || std::future::ready("after".to_string())),
    )
    .await
    .expect("the cold key's lock was left behind");
    assert_eq!(*made.unwrap(), "after");
}
