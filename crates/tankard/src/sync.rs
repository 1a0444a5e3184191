//! The synchronization primitives the dog-pile engine is built on, swapped
//! for shuttle's under `--cfg tankard_shuttle` so the model checker controls
//! every interleaving (the way quick_cache's `shim` module does it).

#[cfg(not(tankard_shuttle))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(tankard_shuttle)]
pub(crate) use shuttle::sync::{Arc, Mutex, MutexGuard};

/// Locks a mutex, recovering the data if a panicking holder poisoned it:
/// every critical section here leaves the state consistent before it can
/// panic, so the data is still good.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
