//! In-process single-flight: for one key, one leader runs the creator and
//! every other caller in this process waits for its outcome instead of
//! polling anything.
//!
//! # States of one flight
//!
//! ```text
//!   lead() ──> Running ──complete(outcome)──> Done(outcome)   waiters get the outcome
//!                 │
//!                 └──leader dropped──────────> Abandoned       waiters retry; one leads
//! ```
//!
//! A flight is in the map exactly while it is `Running`: the leader removes
//! it (only if the map still holds this very flight) before publishing, so
//! a caller arriving after completion starts from a fresh read, never from
//! an old outcome. The model tests (`flight_model.rs`, which compiles
//! this file against shuttle's primitives under the internal feature
//! `__shuttle`) check every interleaving of these steps.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::sync::{Arc, Mutex, lock};

/// Every flight of one region, keyed by whatever identifies an entry.
pub(crate) struct Flights<K, V> {
    running: Mutex<HashMap<K, Arc<Flight<V>>>>,
}

struct Flight<V> {
    state: Mutex<State<V>>,
}

enum State<V> {
    Running(Vec<Waker>),
    Done(V),
    Abandoned,
}

/// What [`Flights::join_or_lead`] made of the caller.
pub(crate) enum Role<K: Hash + Eq + Clone, V: Clone> {
    /// Nobody was creating this key: the caller must create it and then
    /// call [`Leader::complete`].
    Leader(Leader<K, V>),
    /// Another caller is creating it: await this for its outcome.
    Waiter(Wait<V>),
}

/// The right and duty to create one key. Dropping it without completing
/// (the creator was cancelled) wakes the waiters so one of them takes over.
/// It owns its map's handle, so it can move into a task that outlives the
/// caller (a background refresh).
pub(crate) struct Leader<K: Hash + Eq + Clone, V: Clone> {
    flights: Arc<Flights<K, V>>,
    key: K,
    flight: Arc<Flight<V>>,
    finished: bool,
}

/// A waiter's future: `Some(outcome)`, or `None` when the leader was
/// dropped without an outcome.
pub(crate) struct Wait<V> {
    flight: Arc<Flight<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    pub(crate) fn new() -> Self {
        Flights {
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Joins the running flight for `key`, or starts one with the caller
    /// as its leader. (An associated function, not a method: `Arc` is
    /// std's or shuttle's, and only std's can be a receiver.)
    pub(crate) fn join_or_lead(flights: &Arc<Self>, key: &K) -> Role<K, V> {
        let mut running = lock(&flights.running);
        if let Some(flight) = running.get(key) {
            return Role::Waiter(Wait {
                flight: flight.clone(),
            });
        }
        let flight = Arc::new(Flight {
            state: Mutex::new(State::Running(Vec::new())),
        });
        running.insert(key.clone(), flight.clone());
        Role::Leader(Leader {
            flights: flights.clone(),
            key: key.clone(),
            flight,
            finished: false,
        })
    }

    /// How many flights are running (for tests and invariant checks).
    #[cfg(test)]
    #[cfg_attr(feature = "__shuttle", allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        lock(&self.running).len()
    }

    fn finish(&self, key: &K, flight: &Arc<Flight<V>>, end: State<V>) {
        {
            let mut running = lock(&self.running);
            if running.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
                running.remove(key);
            }
        }
        // Wake outside the map lock: woken tasks may call join_or_lead at once.
        let wakers = {
            let mut state = lock(&flight.state);
            match std::mem::replace(&mut *state, end) {
                State::Running(wakers) => wakers,
                _ => Vec::new(),
            }
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Leader<K, V> {
    /// Publishes the outcome to every waiter.
    pub(crate) fn complete(mut self, outcome: V) {
        self.finished = true;
        self.flights
            .finish(&self.key, &self.flight, State::Done(outcome));
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Leader<K, V> {
    fn drop(&mut self) {
        if !self.finished {
            self.flights
                .finish(&self.key, &self.flight, State::Abandoned);
        }
    }
}

impl<V: Clone> Future for Wait<V> {
    type Output = Option<V>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<V>> {
        let mut state = lock(&self.flight.state);
        match &mut *state {
            State::Done(outcome) => Poll::Ready(Some(outcome.clone())),
            State::Abandoned => Poll::Ready(None),
            State::Running(wakers) => {
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl<K, V> std::fmt::Debug for Flights<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(feature = "__shuttle")))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_get_the_leaders_outcome() {
        let flights = Arc::new(Flights::<u32, u64>::new());
        let Role::Leader(leader) = Flights::join_or_lead(&flights, &1) else {
            panic!("first caller leads")
        };
        let Role::Waiter(wait) = Flights::join_or_lead(&flights, &1) else {
            panic!("second caller waits")
        };
        leader.complete(7);
        assert_eq!(wait.await, Some(7));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_waiters_and_the_key() {
        let flights = Arc::new(Flights::<u32, u64>::new());
        let Role::Leader(leader) = Flights::join_or_lead(&flights, &1) else {
            panic!()
        };
        let Role::Waiter(wait) = Flights::join_or_lead(&flights, &1) else {
            panic!()
        };
        drop(leader);
        assert_eq!(wait.await, None);
        assert!(matches!(
            Flights::join_or_lead(&flights, &1),
            Role::Leader(_)
        ));
    }
}
