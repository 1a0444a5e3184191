//! `get_or_create_many`: one creator call for the keys of a batch that
//! are missing, with the dog-pile rules (DESIGN §5) held for each key.
//!
//! A batch must never wait on another caller's creator while it leads keys
//! of its own: two batches sharing keys would each wait for the other. So
//! it goes in two steps. First it claims, without waiting, what it can:
//! the flight, then the cross-process lock, of each key found missing or
//! stale. The creator runs once for the claimed keys, whose values are
//! stored and handed to their waiters. Only then, holding nothing, does
//! the batch wait for the keys that other callers were creating, through
//! the one-key path; a key whose creator there was cancelled (or whose
//! lock wait ran out) is created by itself, in a creator call of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::flight::{Flights, Role};
use super::{
    Call, Failure, Found, Held, Local, Made, Storage, get_or_create, lookup_or_bypass,
    panic_message, run_creator, settle,
};
use crate::error::{Error, Kind, Result};
use crate::stats::Event;
use crate::tags::Tags;

/// What the batch found for one key before its creator runs.
enum Claim<T> {
    /// Answered without creating: fresh, stored by another process while
    /// this batch took the lock, or stale while another caller creates.
    Done(Arc<T>),
    /// This batch creates it.
    Create(Held<T>),
    /// Another caller or process is creating it: waited for once this
    /// batch holds nothing.
    Elsewhere,
}

/// The values of `keys`, in their order: fresh ones as they are, the
/// missing (and stale) ones this call can claim from one call of
/// `creator`, the ones another caller is creating from that caller.
pub(crate) async fn get_or_create_many<T, S, F, Fut>(
    storage: &Arc<S>,
    ns: &Arc<S::Namespace>,
    keys: &[&str],
    expire: Option<Duration>,
    tags: &Tags,
    creator: F,
) -> Result<Vec<Arc<T>>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    S: Storage,
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = Result<Vec<T>>>,
{
    let engine = storage.engine();
    let namespace = S::namespace_name(ns);
    if !engine.enabled {
        return match run_creator(engine, namespace, create(&creator, keys)).await {
            Ok(made) => Ok(made.value.into_iter().map(Arc::new).collect()),
            Err(Failure::Error(err)) => Err(err),
            Err(Failure::Panic(panic)) => std::panic::resume_unwind(panic),
        };
    }
    let calls: Vec<Call<'_, T, S>> = keys
        .iter()
        .map(|key| Call {
            tags: tags.clone(),
            ..Call::new(storage, ns, key, expire)
        })
        .collect();
    let claims = join_all(calls.iter().map(claim)).await;
    let mut values: Vec<Option<Result<Arc<T>>>> = (0..keys.len()).map(|_| None).collect();
    let mut creating = Vec::new();
    let mut elsewhere = Vec::new();
    for (i, claim) in claims.into_iter().enumerate() {
        match claim? {
            Claim::Done(value) => values[i] = Some(Ok(value)),
            Claim::Create(held) => creating.push((i, held)),
            Claim::Elsewhere => elsewhere.push(i),
        }
    }

    // Step one: the keys this batch claimed, from one creator call.
    if !creating.is_empty() {
        let missing: Vec<&str> = creating.iter().map(|(i, _)| keys[*i]).collect();
        let mut panic = None;
        let outcomes: Vec<std::result::Result<Made<T>, Failure>> =
            match run_creator(engine, namespace, create(&creator, &missing)).await {
                Ok(made) => made
                    .value
                    .into_iter()
                    .map(|value| {
                        Ok(Made {
                            value,
                            cost_us: made.cost_us,
                            asked: made.asked.clone(),
                        })
                    })
                    .collect(),
                Err(failure) => {
                    let err = match failure {
                        Failure::Error(err) => err,
                        Failure::Panic(payload) => {
                            let message = panic_message(&*payload);
                            panic = Some(payload);
                            Error::new(Kind::CreatorPanicked { message })
                        }
                    };
                    missing
                        .iter()
                        .map(|_| Err(Failure::Error(err.clone())))
                        .collect()
                }
            };
        let settled = join_all(
            creating
                .into_iter()
                .zip(outcomes)
                .map(|((i, held), outcome)| {
                    let settling = settle(&calls[i], held, outcome);
                    async move { (i, settling.await) }
                }),
        )
        .await;
        for (i, result) in settled {
            values[i] = Some(result);
        }
        // A creator's panic continues in its caller, as on the one-key
        // path, once every claimed key is settled (its waiters have their
        // error) and unless fail-safe values stood in for all of them.
        if let Some(payload) = panic
            && values.iter().flatten().any(Result::is_err)
        {
            std::panic::resume_unwind(payload);
        }
    }

    // Step two: holding nothing, the keys other callers were creating.
    let waited = join_all(elsewhere.into_iter().map(|i| {
        let creator = &creator;
        let key = keys[i];
        let one = Local(move || async move {
            let mut made = create(creator, &[key]).await?;
            made.pop().ok_or_else(|| wrong_count(0, 1))
        });
        let call = Call {
            tags: tags.clone(),
            ..Call::new(storage, ns, key, expire)
        };
        let waiting = get_or_create(call, one);
        async move { (i, waiting.await) }
    }))
    .await;
    for (i, result) in waited {
        values[i] = Some(result);
    }
    values
        .into_iter()
        .map(|value| {
            value.unwrap_or_else(|| unreachable!("every key is answered, created or waited for"))
        })
        .collect()
}

/// Step one for one key: answered, claimed for this batch's creator, or
/// left to the caller that is creating it. Takes nothing it would have to
/// wait for.
async fn claim<T, S>(call: &Call<'_, T, S>) -> Result<Claim<T>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    S: Storage,
{
    let engine = call.engine();
    let lookup = lookup_or_bypass(call).await?;
    let (last, stale) = match lookup.found {
        // An early refresh is the one-key path's: a batch just reads.
        Found::Fresh(value) | Found::Due(value) => {
            engine.count(Event::Hit);
            return Ok(Claim::Done(value));
        }
        Found::Stale(last) => (Some(last), true),
        Found::Expired(last) => (Some(last), false),
        Found::Missing => (None, false),
    };
    // Rule 3: a stale key another caller regenerates is served stale.
    let elsewhere = |last: Option<Arc<T>>| match last {
        Some(last) if stale => call.serve_stale(last).map(Claim::Done),
        _ => Ok(Claim::Elsewhere),
    };
    let Some(lock) = engine.lock.clone() else {
        // `lock = none`: every caller that misses creates.
        engine.count(Event::Miss);
        return Ok(Claim::Create(Held::unlocked(lookup.generations, last)));
    };
    let leader = match Flights::join_or_lead(&engine.flights, &S::flight_key(call.ns, call.key)) {
        Role::Leader(leader) => leader,
        Role::Waiter(_) => return elsewhere(last),
    };
    let guard = match lock.try_acquire(&S::lock_key(call.ns, call.key)).await {
        Ok(Some(guard)) => Some(guard),
        // Another process creates it; the flight is given up, so this
        // process's waiters on it start over and wait for that process.
        Ok(None) => return elsewhere(last),
        Err(err) => {
            engine.backend_failed(&err)?;
            None
        }
    };
    // Rule 4: the lock's last holder may have stored it.
    let lookup = lookup_or_bypass(call).await?;
    if let Found::Fresh(value) = lookup.found {
        leader.complete(Ok(value.clone()));
        if let Some(guard) = guard {
            guard.release().await;
        }
        engine.count(Event::Hit);
        return Ok(Claim::Done(value));
    }
    engine.count(Event::Miss);
    let fallback = match lookup.found {
        Found::Stale(last) | Found::Expired(last) => Some(last),
        _ => last,
    };
    Ok(Claim::Create(Held {
        generations: lookup.generations,
        guard,
        leader: Some(leader),
        fallback,
    }))
}

/// Calls the batch creator for `keys`, holding it to one value a key.
async fn create<T, F, Fut>(creator: &F, keys: &[&str]) -> Result<Vec<T>>
where
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = Result<Vec<T>>>,
{
    let values = creator(keys.iter().map(|key| (*key).to_owned()).collect()).await?;
    if values.len() != keys.len() {
        return Err(wrong_count(values.len(), keys.len()));
    }
    Ok(values)
}

/// A batch creator that returned another number of values than keys.
fn wrong_count(values: usize, keys: usize) -> Error {
    Error::creator_boxed(format!(
        "the batch creator returned {values} values for {keys} keys (one value a key, in their order)"
    ))
}
