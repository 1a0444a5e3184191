//! Shared helpers: managers, a log capture (tests/support/logs.rs), a file
//! lock holder.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use tankard::{CacheManager, Config};

/// A manager whose default region is memory.
pub fn memory() -> CacheManager {
    CacheManager::new(Config::memory()).unwrap()
}

/// The seed post's regions: `long_term` on files, `short_term` in memory.
pub fn seed(dir: &Path) -> CacheManager {
    CacheManager::new(seed_config(dir, &[])).unwrap()
}

pub fn seed_config(dir: &Path, extra: &[(&str, &str)]) -> Config {
    let data = dir.join("data");
    let lock = dir.join("lock");
    let mut pairs = vec![
        ("cache.type".to_owned(), "file".to_owned()),
        ("cache.data_dir".to_owned(), data.display().to_string()),
        ("cache.lock_dir".to_owned(), lock.display().to_string()),
        (
            "cache.regions".to_owned(),
            "short_term, long_term".to_owned(),
        ),
        ("cache.short_term.type".to_owned(), "memory".to_owned()),
        ("cache.short_term.expire".to_owned(), "1200".to_owned()),
        ("cache.long_term.type".to_owned(), "file".to_owned()),
        ("cache.long_term.expire".to_owned(), "86400".to_owned()),
    ];
    for (k, v) in extra {
        pairs.push(((*k).to_owned(), (*v).to_owned()));
    }
    Config::from_flat(pairs).unwrap()
}

/// A temporary directory that lives for the whole test process (the
/// managers in statics point into it).
pub fn static_dir() -> &'static Path {
    static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().unwrap());
    DIR.path()
}

/// The process-wide manager behind `tankard::global()`: memory default
/// region plus the seed's regions, `short_term` in memory and `long_term`
/// on files.
pub fn install_global() -> &'static CacheManager {
    static ONCE: LazyLock<()> = LazyLock::new(|| {
        let dir = static_dir().join("global");
        let config = seed_config(&dir, &[("cache.type", "memory")]);
        let manager = CacheManager::new(config).unwrap();
        let _ = tankard::install(manager);
    });
    LazyLock::force(&ONCE);
    tankard::global().unwrap()
}

/// Holds every creation-lock stripe of a file lock directory, so the next
/// creator in this process waits in `acquire` (the blocking `flock` on the
/// runtime's blocking pool) until `release`.
pub struct StripeHolder {
    files: Vec<std::fs::File>,
}

impl StripeHolder {
    pub fn hold(lock_dir: &Path) -> StripeHolder {
        std::fs::create_dir_all(lock_dir).unwrap();
        let files = (0..64)
            .map(|i| {
                let path: PathBuf = lock_dir.join(format!("stripe-{i:03}.lock"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(path)
                    .unwrap();
                file.lock().unwrap();
                file
            })
            .collect();
        StripeHolder { files }
    }

    pub fn release(self) {
        drop(self.files);
    }
}

#[path = "../support/logs.rs"]
mod logs;
pub use logs::Logs;

/// Polls `done` until it holds, failing after ten seconds: for what a
/// background task does after the call that started it has returned.
pub async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Runs this binary's test `name` (its path without the crate, as
/// `--exact` wants it) alone in a child process, for what needs a process
/// of its own: no manager installed, a process-wide switch. Returns `true`
/// in the parent, after checking that the child ran that one test and
/// passed; `false` in the child, which then does the work.
pub fn run_in_child(name: &str) -> bool {
    const VAR: &str = "TANKARD_TEST_CHILD";
    if std::env::var(VAR).as_deref() == Ok(name) {
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new(exe)
        .args([name, "--exact", "--test-threads=1"])
        .env(VAR, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child process running {name} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    true
}
