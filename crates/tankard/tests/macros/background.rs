//! `refresh = background` through the attribute: an `async fn` that owns
//! its arguments and whose body is `Send` returns a stale result at once,
//! to the call that finds it stale too, while its body runs again in a
//! task; every other function regenerates in the caller. On a file region
//! (through the namespace's text keys) and a memory region (through the
//! function's typed map).

use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tankard::{CacheManager, Clock, Config};
use tokio::sync::oneshot;

use crate::support::{self, eventually};

fn runs(counter: &AtomicU32) -> u32 {
    counter.load(Ordering::SeqCst)
}

/// Fresh for 10 s, then served stale for a minute while a task refreshes.
fn background(clock: &Clock, store: &[(&str, String)]) -> CacheManager {
    let mut flat: Vec<(String, String)> = vec![
        ("cache.expire".into(), "10".into()),
        ("cache.stale".into(), "60".into()),
        ("cache.refresh".into(), "background".into()),
    ];
    flat.extend(store.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    CacheManager::with_clock(Config::from_flat(flat).unwrap(), clock.clone()).unwrap()
}

fn on_files(clock: &Clock, name: &str) -> CacheManager {
    let dir = support::static_dir().join(name);
    background(
        clock,
        &[
            ("cache.type", "file".into()),
            ("cache.data_dir", dir.join("data").display().to_string()),
            ("cache.lock_dir", dir.join("lock").display().to_string()),
        ],
    )
}

fn in_memory(clock: &Clock) -> CacheManager {
    background(clock, &[("cache.type", "memory".into())])
}

/// A body's gate: when one is set, the next run waits until it opens.
struct Gate(Mutex<Option<oneshot::Receiver<()>>>);

impl Gate {
    const fn new() -> Gate {
        Gate(Mutex::new(None))
    }

    /// Sets the gate; the returned sender opens it.
    fn close(&self) -> oneshot::Sender<()> {
        let (open, gate) = oneshot::channel();
        *self.0.lock().unwrap() = Some(gate);
        open
    }

    /// Waits at the gate, if one is set. The lock is let go before the
    /// wait, so the body's future stays `Send`.
    async fn pass(&self) {
        let gate = self.0.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.await;
        }
    }
}

static FILE_CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::manual(1_000_000));
static ON_FILES: LazyLock<CacheManager> = LazyLock::new(|| on_files(&FILE_CLOCK, "background"));
static FILE_RUNS: AtomicU32 = AtomicU32::new(0);
static FILE_GATE: Gate = Gate::new();

/// A `mut` argument is the body's own: the wrapper only moves it on.
#[tankard::cached(manager = ON_FILES)]
async fn on_file(mut n: u32) -> u32 {
    n *= 100;
    let run = FILE_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    FILE_GATE.pass().await;
    n + run
}

static MEMORY_CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::manual(1_000_000));
static IN_MEMORY: LazyLock<CacheManager> = LazyLock::new(|| in_memory(&MEMORY_CLOCK));
static MEMORY_RUNS: AtomicU32 = AtomicU32::new(0);
static MEMORY_GATE: Gate = Gate::new();

#[tankard::cached(manager = IN_MEMORY)]
async fn in_memory_fn(n: u32, label: String) -> String {
    let run = MEMORY_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    MEMORY_GATE.pass().await;
    format!("{label} {n} #{run}")
}

#[tokio::test]
async fn on_files_a_stale_result_is_returned_at_once_while_the_body_reruns_in_a_task() {
    assert_eq!(on_file(1).await, 101);
    FILE_CLOCK.advance(Duration::from_secs(11));
    let open = FILE_GATE.close();
    // The call that finds the result stale returns it, and the body's
    // second run starts in a task, where it waits at the gate.
    assert_eq!(on_file(1).await, 101);
    eventually("the body runs again", async || runs(&FILE_RUNS) == 2).await;
    assert_eq!(on_file(1).await, 101, "still stale while the body waits");
    open.send(()).unwrap();
    eventually("the new result is stored", async || {
        on_file_peek(1).await.unwrap() == Some(102)
    })
    .await;
    assert_eq!(on_file(1).await, 102);
    assert_eq!(runs(&FILE_RUNS), 2, "the body ran once for the refresh");
    let stats = ON_FILES.default_region().stats();
    assert_eq!((stats.stale_served, stats.creator_calls), (2, 2));
}

#[tokio::test]
async fn in_memory_a_stale_result_is_returned_at_once_while_the_body_reruns_in_a_task() {
    let label = || "user".to_owned();
    assert_eq!(in_memory_fn(7, label()).await, "user 7 #1");
    MEMORY_CLOCK.advance(Duration::from_secs(11));
    let open = MEMORY_GATE.close();
    assert_eq!(in_memory_fn(7, label()).await, "user 7 #1");
    eventually("the body runs again", async || runs(&MEMORY_RUNS) == 2).await;
    assert_eq!(
        in_memory_fn(7, label()).await,
        "user 7 #1",
        "still stale while the body waits"
    );
    open.send(()).unwrap();
    eventually("the new result is stored", async || {
        in_memory_fn_peek(7, label()).await.unwrap().as_deref() == Some("user 7 #2")
    })
    .await;
    assert_eq!(in_memory_fn(7, label()).await, "user 7 #2");
    assert_eq!(runs(&MEMORY_RUNS), 2, "the body ran once for the refresh");
    let stats = IN_MEMORY.default_region().stats();
    assert_eq!((stats.stale_served, stats.creator_calls), (2, 2));
}

static FAILING_CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::manual(1_000_000));
static FAILING: LazyLock<CacheManager> = LazyLock::new(|| in_memory(&FAILING_CLOCK));
static FAILING_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = FAILING)]
async fn fails_after_the_first(n: u32) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    if FAILING_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Ok(n);
    }
    Err("down".into())
}

#[tokio::test]
async fn a_body_that_fails_in_its_task_keeps_the_stale_result() {
    assert_eq!(fails_after_the_first(3).await.unwrap(), 3);
    FAILING_CLOCK.advance(Duration::from_secs(11));
    assert_eq!(fails_after_the_first(3).await.unwrap(), 3);
    let region = FAILING.default_region().clone();
    eventually("the failure is counted", async || {
        region.stats().creator_errors == 1
    })
    .await;
    assert_eq!(fails_after_the_first_peek(3).await.unwrap(), None);
    assert_eq!(
        fails_after_the_first(3).await.unwrap(),
        3,
        "the stale result stays"
    );
}

static CALLER_CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::manual(1_000_000));
static CALLER: LazyLock<CacheManager> = LazyLock::new(|| in_memory(&CALLER_CLOCK));
static NOT_SEND_RUNS: AtomicU32 = AtomicU32::new(0);
static BORROWED_RUNS: AtomicU32 = AtomicU32::new(0);

/// Holds an `Rc` across an await: its future is not `Send`, so it cannot
/// run in a task, and still compiles.
#[tankard::cached(manager = CALLER)]
async fn not_send(n: u32) -> u32 {
    let shared = Rc::new(n);
    tokio::task::yield_now().await;
    *shared * 100 + NOT_SEND_RUNS.fetch_add(1, Ordering::SeqCst) + 1
}

/// Borrows its argument: its body cannot outlive the call.
#[tankard::cached(manager = CALLER)]
async fn borrowed(name: &str) -> String {
    let run = BORROWED_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    format!("{name} #{run}")
}

#[tokio::test]
async fn a_body_that_cannot_be_spawned_regenerates_in_the_caller() {
    assert_eq!(not_send(1).await, 101);
    assert_eq!(borrowed("fred").await, "fred #1");
    CALLER_CLOCK.advance(Duration::from_secs(11));
    assert_eq!(not_send(1).await, 102, "the caller ran the body");
    assert_eq!(borrowed("fred").await, "fred #2", "the caller ran the body");
    assert_eq!(CALLER.default_region().stats().stale_served, 0);
}
