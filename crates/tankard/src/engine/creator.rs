//! What the engine runs on a miss: a creator, in its caller or, when it
//! can outlive the caller, in a task of its own.
//!
//! A creator that borrows from its caller can only run while the caller
//! waits ([`Local`]). One that owns what it needs (`Send + 'static`, the
//! bounds of `tokio::spawn`) can also be handed to a task ([`Owned`]),
//! which is what `refresh = background` needs: the caller gets the stale
//! value at once and the task regenerates it.

use std::future::Future;

use futures_util::future::BoxFuture;

use crate::error::Result;

/// A creator of one value.
pub(crate) trait Creator<T>: Sized {
    /// The creator's future, to run in the caller.
    type Future: Future<Output = Result<T>>;

    /// Starts the creator in the caller.
    fn create(self) -> Self::Future;

    /// The creator as a task that can outlive its caller, or the creator
    /// back when it borrows from the caller. Called only when the task will
    /// be spawned (a runtime is there), never to run it in the caller: a
    /// task may wait on something its caller hands over after the call
    /// returns.
    fn spawnable(self) -> std::result::Result<BoxFuture<'static, Result<T>>, Self>;
}

/// A creator that may borrow from its caller: it runs in the caller only.
pub(crate) struct Local<F>(pub(crate) F);

impl<T, F, Fut> Creator<T> for Local<F>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    type Future = Fut;

    fn create(self) -> Fut {
        (self.0)()
    }

    fn spawnable(self) -> std::result::Result<BoxFuture<'static, Result<T>>, Self> {
        Err(self)
    }
}

/// A creator that owns what it needs: it may run in a task.
pub(crate) struct Owned<F>(pub(crate) F);

impl<T, F, Fut> Creator<T> for Owned<F>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    type Future = Fut;

    fn create(self) -> Fut {
        (self.0)()
    }

    fn spawnable(self) -> std::result::Result<BoxFuture<'static, Result<T>>, Self> {
        Ok(Box::pin((self.0)()))
    }
}

/// A creator with both forms: `local`, which may borrow from the caller,
/// and, when there is one, `owned`, which makes a task that owns what it
/// needs. The page layer uses it: the caller keeps its borrowing creator
/// for a miss, where it waits anyway and wants the response it made, and
/// a stale page can still be regenerated in a task.
#[cfg(feature = "axum")]
pub(crate) struct Both<L, O> {
    pub(crate) local: L,
    pub(crate) owned: Option<O>,
}

#[cfg(feature = "axum")]
impl<T, L, LFut, O> Creator<T> for Both<L, O>
where
    L: FnOnce() -> LFut,
    LFut: Future<Output = Result<T>>,
    O: FnOnce() -> BoxFuture<'static, Result<T>>,
{
    type Future = LFut;

    fn create(self) -> LFut {
        (self.local)()
    }

    fn spawnable(self) -> std::result::Result<BoxFuture<'static, Result<T>>, Self> {
        match self.owned {
            Some(owned) => Ok(owned()),
            None => Err(self),
        }
    }
}
