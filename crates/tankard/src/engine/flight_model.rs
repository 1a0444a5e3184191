//! Model-checks the single-flight state machine with shuttle: the very
//! same `flight.rs`, compiled against shuttle's `Arc` and `Mutex`, under
//! thousands of random schedules (and PCT, which finds ordering bugs of
//! small depth with high probability). Failing schedules print a seed that
//! `shuttle::replay` reproduces.
//!
//! Run: `cargo test -p tankard --lib --features __shuttle flight_model`.

mod sync {
    pub(crate) use shuttle::sync::{Arc, Mutex, MutexGuard};

    pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// The point: the very same file, against other primitives.
#[path = "flight.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod flight;

use flight::{Flights, Role};
use shuttle::future;
use shuttle::sync::Arc;
use shuttle::sync::atomic::{AtomicUsize, Ordering};

const ITERATIONS: usize = 2_000;

/// What each caller does if it ends up leading.
#[derive(Clone, Copy)]
enum LeaderEnd {
    Complete,
    Fail,
    Cancel,
}

/// `callers` tasks want key 1 at once. A leader that completes publishes
/// its id; a failing leader publishes an error; a cancelled leader
/// vanishes. Checks: at most one leader runs at a time, every waiter gets
/// exactly the outcome of the leader it joined (or takes over after a
/// cancel), nobody hangs (shuttle reports a deadlock otherwise), and the
/// map is empty at the end.
fn scenario(callers: usize, first_leader_end: LeaderEnd) {
    let flights = Arc::new(Flights::<u32, Result<usize, &'static str>>::new());
    let leading = Arc::new(AtomicUsize::new(0));
    let leaders = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..callers)
        .map(|id| {
            let flights = flights.clone();
            let leading = leading.clone();
            let leaders = leaders.clone();
            future::spawn(async move {
                loop {
                    match Flights::join_or_lead(&flights, &1) {
                        Role::Leader(leader) => {
                            assert_eq!(
                                leading.fetch_add(1, Ordering::SeqCst),
                                0,
                                "two leaders at once"
                            );
                            let n = leaders.fetch_add(1, Ordering::SeqCst);
                            shuttle::future::yield_now().await;
                            leading.fetch_sub(1, Ordering::SeqCst);
                            let end = if n == 0 {
                                first_leader_end
                            } else {
                                LeaderEnd::Complete
                            };
                            match end {
                                LeaderEnd::Complete => {
                                    leader.complete(Ok(id));
                                    return Ok(id);
                                }
                                LeaderEnd::Fail => {
                                    leader.complete(Err("creator failed"));
                                    return Err("creator failed");
                                }
                                LeaderEnd::Cancel => {
                                    drop(leader);
                                    return Err("cancelled");
                                }
                            }
                        }
                        Role::Waiter(wait) => match wait.await {
                            Some(outcome) => return outcome,
                            None => continue, // leader cancelled: try again
                        },
                    }
                }
            })
        })
        .collect();
    let outcomes: Vec<_> = handles
        .into_iter()
        .map(|h| future::block_on(h).unwrap_or(Err("caller task panicked")))
        .collect();
    assert_eq!(flights.len(), 0, "a finished flight stayed in the map");
    for outcome in &outcomes {
        match outcome {
            // Whoever got a value got one a leader really published.
            Ok(id) => assert!(matches!(outcomes[*id], Ok(leader) if leader == *id)),
            Err("creator failed") => assert!(matches!(first_leader_end, LeaderEnd::Fail)),
            Err(other) => assert_eq!(*other, "cancelled", "a caller task panicked"),
        }
    }
    let cancelled = outcomes
        .iter()
        .filter(|o| matches!(o, Err("cancelled")))
        .count();
    assert!(cancelled <= 1, "only the first leader cancels");
}

#[test]
fn one_leader_and_waiters_share_its_value() {
    shuttle::check_random(|| scenario(3, LeaderEnd::Complete), ITERATIONS);
    shuttle::check_pct(|| scenario(3, LeaderEnd::Complete), ITERATIONS, 3);
}

#[test]
fn waiters_share_the_creators_error() {
    shuttle::check_random(|| scenario(3, LeaderEnd::Fail), ITERATIONS);
    shuttle::check_pct(|| scenario(3, LeaderEnd::Fail), ITERATIONS, 3);
}

#[test]
fn a_cancelled_leader_is_replaced_by_a_waiter() {
    shuttle::check_random(|| scenario(3, LeaderEnd::Cancel), ITERATIONS);
    shuttle::check_pct(|| scenario(3, LeaderEnd::Cancel), ITERATIONS, 3);
}

/// What a background refresh's task does with the leader it was handed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum TaskEnd {
    /// The creator finished: the value is stored, then published.
    Complete,
    /// The manager was dropped: the task, and the leader in it, dropped.
    Shutdown,
}

/// `refresh = background` (DESIGN §5, rules 3 and 9): `stale` callers find
/// the entry stale; the first to lead hands its leader to a spawned task
/// and returns the stale value, as does every other stale caller, without
/// waiting. One `missing` caller (the entry expired further for it) joins
/// the same flight and waits for the task's outcome, or, if the task is
/// dropped, leads and creates itself. Checks: no caller hangs, at most one
/// creator runs at a time, no stale caller ever waits, the waiter gets a
/// value a creator really stored, and the map ends empty.
fn background_scenario(stale: usize, end: TaskEnd) {
    let flights = Arc::new(Flights::<u32, Result<usize, &'static str>>::new());
    let creating = Arc::new(AtomicUsize::new(0));
    // 0 = only the stale value; otherwise 1 + the id of whoever stored.
    let stored = Arc::new(AtomicUsize::new(0));
    let tasks = Arc::new(shuttle::sync::Mutex::new(Vec::new()));
    let create = {
        let creating = creating.clone();
        let stored = stored.clone();
        move |id: usize| {
            let creating = creating.clone();
            let stored = stored.clone();
            async move {
                assert_eq!(
                    creating.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two creators at once"
                );
                shuttle::future::yield_now().await;
                creating.fetch_sub(1, Ordering::SeqCst);
                stored.store(1 + id, Ordering::SeqCst);
                id
            }
        }
    };
    let stale_callers: Vec<_> = (0..stale)
        .map(|id| {
            let flights = flights.clone();
            let tasks = tasks.clone();
            let create = create.clone();
            future::spawn(async move {
                if let Role::Leader(leader) = Flights::join_or_lead(&flights, &1) {
                    // The leader moves into a task that outlives this caller.
                    let task = future::spawn(async move {
                        shuttle::future::yield_now().await;
                        match end {
                            TaskEnd::Complete => {
                                let value = create(id).await;
                                leader.complete(Ok(value));
                            }
                            TaskEnd::Shutdown => drop(leader),
                        }
                    });
                    tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
                }
                "stale" // at once, leader or not
            })
        })
        .collect();
    let missing = {
        let flights = flights.clone();
        let create = create.clone();
        future::spawn(async move {
            loop {
                match Flights::join_or_lead(&flights, &1) {
                    Role::Leader(leader) => {
                        let value = create(100).await;
                        leader.complete(Ok(value));
                        return value;
                    }
                    Role::Waiter(wait) => match wait.await {
                        Some(Ok(value)) => return value,
                        Some(Err(err)) => panic!("no creator fails here: {err}"),
                        None => continue, // the task was dropped: lead
                    },
                }
            }
        })
    };
    for caller in stale_callers {
        assert_eq!(future::block_on(caller).ok(), Some("stale"));
    }
    let got = future::block_on(missing).unwrap_or(usize::MAX);
    let tasks = std::mem::take(&mut *tasks.lock().unwrap_or_else(|p| p.into_inner()));
    for task in tasks {
        future::block_on(task).unwrap_or(());
    }
    assert_eq!(flights.len(), 0, "a finished flight stayed in the map");
    let stored = stored.load(Ordering::SeqCst);
    assert_ne!(stored, 0, "somebody stored a value");
    if got == 100 {
        assert!(
            stored == 101 || end == TaskEnd::Complete,
            "the waiter created only after no task could"
        );
    } else {
        assert_eq!(
            end,
            TaskEnd::Complete,
            "only a completing task hands out a value"
        );
        assert!(got < stale, "the waiter got a task's value");
    }
}

#[test]
fn a_background_refresh_serves_stale_and_completes_for_waiters() {
    shuttle::check_random(|| background_scenario(2, TaskEnd::Complete), ITERATIONS);
    shuttle::check_pct(|| background_scenario(2, TaskEnd::Complete), ITERATIONS, 3);
}

#[test]
fn a_background_refresh_dropped_at_shutdown_hands_over_to_a_waiter() {
    shuttle::check_random(|| background_scenario(2, TaskEnd::Shutdown), ITERATIONS);
    shuttle::check_pct(|| background_scenario(2, TaskEnd::Shutdown), ITERATIONS, 3);
}
