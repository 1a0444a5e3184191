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
