//! Multi-process stampedes with real processes: the test binary re-executes
//! itself as children (the ignored test `stampede_child`), which start
//! together on a signal, call `get_or_create` on one key from several
//! tasks each, and report every value they got. The creator appends one
//! line to a shared file per run, so the parent counts creator runs
//! exactly, whatever process ran them.
//!
//! Use from a test binary's `main.rs`:
//!
//! ```ignore
//! #[path = "../support/stampede.rs"]
//! mod stampede;
//! stampede::child_entry!();
//! ```

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Declares the child's entry point in the test binary that uses this module.
#[macro_export]
macro_rules! child_entry {
    () => {
        /// Entry point of the child processes of `stampede::Stampede`: run by
        /// the parent with `--ignored --exact stampede_child`, never alone.
        #[test]
        #[ignore = "child process of the multi-process tests; started by them"]
        fn stampede_child() {
            stampede::run_child();
        }
    };
}
pub use child_entry;

/// One multi-process stampede on one key.
#[derive(Clone, Debug)]
pub struct Stampede {
    /// The configuration every process loads (TOML text).
    pub config_toml: String,
    /// The region to use; `None` for the default region.
    pub region: Option<String>,
    pub namespace: String,
    pub key: String,
    pub processes: usize,
    pub tasks_per_process: usize,
    /// How long the creator works before returning its value.
    pub creator_ms: u64,
    /// Where the creator appends one line per run.
    pub counter_file: PathBuf,
    /// Whether each child, once its callers have their values, stays until
    /// it reads a created value under the key (a refresh that runs in a
    /// task, such as an early refresh, finishes before the child exits).
    pub until_renewed: bool,
}

/// What every caller got.
#[derive(Debug)]
pub struct Outcome {
    /// Lines in the counter file: how many times any creator ran.
    pub creator_runs: usize,
    /// Every caller's returned value, or `error: …`.
    pub values: Vec<String>,
    /// From the start signal to the last child's exit.
    pub wall: Duration,
}

impl Stampede {
    /// Starts the children, releases them together, waits for all.
    pub fn run(&self) -> Outcome {
        let mut children: Vec<Child> = (0..self.processes)
            .map(|_| self.spawn_child(self.tasks_per_process))
            .collect();
        // Each child says "ready" once its manager is built; then all go at once.
        let mut readers: Vec<_> = children
            .iter_mut()
            .map(|c| BufReader::new(c.stdout.take().expect("child stdout")))
            .collect();
        for reader in &mut readers {
            let mut line = String::new();
            loop {
                line.clear();
                assert!(
                    reader.read_line(&mut line).expect("read child") > 0,
                    "child exited before ready"
                );
                // libtest prints "test stampede_child ... " on the same line.
                if line.contains("stampede:ready") {
                    break;
                }
            }
        }
        let start = Instant::now();
        for child in &mut children {
            let stdin = child.stdin.as_mut().expect("child stdin");
            stdin.write_all(b"go\n").expect("signal child");
            stdin.flush().expect("signal child");
        }
        let mut values = Vec::new();
        for (mut child, reader) in children.into_iter().zip(readers) {
            for line in reader.lines() {
                let line = line.expect("read child");
                if let Some(at) = line.find("stampede:value=") {
                    values.push(line[at + "stampede:value=".len()..].to_owned());
                }
            }
            let status = child.wait().expect("wait child");
            assert!(status.success(), "child failed: {status}");
        }
        let wall = start.elapsed();
        let creator_runs = std::fs::read_to_string(&self.counter_file)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        Outcome {
            creator_runs,
            values,
            wall,
        }
    }
}

impl Stampede {
    /// Spawns one child with `tasks` tasks; it says "ready" and waits for
    /// "go" on its stdin.
    fn spawn_child(&self, tasks: usize) -> Child {
        let exe = std::env::current_exe().expect("test binary path");
        Command::new(exe)
            .args([
                "--ignored",
                "--exact",
                "stampede_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TANKARD_STAMPEDE_CONFIG", &self.config_toml)
            .env(
                "TANKARD_STAMPEDE_REGION",
                self.region.clone().unwrap_or_default(),
            )
            .env("TANKARD_STAMPEDE_NAMESPACE", &self.namespace)
            .env("TANKARD_STAMPEDE_KEY", &self.key)
            .env("TANKARD_STAMPEDE_TASKS", tasks.to_string())
            .env("TANKARD_STAMPEDE_CREATOR_MS", self.creator_ms.to_string())
            .env("TANKARD_STAMPEDE_COUNTER", &self.counter_file)
            .env(
                "TANKARD_STAMPEDE_UNTIL_RENEWED",
                if self.until_renewed { "1" } else { "" },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child")
    }

    /// Starts one child with one task and lets it go at once (a holder to
    /// kill, say); its values are not collected.
    pub fn start_one(&self) -> Child {
        let mut child = self.spawn_child(1);
        let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        let mut line = String::new();
        while !line.trim_end().ends_with("stampede:ready") {
            line.clear();
            assert!(
                stdout.read_line(&mut line).expect("read child") > 0,
                "child exited before ready"
            );
        }
        let stdin = child.stdin.as_mut().expect("child stdin");
        stdin.write_all(b"go\n").expect("signal child");
        stdin.flush().expect("signal child");
        child
    }
}

/// The child's side: build the manager, say ready, wait for "go", run the
/// tasks, print their values.
pub fn run_child() {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} not set: run only by Stampede::run"))
    };
    let config = tankard::Config::from_toml_str(&var("TANKARD_STAMPEDE_CONFIG")).expect("config");
    let region = var("TANKARD_STAMPEDE_REGION");
    let namespace = var("TANKARD_STAMPEDE_NAMESPACE");
    let key = var("TANKARD_STAMPEDE_KEY");
    let tasks: usize = var("TANKARD_STAMPEDE_TASKS").parse().expect("tasks");
    let creator_ms: u64 = var("TANKARD_STAMPEDE_CREATOR_MS")
        .parse()
        .expect("creator ms");
    let counter = PathBuf::from(var("TANKARD_STAMPEDE_COUNTER"));
    let until_renewed = std::env::var("TANKARD_STAMPEDE_UNTIL_RENEWED").is_ok_and(|v| v == "1");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let manager = tankard::CacheManager::new(config).expect("manager");
        let cache = if region.is_empty() {
            manager.namespace(&namespace)
        } else {
            manager
                .region(&region)
                .expect("region")
                .namespace(&namespace)
        };
        println!("stampede:ready");
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).expect("wait for go");
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let cache = cache.clone();
                let key = key.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    // An owned creator: one that a refresh task can run.
                    cache
                        .get_or_spawn(&key, move || async move {
                            let line = format!("{}\n", std::process::id());
                            let mut file = std::fs::OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(&counter)
                                .expect("counter file");
                            file.write_all(line.as_bytes()).expect("count creator run");
                            tokio::time::sleep(Duration::from_millis(creator_ms)).await;
                            format!("created-by-{}", std::process::id())
                        })
                        .await
                })
            })
            .collect();
        for handle in handles {
            match handle.await.expect("task") {
                Ok(value) => println!("stampede:value={value}"),
                Err(err) => println!("stampede:value=error: {err}"),
            }
        }
        if until_renewed {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let seen = cache.get::<String>(&key).await.expect("read");
                if seen.is_some_and(|v| v.starts_with("created-by-")) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
}
