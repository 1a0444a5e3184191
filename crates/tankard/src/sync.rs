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

/// Reads a read-write lock, recovering the data if poisoned (as [`lock`]).
pub(crate) fn read<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes a read-write lock, recovering the data if poisoned (as [`lock`]).
pub(crate) fn write<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
