//! Faults of the file backend (and, through `kill_writers`, of dbm) with
//! real processes: writers SIGKILLed mid-write. The test binary starts
//! copies of itself as writers (the ignored test
//! `file_faults::writer_child`), each writing large values to the same
//! few keys in a loop, and kills them at varying moments while this
//! process reads those keys.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tankard::{CacheManager, Config};

pub(crate) const KEYS: [&str; 3] = ["big-0", "big-1", "big-2"];
pub(crate) const NAMESPACE: &str = "faults";
const MIB: u64 = 1 << 20;

/// A value a writer stores: its text is a block derived from who wrote it
/// and when, repeated to `len` bytes, so a reader can tell a complete,
/// correct value from any mix of two writes or a truncated one.
#[derive(Serialize, Deserialize)]
struct Payload {
    key: String,
    writer: u32,
    seq: u64,
    len: u64,
    text: String,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64: cheap, and every input gives another block.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// 4 KiB of letters that depend on every input.
fn block(key: &str, writer: u32, seq: u64) -> Vec<u8> {
    let mut state = key
        .bytes()
        .fold(u64::from(writer) << 32 ^ seq, |h, b| mix(h ^ u64::from(b)));
    (0..4096)
        .map(|_| {
            state = mix(state);
            b'a' + (state % 26) as u8
        })
        .collect()
}

impl Payload {
    fn new(key: &str, writer: u32, seq: u64) -> Payload {
        // 1 to 4 MiB.
        let len = MIB + mix(seq ^ u64::from(writer)) % (3 * MIB);
        let block = block(key, writer, seq);
        let mut bytes = block.repeat(len as usize / block.len() + 1);
        bytes.truncate(len as usize);
        Payload {
            key: key.to_owned(),
            writer,
            seq,
            len,
            text: String::from_utf8(bytes).expect("letters"),
        }
    }

    /// Whether this is exactly what its writer stored under `key`.
    fn is_whole(&self, key: &str) -> bool {
        let block = block(&self.key, self.writer, self.seq);
        self.key == key
            && self.text.len() as u64 == self.len
            && self
                .text
                .as_bytes()
                .chunks(block.len())
                .all(|chunk| chunk == &block[..chunk.len()])
    }
}

/// The config of the fault tests for a store on `dir` (`file` or `dbm`).
pub(crate) fn config_toml(dir: &Path, kind: &str) -> String {
    format!(
        "[cache]\ntype = {kind:?}\ndata_dir = {:?}\nlock_dir = {:?}\nexpire = 3600\n",
        dir.join("data").display().to_string(),
        dir.join("lock").display().to_string(),
    )
}

pub(crate) fn manager(config_toml: &str) -> CacheManager {
    CacheManager::new(Config::from_toml_str(config_toml).unwrap()).unwrap()
}

/// A writer's side: say ready, then write the keys in turn until killed.
#[test]
#[ignore = "child process of the file fault tests; started by them"]
fn writer_child() {
    let config = std::env::var("TANKARD_FAULT_CONFIG").expect("run only by the fault test");
    let writer: u32 = std::env::var("TANKARD_FAULT_WRITER")
        .expect("writer id")
        .parse()
        .expect("writer id");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ns = manager(&config).namespace(NAMESPACE);
        println!("writer:ready");
        for seq in 0.. {
            let key = KEYS[seq as usize % KEYS.len()];
            if let Err(err) = ns.put(key, Payload::new(key, writer, seq)).await {
                eprintln!("writer {writer}: {err}");
            }
        }
    });
}

fn spawn_writer(config_toml: &str, writer: u32) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "file_faults::writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TANKARD_FAULT_CONFIG", config_toml)
        .env("TANKARD_FAULT_WRITER", writer.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // libtest prints "test file_faults::writer_child ... " on the same line.
    assert!(
        lines.any(|line| line.unwrap().contains("writer:ready")),
        "writer {writer} exited before ready"
    );
    child
}

/// Every temporary file under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for item in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = item.path();
            if path.is_dir() {
                stack.push(path);
            } else if item.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(path);
            }
        }
    }
    out
}

/// What a reader saw.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    pub(crate) whole: u64,
    pub(crate) misses: u64,
    pub(crate) corrupt: u64,
    pub(crate) errors: u64,
    /// Entries that did not decode (a torn write would show here).
    pub(crate) decode_errors: u64,
    /// The slowest read.
    pub(crate) worst: Duration,
}

pub(crate) async fn read_all(ns: &tankard::Cache, reads: &mut Reads) {
    for key in KEYS {
        let started = Instant::now();
        let got = ns.get::<Payload>(key).await;
        reads.worst = reads.worst.max(started.elapsed());
        match got {
            Ok(Some(value)) if value.is_whole(key) => reads.whole += 1,
            Ok(Some(_)) => reads.corrupt += 1,
            Ok(None) => reads.misses += 1,
            Err(_) => reads.errors += 1,
        }
    }
}

/// Issue 11's fault suite, file part: 40 writers (or
/// `TANKARD_FILE_FAULT_KILLS`, for a longer run) SIGKILLed at varying
/// moments while writing 1 to 4 MiB values to three keys (two writers
/// at a time, racing on the same keys), with a reader in this process.
/// Every read is a complete, correct value or a miss, never a corrupt
/// value or an error; the temporary files the kills leave are counted by
/// `usage`, kept by `gc` while young, and all removed by `gc` once old.
#[test]
fn writers_killed_mid_write_leave_no_corrupt_value_and_gc_removes_their_temp_files() {
    let kills: u32 = std::env::var("TANKARD_FILE_FAULT_KILLS").map_or(40, |n| {
        n.parse().expect("TANKARD_FILE_FAULT_KILLS: a number")
    });
    let dir = tempfile::tempdir().unwrap();
    let config = config_toml(dir.path(), "file");
    let (during, chaos) = kill_writers(&config, kills);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cache = manager(&config);
    let ns = cache.namespace(NAMESPACE);
    let mut after = Reads::default();
    runtime.block_on(read_all(&ns, &mut after));
    after.decode_errors = cache.default_region().stats().decode_errors;

    let data = dir.path().join("data");
    let left = temp_files(&data);
    let region = cache.default_region();
    let usage = runtime.block_on(region.usage()).unwrap();
    let young = runtime.block_on(region.purge_expired()).unwrap();
    let aged = SystemTime::now() - Duration::from_secs(11 * 60);
    for path in &left {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_modified(aged).unwrap();
    }
    let purged = runtime.block_on(region.purge_expired()).unwrap();
    let remaining = temp_files(&data);
    eprintln!(
        "file writers SIGKILLed: {kills} kills in {chaos:?}; reads during: {during:?}; \
         after: {after:?}; temp files left {} ({} bytes), after gc {}",
        left.len(),
        usage.temp_bytes.unwrap_or_default(),
        remaining.len()
    );

    assert_eq!(during.corrupt + after.corrupt, 0, "never a corrupt value");
    assert_eq!(during.errors + after.errors, 0, "never a failed read");
    assert_eq!(
        during.decode_errors + after.decode_errors,
        0,
        "never a torn entry"
    );
    assert!(during.whole > 0, "the reader saw values: {during:?}");
    assert_eq!(
        usage.temp_files,
        Some(left.len() as u64),
        "stats counts them"
    );
    assert_eq!(young.temp_files, 0, "young temp files may be live writers'");
    assert_eq!(purged.temp_files, left.len() as u64);
    assert_eq!(purged.temp_bytes, usage.temp_bytes.unwrap_or_default());
    assert!(remaining.is_empty(), "gc left {remaining:?}");
    // What the last writers stored is still served, whole.
    let mut last = Reads::default();
    runtime.block_on(read_all(&ns, &mut last));
    assert_eq!((last.whole + last.misses, last.corrupt), (3, 0));
}

/// Starts writers of 1 to 4 MiB values to three keys under `config`,
/// two at a time racing on the same keys, and SIGKILLs `kills` of them
/// at varying moments, while a reader in this process reads those keys.
/// What the reader saw, and how long it took.
pub(crate) fn kill_writers(config: &str, kills: u32) -> (Reads, Duration) {
    let started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (config, stop) = (config.to_owned(), stop.clone());
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let cache = manager(&config);
                let ns = cache.namespace(NAMESPACE);
                let mut reads = Reads::default();
                while !stop.load(Ordering::Relaxed) {
                    read_all(&ns, &mut reads).await;
                }
                reads.decode_errors = cache.default_region().stats().decode_errors;
                reads
            })
        }
    });

    let mut alive = vec![spawn_writer(config, 0)];
    for kill in 1..=kills {
        alive.push(spawn_writer(config, kill));
        // Kill the older writer somewhere in its loop: before, during or
        // after a write, at a moment that differs from kill to kill.
        std::thread::sleep(Duration::from_millis(mix(u64::from(kill)) % 80));
        let mut victim = alive.remove(0);
        victim.kill().unwrap(); // SIGKILL
        victim.wait().unwrap();
    }
    for mut writer in alive {
        writer.kill().unwrap();
        writer.wait().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    (reader.join().unwrap(), started.elapsed())
}
