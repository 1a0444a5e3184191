//! The backplane: how one process tells the others which of their L1
//! copies to drop (DESIGN §8).
//!
//! A message names a region, what changed in it (one key, one namespace,
//! or the whole region) and the process that sent it; it never carries a
//! value. Every process listens on its regions' channels, ignores its own
//! messages, and evicts what the others' messages name. A process that
//! loses its backplane connection may have missed messages: it empties its
//! L1 and reads from the shared store alone until the connection is back
//! (the listener is told both edges).
//!
//! This file is the seam; [`redis`](super::redis) fills it (Redis pub/sub,
//! sharded pub/sub on a cluster). It imports nothing above `backend`.

use std::fmt;
use std::sync::Weak;

use async_trait::async_trait;

use crate::error::Result;

/// What changed in a region, as far as other processes' L1 copies care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// One key was written, regenerated or removed.
    Key {
        /// The namespace's name.
        namespace: String,
        /// The caller's key (before prefixing and hashing).
        key: String,
    },
    /// A namespace was cleared.
    Namespace {
        /// The namespace's name.
        namespace: String,
    },
    /// The whole region was invalidated (soft or hard: an L1 copy is
    /// dropped either way; the shared store knows which).
    Region,
}

/// One message on the wire: who sent it, which region, what to evict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    /// The sending region instance's id: a process ignores its own.
    pub(crate) origin: u64,
    /// The region's name.
    pub(crate) region: String,
    /// What to drop.
    pub(crate) eviction: Eviction,
}

/// The receiving side, implemented by a region's L1 tier. Called from the
/// backplane's own task: it must not block.
pub(crate) trait Listener: Send + Sync + 'static {
    /// Another process changed something: drop the L1 copies it names.
    fn on_eviction(&self, eviction: Eviction);

    /// The subscription is live (`true`, after every successful
    /// (re)subscription) or lost (`false`: messages may have been missed).
    fn on_state(&self, live: bool);
}

/// A channel that carries evictions between processes.
#[async_trait]
pub(crate) trait Backplane: Send + Sync + fmt::Debug + 'static {
    /// Starts delivering other processes' messages for `region` to
    /// `listener` (held weakly: a dropped region stops its delivery).
    /// Must be called from within a tokio runtime; the listener hears
    /// `on_state(true)` once the subscription is live, never before.
    fn listen(&self, region: &str, origin: u64, listener: Weak<dyn Listener>);

    /// Sends one message; returns once the server has taken it (bounded
    /// by the region's `timeout`).
    async fn publish(&self, message: &Message) -> Result<()>;
}
