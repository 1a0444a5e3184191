//! Model-checks the engine itself with shuttle: the real
//! `engine::get_or_create`, its single-flight, its lock step, its re-read
//! and its completion, over a storage that yields at every read and write
//! (so shuttle interleaves callers there) and keeps entries in a map.
//! `flight_model.rs` checks the single-flight map alone, against shuttle's
//! own mutex; this one checks that the engine drives it right: one creator
//! for a missing key, waiters handed its value or its error, nothing left
//! running, whatever the schedule.
//!
//! Run: `cargo test -p tankard --lib --features __shuttle engine_model`.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shuttle::future;
use shuttle::sync::atomic::{AtomicUsize, Ordering};

use super::{Call, Engine, FlightKey, Found, Local, Lookup, Shutdown, Storage, get_or_create};
use crate::backend::lock::LocalOnly;
use crate::clock::Clock;
use crate::entry::Generations;
use crate::error::{Error, Result};
use crate::options::RegionOptions;

const ITERATIONS: usize = 1_000;

/// Entries in a map; every read and write yields first, where a real
/// store would wait for a disk or a server.
struct Model {
    engine: Engine,
    entries: Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>,
}

impl Storage for Model {
    type Namespace = ();

    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn flight_key(_ns: &(), key: &str) -> FlightKey {
        (0, Box::from(key))
    }

    fn lock_key(_ns: &(), key: &str) -> String {
        key.to_owned()
    }

    fn namespace_name(_ns: &()) -> &str {
        "model"
    }

    async fn lookup<T>(&self, _ns: &(), key: &str) -> Result<Lookup<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        future::yield_now().await;
        let found = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        let found = match found.map(|value| value.downcast::<T>()) {
            Some(Ok(value)) => Found::Fresh(value),
            _ => Found::Missing,
        };
        Ok(Lookup {
            found,
            generations: Some(Generations::default()),
        })
    }

    async fn store<T>(
        &self,
        _ns: &(),
        key: &str,
        value: &Arc<T>,
        _expire: Option<Duration>,
        _cost_us: u32,
        _generations: Option<Generations>,
        _tags: &crate::tags::Tags,
    ) -> Result<()>
    where
        T: Serialize + Send + Sync + 'static,
    {
        let value = value.clone() as Arc<dyn Any + Send + Sync>;
        future::yield_now().await;
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), value);
        Ok(())
    }
}

fn model() -> Arc<Model> {
    let options = RegionOptions::defaults("model");
    // The trigger is dropped: nothing here runs in the background.
    let (_trigger, shutdown) = Shutdown::new();
    Arc::new(Model {
        engine: Engine::new(
            &options,
            "model",
            Some(Arc::new(LocalOnly)),
            Clock::manual(0),
            shutdown,
        ),
        entries: Mutex::new(HashMap::new()),
    })
}

/// `callers` tasks want one missing key at once. The first creator run
/// fails when `first_fails`; every later one succeeds with its caller's id.
/// Checks: creator runs never overlap; when the first succeeds it is the
/// only run and everyone gets its value; when it fails, its waiters get
/// its error and at most one more run happens, whose value the rest get;
/// no flight is left in the map.
fn scenario(callers: usize, first_fails: bool) {
    let storage = model();
    let ns = Arc::new(());
    let runs = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..callers)
        .map(|id| {
            let (storage, ns, runs, running) =
                (storage.clone(), ns.clone(), runs.clone(), running.clone());
            future::spawn(async move {
                let creator = || async move {
                    assert_eq!(
                        running.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two creators at once"
                    );
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    future::yield_now().await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    if first_fails && run == 0 {
                        Err(Error::creator_boxed("first run fails"))
                    } else {
                        Ok(id)
                    }
                };
                let call = Call::new(&storage, &ns, "k", None);
                get_or_create(call, Local(creator))
                    .await
                    .map(|value| *value)
                    .map_err(|err| err.to_string())
            })
        })
        .collect();
    let outcomes: Vec<_> = handles
        .into_iter()
        .map(|handle| future::block_on(handle).unwrap_or_else(|_| Err("panicked".into())))
        .collect();
    assert_eq!(
        storage.engine.flights.len(),
        0,
        "a flight stayed in the map"
    );
    let runs = runs.load(Ordering::SeqCst);
    let values: Vec<usize> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().copied())
        .collect();
    if first_fails {
        assert!((1..=2).contains(&runs), "{runs} creator runs");
        for outcome in &outcomes {
            if let Err(err) = outcome {
                assert!(err.contains("first run fails"), "{err}");
            }
        }
    } else {
        assert_eq!(runs, 1, "one creator for a missing key");
        assert_eq!(values.len(), callers, "{outcomes:?}");
    }
    // Whoever got a value got the one value that was stored.
    assert!(values.windows(2).all(|w| w[0] == w[1]), "{outcomes:?}");
}

/// Runs `f` under shuttle's random and PCT schedulers. The real
/// `get_or_create`, with its spans and its creator run inside them, needs
/// more stack in a debug build than shuttle's default 60 KiB.
fn check(f: impl Fn() + Send + Sync + 'static + Clone) {
    let config = || {
        let mut config = shuttle::Config::new();
        config.stack_size = 0x10_0000;
        config
    };
    let random = shuttle::scheduler::RandomScheduler::new(ITERATIONS);
    shuttle::Runner::new(random, config()).run(f.clone());
    let pct = shuttle::scheduler::PctScheduler::new(3, ITERATIONS);
    shuttle::Runner::new(pct, config()).run(f);
}

#[test]
fn one_creator_and_its_value_for_every_caller() {
    check(|| scenario(3, false));
}

#[test]
fn a_failed_creator_s_waiters_share_its_error_and_one_retry_follows() {
    check(|| scenario(3, true));
}
