//! Shared helpers: managers, a log capture, a file lock holder.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

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

/// Captured tracing events (level and message), for the current thread.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl Logs {
    pub fn errors(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(level, _)| *level == tracing::Level::ERROR)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Runs `f` with this capture as the thread's subscriber.
    pub fn capture<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::subscriber::with_default(self.clone(), f)
    }
}

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl tracing::Subscriber for Logs {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), message));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
