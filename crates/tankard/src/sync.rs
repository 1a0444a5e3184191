//! Lock helpers shared by the crate.

pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Locks a mutex, recovering the data if a panicking holder poisoned it:
/// every critical section here leaves the state consistent before it can
/// panic, so the data is still good.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
