//! The manager's end, as background work sees it: a task that outlives
//! its caller races its work against [`Shutdown::fired`], so dropping the
//! last handle of a manager stops every such task (DESIGN §5, rule 9).

use tokio::sync::watch;

/// Held by the manager; dropping it fires every [`Shutdown`].
#[derive(Debug)]
pub(crate) struct ShutdownTrigger {
    _sender: watch::Sender<()>,
}

/// What a background task waits on besides its work.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown {
    receiver: watch::Receiver<()>,
}

impl Shutdown {
    /// A trigger and the signal it fires when dropped.
    pub(crate) fn new() -> (ShutdownTrigger, Shutdown) {
        let (sender, receiver) = watch::channel(());
        (ShutdownTrigger { _sender: sender }, Shutdown { receiver })
    }

    /// Resolves once the trigger is dropped.
    pub(crate) async fn fired(mut self) {
        // Nothing is ever sent: `changed` only returns, with an error,
        // when the sender is gone.
        while self.receiver.changed().await.is_ok() {}
    }
}
