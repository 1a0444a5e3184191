//! The dog-pile engine (DESIGN §5): the single-flight map, the creation
//! lock and the algorithm that combines them with a lookup, in the caller
//! or, for `refresh = background`, in a task of its own (rule 9). It is
//! generic over the storage it protects ([`seam`]): it never sees a region.

mod batch;
mod context;
mod creator;
#[cfg(all(test, feature = "__shuttle"))]
mod engine_model;
pub(crate) mod flight;
#[cfg(all(test, feature = "__shuttle"))]
mod flight_model;
mod seam;
mod shutdown;

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use tracing::field::Empty;

use crate::entry::Generations;
use crate::error::{Error, Kind, Result};
use crate::options::Refresh;
// `flight` takes its primitives from here, so the model test can swap them.
use crate::backend::lock::{self, LockGuard};
use crate::stats::Event;
use crate::sync;
use crate::tags::Tags;
pub(crate) use batch::get_or_create_many;
pub use context::CreatorContext;
#[cfg(feature = "axum")]
pub(crate) use creator::Both;
pub(crate) use creator::{Creator, Local, Owned};
use flight::{Flights, Role};
pub(crate) use seam::{Engine, FlightKey, Found, Lookup, Outcome, Storage};
pub(crate) use shutdown::{Shutdown, ShutdownTrigger};

/// What a creator fails with when it ran and made nothing to store: an
/// `Option` function's `None`, a page the page layer may not keep. It is
/// handed to waiters like any creator error, but counted as a creator
/// call only, not as a creator error: nothing went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Declined(pub(crate) &'static str);

/// How a creator run ended, short of success.
enum Failure {
    /// The creator returned an error (already wrapped as a creator error).
    Error(Error),
    /// The creator panicked; the payload is re-raised in the leader's caller.
    Panic(Box<dyn Any + Send>),
}

/// Runs a creator, counting and timing it, inside a `tankard.create` span
/// (the creator's own spans are its children), and catching a panic so
/// the flight can be resolved before the panic continues. A value comes
/// with what it took to make, in microseconds by the region's clock
/// (XFetch's δ).
async fn run_creator<T, Fut>(
    engine: &Engine,
    namespace: &str,
    creator: Fut,
) -> Result<Made<T>, Failure>
where
    Fut: Future<Output = Result<T>>,
{
    engine.count(Event::CreatorCall);
    let span = tracing::debug_span!(
        "tankard.create",
        region = %engine.name,
        namespace,
        outcome = Empty,
    );
    let started = Instant::now();
    let started_us = engine.clock().stopwatch_us();
    let (ran, asked) = context::with_context(AssertUnwindSafe(creator).catch_unwind())
        .instrument(span.clone())
        .await;
    engine.figures.creator_ran(started.elapsed());
    let (outcome, result) = match ran {
        Ok(Ok(value)) => {
            let took_us = engine.clock().stopwatch_us().saturating_sub(started_us);
            let made = Made {
                value,
                cost_us: u32::try_from(took_us).unwrap_or(u32::MAX),
                asked,
            };
            ("ok", Ok(made))
        }
        Ok(Err(err)) => {
            let outcome = if err.creator_error::<Declined>().is_none() {
                engine.count(Event::CreatorError);
                "error"
            } else {
                "declined"
            };
            (outcome, Err(Failure::Error(err)))
        }
        Err(panic) => {
            engine.count(Event::CreatorError);
            ("panic", Err(Failure::Panic(panic)))
        }
    };
    span.record("outcome", outcome);
    result
}

/// A value a creator made: what it took to make (XFetch's δ, in
/// microseconds) and what the creator asked of its entry.
struct Made<T> {
    value: T,
    cost_us: u32,
    asked: context::Asked,
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// Reads the call's key, bypassing the backend (and counting) if it fails.
async fn lookup_or_bypass<T, S: Storage>(call: &Call<'_, T, S>) -> Result<Lookup<T>>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    if let Some(place) = call.place {
        return Ok(place.lookup());
    }
    match call.storage.lookup::<T>(call.ns, call.key).await {
        Ok(lookup) => Ok(lookup),
        Err(err) => {
            call.engine().backend_failed(&err)?;
            Ok(Lookup {
                found: Found::Missing,
                generations: None,
            })
        }
    }
}

/// Stores a value for the call: in its place, or in the storage. A failed
/// store is the backend's failure (bypassed or returned), never the value's.
async fn store_value<T, S: Storage>(
    call: &Call<'_, T, S>,
    value: &Arc<T>,
    expire: Option<Duration>,
    cost_us: u32,
    generations: Option<Generations>,
    tags: &Tags,
) -> Result<()>
where
    T: Serialize + Send + Sync + 'static,
{
    let stored = match call.place {
        Some(place) => {
            place.store(value, expire, cost_us, generations, tags);
            Ok(())
        }
        None => {
            call.storage
                .store(call.ns, call.key, value, expire, cost_us, generations, tags)
                .await
        }
    };
    stored.or_else(|err| call.engine().backend_failed(&err))
}

/// What a caller holds for a key between deciding to create it and its
/// creator's end, and what the creation step settles: the generations to
/// stamp the entry with, the cross-process lock, this process's flight,
/// and the last good value (a stale or expired entry) to fall back on.
struct Held<T> {
    generations: Option<Generations>,
    guard: Option<LockGuard>,
    leader: Option<flight::Leader<FlightKey, Outcome>>,
    fallback: Option<Arc<T>>,
}

impl<T> Held<T> {
    /// Nothing held but what a lookup gave: a caller with no lock.
    fn unlocked(generations: Option<Generations>, fallback: Option<Arc<T>>) -> Held<T> {
        Held {
            generations,
            guard: None,
            leader: None,
            fallback,
        }
    }
}

/// The creation step shared by every path: run the creator, store its
/// value, release the cross-process lock, and hand the outcome to this
/// process's waiters (if this caller leads a flight). With `fail_safe`, a
/// creator that fails or panics while a last good value is at hand
/// (`fallback`: a stale or expired entry) hands out that value instead,
/// stored again as fresh for `fail_safe_throttle` so the creator is not
/// retried on every call (rule 5).
async fn create_and_store<T, S: Storage, Fut>(
    call: &Call<'_, T, S>,
    held: Held<T>,
    creator: Fut,
) -> Result<Arc<T>>
where
    T: Serialize + Send + Sync + 'static,
    Fut: Future<Output = Result<T>>,
{
    let outcome = run_creator(call.engine(), S::namespace_name(call.ns), creator).await;
    settle(call, held, outcome).await
}

/// The second half of [`create_and_store`], for a creator that has run
/// (one run may make the values of several keys, see [`batch`]): stores
/// the value, or with `fail_safe` the last good one in place of a
/// failure; releases the lock; hands the outcome to this process's
/// waiters; and continues a creator's panic in its caller.
async fn settle<T, S: Storage>(
    call: &Call<'_, T, S>,
    held: Held<T>,
    outcome: Result<Made<T>, Failure>,
) -> Result<Arc<T>>
where
    T: Serialize + Send + Sync + 'static,
{
    let Held {
        generations,
        guard,
        leader,
        fallback,
    } = held;
    let engine = call.engine();
    // A creator that declined (nothing to store) did not fail.
    let declined =
        matches!(&outcome, Err(Failure::Error(err)) if err.creator_error::<Declined>().is_some());
    let fail_safe = engine
        .fail_safe_throttle
        .zip(fallback)
        .filter(|_| !declined);
    let result = match (outcome, fail_safe) {
        (Ok(made), _) if made.asked.skip_store => Ok(Arc::new(made.value)),
        (Ok(made), _) => {
            let value = Arc::new(made.value);
            let expire = made.asked.expire.unwrap_or(call.expire);
            // A bad tag the creator asked for fails the call: nothing is
            // stored under tags it did not mean.
            match made.asked.tags(&call.tags) {
                Ok(tags) => store_value(call, &value, expire, made.cost_us, generations, &tags)
                    .await
                    .map(|()| value),
                Err(err) => Err(err),
            }
        }
        (Err(failure), Some((throttle, fallback))) => {
            let why = match &failure {
                Failure::Error(err) => err.to_string(),
                Failure::Panic(panic) => format!("panicked: {}", panic_message(&**panic)),
            };
            tracing::warn!(
                region = %engine.name,
                key = %call.key,
                "creator failed; serving the last good value (fail_safe) for {throttle:?}: {why}",
            );
            let stored =
                store_value(call, &fallback, Some(throttle), 0, generations, &call.tags).await;
            // Counted once the throttle is stored: whoever sees the count
            // (a test, a dashboard) then finds the value fresh, not a
            // stale one that would start another refresh.
            engine.count(Event::FailSafeServed);
            stored.map(|()| fallback)
        }
        (Err(Failure::Error(err)), None) => Err(err),
        (Err(Failure::Panic(panic)), None) => {
            let err = Error::new(Kind::CreatorPanicked {
                message: panic_message(&*panic),
            });
            if let Some(leader) = leader {
                leader.complete(Err(err.clone()));
            }
            if let Some(guard) = guard {
                guard.release().await;
            }
            if call.detached {
                // Nobody to hand the panic to: it is counted, and logged.
                return Err(err);
            }
            std::panic::resume_unwind(panic);
        }
    };
    if let Some(leader) = leader {
        leader.complete(
            result
                .as_ref()
                .map(|v| v.clone() as Arc<dyn Any + Send + Sync>)
                .map_err(Clone::clone),
        );
    }
    if let Some(guard) = guard {
        guard.release().await;
    }
    result
}

/// [`create_and_store`] for a caller, bounded by the region's timeouts:
/// with a last good value at hand (`fallback`), the caller waits at most
/// `soft_timeout` and then gets it (counted as a stale value served); no
/// caller waits past `hard_timeout` (then the fail-safe value, or a
/// timeout error). A creator that can be owned goes on in a task and
/// stores its value; a borrowing one is dropped at the limit, which
/// releases its lock and lets a waiter take over.
async fn create<T, S, C>(call: &Call<'_, T, S>, held: Held<T>, creator: C) -> Result<Arc<T>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    S: Storage,
    C: Creator<T>,
{
    let engine = call.engine();
    let soft = engine.soft_timeout.filter(|_| held.fallback.is_some());
    let Some(limit) = soft.or(engine.hard_timeout) else {
        return create_and_store(call, held, creator.create()).await;
    };
    let fallback = held.fallback.clone();
    let spawnable = match spawn_target(call) {
        Some(target) => creator.spawnable().map(|task| (target, task)),
        None => Err(creator),
    };
    let outcome = match spawnable {
        Ok(((runtime, place), task)) => {
            let finish = finish_in_background(call, runtime, place, held, task);
            match tokio::time::timeout(limit, finish).await {
                Ok(Ok(Some(result))) => return result,
                // The manager was dropped under the task, or the runtime
                // stopped it (the creator's own panics are caught): no value.
                Ok(_) => return Err(Error::new(Kind::ShutDown)),
                Err(_) => Err(limit),
            }
        }
        Err(creator) => bounded(call, held, creator, limit).await,
    };
    match outcome {
        Ok(result) => result,
        Err(after) => timed_out(call, soft.is_some(), after, fallback),
    }
}

/// A creator that cannot be owned, run in the caller up to `limit`.
async fn bounded<T, S, C>(
    call: &Call<'_, T, S>,
    held: Held<T>,
    creator: C,
    limit: Duration,
) -> std::result::Result<Result<Arc<T>>, Duration>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    S: Storage,
    C: Creator<T>,
{
    let creation = create_and_store(call, held, creator.create());
    tokio::time::timeout(limit, creation)
        .await
        .map_err(|_| limit)
}

/// What a caller gets when its creator ran past a limit: the stale value
/// at `soft_timeout`; at `hard_timeout` the `fail_safe` value, or an error.
fn timed_out<T, S: Storage>(
    call: &Call<'_, T, S>,
    soft: bool,
    after: Duration,
    fallback: Option<Arc<T>>,
) -> Result<Arc<T>> {
    let engine = call.engine();
    match fallback {
        Some(value) if soft => call.serve_stale(value),
        Some(value) if engine.fail_safe_throttle.is_some() => {
            engine.count(Event::FailSafeServed);
            Ok(value)
        }
        _ => Err(Error::new(Kind::CreatorTimeout { after })),
    }
}

/// Runs [`create_and_store`] in a task that owns what it needs, so that
/// it finishes (stores, releases the lock, answers the waiters) whether or
/// not its caller still waits; stops when the manager is dropped.
fn finish_in_background<T, S: Storage>(
    call: &Call<'_, T, S>,
    runtime: tokio::runtime::Handle,
    place: OwnedPlace<T>,
    held: Held<T>,
    task: Task<T>,
) -> tokio::task::JoinHandle<Option<Result<Arc<T>>>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let storage = call.storage.clone();
    let ns = call.ns.clone();
    let key: Box<str> = call.key.into();
    let expire = call.expire;
    let tags = call.tags.clone();
    let shutdown = storage.engine().shutdown.clone();
    runtime.spawn(async move {
        let call = Call {
            place: place.as_deref().map(|place| place as &dyn Place<T>),
            detached: true,
            tags,
            ..Call::new(&storage, &ns, &key, expire)
        };
        let work = create_and_store(&call, held, task);
        tokio::select! {
            result = work => Some(result),
            () = shutdown.fired() => None,
        }
    })
}

/// One `get_or_create` call: where, and how long what it stores lives.
pub(crate) struct Call<'a, T, S: Storage> {
    pub(crate) storage: &'a Arc<S>,
    pub(crate) ns: &'a Arc<S::Namespace>,
    pub(crate) key: &'a str,
    pub(crate) expire: Option<Duration>,
    /// The tags of what it stores, besides those its creator adds.
    pub(crate) tags: Tags,
    /// Where the entry lives if not in the region's store.
    pub(crate) place: Option<&'a dyn Place<T>>,
    /// Set when the call is answered with a stale value (the page layer
    /// labels such a page `STALE`).
    pub(crate) served_stale: Option<&'a AtomicBool>,
    /// Whether this call runs in a task of its own, with no caller to
    /// re-raise a creator's panic in.
    pub(crate) detached: bool,
}

impl<'a, T, S: Storage> Call<'a, T, S> {
    /// A call on the storage's own entries.
    pub(crate) fn new(
        storage: &'a Arc<S>,
        ns: &'a Arc<S::Namespace>,
        key: &'a str,
        expire: Option<Duration>,
    ) -> Call<'a, T, S> {
        Call {
            storage,
            ns,
            key,
            expire,
            tags: None,
            place: None,
            served_stale: None,
            detached: false,
        }
    }

    fn engine(&self) -> &'a Engine {
        self.storage.engine()
    }

    /// Answers with a stale value while another caller or process
    /// regenerates it.
    fn serve_stale(&self, stale: Arc<T>) -> Result<Arc<T>> {
        self.engine().count(Event::StaleServed);
        if let Some(served_stale) = self.served_stale {
            served_stale.store(true, Ordering::Relaxed);
        }
        Ok(stale)
    }
}

/// Where a call's entry lives when it is not in the region's own store: a
/// cached function's typed map on a memory region. Never fails.
pub(crate) trait Place<T>: Sync {
    /// Reads the entry.
    fn lookup(&self) -> Lookup<T>;
    /// Stores a value created now, stamped with `generations` (read before
    /// the creator ran) when given, carrying `tags`.
    fn store(
        &self,
        value: &Arc<T>,
        expire: Option<Duration>,
        cost_us: u32,
        generations: Option<Generations>,
        tags: &Tags,
    );
    /// The same place, owned, for a task that regenerates the entry after
    /// its caller has gone (`refresh = background`); `None` if it cannot
    /// be owned, and then the caller regenerates. Called only on that path.
    fn detach(&self) -> Option<Box<dyn Place<T> + Send>>;
}

/// What a miss came to, short of an error.
enum Missed<T, C> {
    /// The value, and how it came (the `outcome` of the `tankard.miss` span).
    Value(Arc<T>, &'static str),
    /// The creator this caller waited for was cancelled: start over.
    Retry(C),
}

/// DESIGN §5: returns the fresh value, or the stale one while another
/// caller regenerates, or the value of exactly one creator run across
/// every caller and process sharing the backend.
pub(crate) async fn get_or_create<T, S, C>(call: Call<'_, T, S>, mut creator: C) -> Result<Arc<T>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    S: Storage,
    C: Creator<T>,
{
    let Call { ns, key, .. } = call;
    let call = &call;
    let engine = call.engine();
    if !engine.enabled {
        return create_and_store_nothing(engine, S::namespace_name(ns), creator.create()).await;
    }
    let mut counted_miss = false;
    loop {
        let lookup = lookup_or_bypass(call).await?;
        let Some(lock) = engine.lock.clone() else {
            // `lock = none`: every caller that misses creates.
            return match lookup.found {
                // No single-flight, so no early refresh either.
                Found::Fresh(value) | Found::Due(value) => {
                    engine.count(Event::Hit);
                    Ok(value)
                }
                Found::Stale(last) | Found::Expired(last) => {
                    engine.count(Event::Miss);
                    create(
                        call,
                        Held::unlocked(lookup.generations, Some(last)),
                        creator,
                    )
                    .await
                }
                Found::Missing => {
                    engine.count(Event::Miss);
                    create(call, Held::unlocked(lookup.generations, None), creator).await
                }
            };
        };
        match lookup.found {
            Found::Fresh(value) => {
                engine.count(Event::Hit);
                return Ok(value);
            }
            Found::Due(value) => {
                engine.count(Event::Hit);
                // `early_refresh`: this caller gets the current value, and
                // one task renews it; a caller that finds the refresh under
                // way, or has a creator that cannot be spawned, just reads.
                if let Role::Leader(leader) =
                    Flights::join_or_lead(&engine.flights, &S::flight_key(ns, key))
                    && let Some((runtime, place)) = spawn_target(call)
                    && let Ok(task) = creator.spawnable()
                {
                    refresh_in_background(call, runtime, place, leader, task, value.clone());
                }
                return Ok(value);
            }
            Found::Stale(stale) => {
                // Built only past a fresh hit: it allocates.
                let Role::Leader(leader) =
                    Flights::join_or_lead(&engine.flights, &S::flight_key(ns, key))
                else {
                    return call.serve_stale(stale);
                };
                // Rule 3 with `background`: this caller too gets the stale
                // value; a task takes the lock and creates. The runtime and
                // an owned place come first: a creator is made spawnable
                // only when it will be spawned, so its task may wait on
                // this caller (the page layer hands its request over once
                // the call has returned).
                let creator = match background(call) {
                    Some((runtime, place)) => match creator.spawnable() {
                        Ok(task) => {
                            refresh_in_background(
                                call,
                                runtime,
                                place,
                                leader,
                                task,
                                stale.clone(),
                            );
                            return call.serve_stale(stale);
                        }
                        Err(creator) => creator,
                    },
                    None => creator,
                };
                return regenerate(call, leader, &*lock, stale, creator).await;
            }
            found @ (Found::Expired(_) | Found::Missing) => {
                // An expired entry kept by `fail_safe` is a miss whose value
                // stands in if the creator fails.
                let fallback = match found {
                    Found::Expired(last) => Some(last),
                    _ => None,
                };
                if !counted_miss {
                    engine.count(Event::Miss);
                    counted_miss = true;
                }
                let span = tracing::debug_span!(
                    "tankard.miss",
                    region = %engine.name,
                    namespace = %S::namespace_name(ns),
                    outcome = Empty,
                );
                let missed = miss(call, &*lock, creator, fallback)
                    .instrument(span.clone())
                    .await;
                match missed {
                    Ok(Missed::Value(value, outcome)) => {
                        span.record("outcome", outcome);
                        return Ok(value);
                    }
                    Ok(Missed::Retry(back)) => {
                        span.record("outcome", "retried");
                        creator = back;
                    }
                    Err(err) => {
                        span.record("outcome", "error");
                        return Err(err);
                    }
                }
            }
        }
    }
}

/// Rules 2, 4 and 6 for a key found missing: wait for this process's
/// creator of it, or lead its flight, take the cross-process lock
/// (waiting for another process's creator), re-read, and create.
async fn miss<T, S, C>(
    call: &Call<'_, T, S>,
    lock: &dyn lock::CreationLock,
    creator: C,
    fallback: Option<Arc<T>>,
) -> Result<Missed<T, C>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    S: Storage,
    C: Creator<T>,
{
    let engine = call.engine();
    let namespace = S::namespace_name(call.ns);
    let leader = match Flights::join_or_lead(&engine.flights, &S::flight_key(call.ns, call.key)) {
        Role::Leader(leader) => leader,
        Role::Waiter(wait) => {
            engine.count(Event::LockWait);
            let span = lock_wait_span(engine, namespace, "flight");
            let wait = wait.instrument(span.clone());
            let handed = match engine.hard_timeout {
                Some(limit) => match tokio::time::timeout(limit, wait).await {
                    Ok(handed) => handed,
                    Err(_) => {
                        span.record("outcome", "timed_out");
                        return timed_out(call, false, limit, fallback)
                            .map(|value| Missed::Value(value, "timed_out"));
                    }
                },
                None => wait.await,
            };
            span.record(
                "outcome",
                match &handed {
                    Some(Ok(_)) => "handed",
                    Some(Err(_)) => "error",
                    None => "abandoned",
                },
            );
            return match handed {
                Some(Ok(value)) => match value.downcast::<T>() {
                    Ok(value) => Ok(Missed::Value(value, "waited")),
                    // Another call site stored another type under this
                    // key: make our own, store nothing.
                    Err(_) => create_and_store_nothing(engine, namespace, creator.create())
                        .await
                        .map(|value| Missed::Value(value, "created")),
                },
                Some(Err(err)) => Err(err),
                // The leader was cancelled: start over, one of us leads.
                None => Ok(Missed::Retry(creator)),
            };
        }
    };
    let lock_key = S::lock_key(call.ns, call.key);
    let guard = match lock.try_acquire(&lock_key).await {
        Ok(Some(guard)) => Some(guard),
        Ok(None) => {
            engine.count(Event::LockWait);
            let span = lock_wait_span(engine, namespace, "lock");
            let acquired = lock
                .acquire(&lock_key, engine.wait_timeout)
                .instrument(span.clone())
                .await;
            match acquired {
                Ok(guard) => {
                    // None: waited too long, create anyway (rule 6).
                    span.record(
                        "outcome",
                        if guard.is_some() {
                            "acquired"
                        } else {
                            "timed_out"
                        },
                    );
                    guard
                }
                Err(err) => {
                    span.record("outcome", "error");
                    engine.backend_failed(&err)?;
                    None
                }
            }
        }
        Err(err) => {
            engine.backend_failed(&err)?;
            None
        }
    };
    // Rule 4: the holder we waited for has probably stored it.
    let lookup = lookup_or_bypass(call).await?;
    if let Found::Fresh(value) = lookup.found {
        leader.complete(Ok(value.clone()));
        if let Some(guard) = guard {
            guard.release().await;
        }
        return Ok(Missed::Value(value, "found"));
    }
    // The re-read may have found a newer expired entry to fall back on.
    let fallback = match lookup.found {
        Found::Stale(last) | Found::Expired(last) => Some(last),
        _ => fallback,
    };
    let held = Held {
        generations: lookup.generations,
        guard,
        leader: Some(leader),
        fallback,
    };
    create(call, held, creator)
        .await
        .map(|value| Missed::Value(value, "created"))
}

/// The span of a caller waiting for another's creator: `on` a flight in
/// this process, or on the cross-process `lock`.
fn lock_wait_span(engine: &Engine, namespace: &str, on: &'static str) -> tracing::Span {
    tracing::debug_span!(
        "tankard.lock_wait",
        region = %engine.name,
        namespace,
        on,
        outcome = Empty,
    )
}

/// Rule 3 for the caller that leads a stale key's flight: take the
/// cross-process lock (or serve the stale value while another process
/// holds it), re-read (rule 4), and regenerate.
async fn regenerate<T, S, C>(
    call: &Call<'_, T, S>,
    leader: flight::Leader<FlightKey, Outcome>,
    lock: &dyn lock::CreationLock,
    stale: Arc<T>,
    creator: C,
) -> Result<Arc<T>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    S: Storage,
    C: Creator<T>,
{
    let engine = call.engine();
    let lock_key = S::lock_key(call.ns, call.key);
    let guard = match lock.try_acquire(&lock_key).await {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            // Another process is regenerating it.
            return call.serve_stale(stale);
        }
        Err(err) => {
            engine.backend_failed(&err)?;
            return call.serve_stale(stale);
        }
    };
    // Rule 4: someone may have stored a fresh value meanwhile.
    let lookup = lookup_or_bypass(call).await?;
    if let Found::Fresh(value) = lookup.found {
        leader.complete(Ok(value.clone()));
        guard.release().await;
        engine.count(Event::Hit);
        return Ok(value);
    }
    // This caller waits for the creator: no cached answer, a miss.
    engine.count(Event::Miss);
    let held = Held {
        generations: lookup.generations,
        guard: Some(guard),
        leader: Some(leader),
        fallback: Some(stale),
    };
    create(call, held, creator).await
}

/// A boxed creator that can run in a task of its own.
type Task<T> = futures_util::future::BoxFuture<'static, Result<T>>;

/// A place a task can own: `None` for the region's own store.
type OwnedPlace<T> = Option<Box<dyn Place<T> + Send>>;

/// Whether a stale key's regeneration can go to a task: the region says
/// `refresh = background`, there is a runtime to spawn on, and the entry's
/// place (if any) can be owned by the task.
fn background<T, S: Storage>(
    call: &Call<'_, T, S>,
) -> Option<(tokio::runtime::Handle, OwnedPlace<T>)> {
    if call.engine().refresh != Refresh::Background {
        return None;
    }
    spawn_target(call)
}

/// Where a call's regeneration can be spawned: a runtime, and the entry's
/// place (if any) owned; `None` when either is missing.
fn spawn_target<T, S: Storage>(
    call: &Call<'_, T, S>,
) -> Option<(tokio::runtime::Handle, OwnedPlace<T>)> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let place = match call.place {
        None => None,
        Some(place) => Some(place.detach()?),
    };
    Some((runtime, place))
}

/// Spawns the regeneration of a stale key (rule 9): the task owns the
/// storage, namespace, place and flight handles, takes the lock,
/// re-reads, creates and stores; it stops when the manager is dropped.
fn refresh_in_background<T, S: Storage>(
    call: &Call<'_, T, S>,
    runtime: tokio::runtime::Handle,
    place: OwnedPlace<T>,
    leader: flight::Leader<FlightKey, Outcome>,
    task: Task<T>,
    stale: Arc<T>,
) where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let storage = call.storage.clone();
    let ns = call.ns.clone();
    let key: Box<str> = call.key.into();
    let expire = call.expire;
    let tags = call.tags.clone();
    let shutdown = storage.engine().shutdown.clone();
    // Its own trace: the task outlives the call that started it, which
    // it follows from.
    let span = tracing::debug_span!(
        parent: None,
        "tankard.refresh",
        region = %storage.engine().name,
        namespace = %S::namespace_name(&ns),
        outcome = Empty,
    );
    span.follows_from(tracing::Span::current());
    let task_span = span.clone();
    let task = async move {
        let work = async {
            let Some(lock) = storage.engine().lock.clone() else {
                return "unlocked";
            };
            let call = Call {
                place: place.as_deref().map(|place| place as &dyn Place<T>),
                detached: true,
                tags,
                ..Call::new(&storage, &ns, &key, expire)
            };
            match background_regenerate(&call, leader, &*lock, task, stale).await {
                Ok(outcome) => outcome,
                // Nothing went wrong: there was nothing to store.
                Err(err) if err.creator_error::<Declined>().is_some() => "declined",
                Err(err) => {
                    tracing::warn!(
                        region = %storage.engine().name,
                        namespace = %S::namespace_name(&ns),
                        key = %key,
                        "background refresh failed; the stale value stays: {err}",
                    );
                    "error"
                }
            }
        };
        let outcome = tokio::select! {
            outcome = work => outcome,
            () = shutdown.fired() => "shutdown",
        };
        task_span.record("outcome", outcome);
    };
    runtime.spawn(task.instrument(span));
}

/// [`regenerate`] for a task with no caller: the same steps, with nothing
/// to serve. Says what came of it (the `tankard.refresh` span's outcome).
async fn background_regenerate<T, S: Storage>(
    call: &Call<'_, T, S>,
    leader: flight::Leader<FlightKey, Outcome>,
    lock: &dyn lock::CreationLock,
    task: Task<T>,
    stale: Arc<T>,
) -> Result<&'static str>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let engine = call.engine();
    let lock_key = S::lock_key(call.ns, call.key);
    let guard = match lock.try_acquire(&lock_key).await {
        Ok(Some(guard)) => guard,
        // Another process is regenerating it.
        Ok(None) => return Ok("locked_elsewhere"),
        Err(err) => {
            engine.backend_failed_quietly(&err);
            return Ok("lock_failed");
        }
    };
    let lookup = lookup_or_bypass(call).await?;
    if let Found::Fresh(value) = lookup.found {
        leader.complete(Ok(value));
        guard.release().await;
        return Ok("found");
    }
    let held = Held {
        generations: lookup.generations,
        guard: Some(guard),
        leader: Some(leader),
        fallback: Some(stale),
    };
    create_and_store(call, held, task)
        .await
        .map(|_| "refreshed")
}

/// Runs the creator and stores nothing (`enabled = false`, or a type
/// clash with another call site).
async fn create_and_store_nothing<T, Fut>(
    engine: &Engine,
    namespace: &str,
    creator: Fut,
) -> Result<Arc<T>>
where
    Fut: Future<Output = Result<T>>,
{
    match run_creator(engine, namespace, creator).await {
        Ok(made) => Ok(Arc::new(made.value)),
        Err(Failure::Error(err)) => Err(err),
        Err(Failure::Panic(panic)) => std::panic::resume_unwind(panic),
    }
}
