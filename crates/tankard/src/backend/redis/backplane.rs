//! The backplane over Redis pub/sub (DESIGN §8): how a region's L1 copies
//! in other processes hear of a change.
//!
//! # Channel
//!
//! One channel per region, `{R}!backplane` with `R` = `{prefix}{region}`
//! as in the key layout (the braces are literal: a hash tag). A single
//! server uses `PUBLISH`/`SUBSCRIBE`; a cluster uses sharded pub/sub
//! (`SPUBLISH`/`SSUBSCRIBE`), and the hash tag puts the channel in the
//! slot of the region's own `{R}!gen` and `{R}!soft`, so the backplane
//! lives on the node every lookup of the region already needs: it adds no
//! node whose loss the region would otherwise survive. Two regions whose
//! prefix and name run together alike (prefix `a`, region `bc` and prefix
//! `ab`, region `c`) share a channel; each message names its region, so
//! neither evicts for the other.
//!
//! # Subscribing
//!
//! [`listen`](Backplane::listen) spawns one task per region that owns a
//! dedicated RESP3 connection (a multiplexed connection on one server, a
//! cluster connection on a cluster) whose only business is the
//! subscription. The task subscribes, then tells the listener
//! `on_state(true)`; it hands on every message that decodes, is not the
//! process's own and names the region. When the connection goes, the
//! listener hears `on_state(false)` at once, and the task reconnects with a
//! backoff from 50 ms doubling to 1 s, subscribes again on a fresh
//! connection and says `on_state(true)` again. The client's own automatic
//! resubscription is not used: a connection that reconnected by itself
//! could have missed messages without anyone being told.
//!
//! A lost connection is noticed as the client reads it: a server that is
//! killed or restarted, or `CLIENT KILL`, closes the socket, and the
//! connection reports it (a `Disconnection` push) at once. So does a
//! subscription the server ends itself (a cluster slot moving away sends
//! `sunsubscribe`). On a cluster, any of the connection's node links
//! dropping counts: a few needless L1 flushes, never a missed one. A server
//! that hangs (SIGSTOP, a stalled host) keeps its socket open and simply
//! goes quiet: nothing is noticed, the subscription stays "live" and the
//! L1 keeps answering, `l1_expire` bounding how stale its copies get.
//! When the hung server is the region's store, no other process can write
//! through it either, so there is nothing to miss; when it is a separate
//! backplane server, other processes' writes to the store go unannounced
//! (their publish fails) and `l1_expire` is the bound. No heartbeat is
//! sent: it would turn a hang into emptying L1 and reading a hung store.
//!
//! The task holds the listener weakly and ends when it is gone: it checks
//! on every message, before every connection attempt and at least once a
//! second while idle or waiting, so a dropped region (or manager) leaves no
//! task and no connection behind.
//!
//! # Publishing
//!
//! [`publish`](Backplane::publish) sends on the region's own connection
//! ([`Link`]), bounded by the region's `timeout`; its errors are the
//! crate's, a connection failure marked as one, like every other Redis
//! operation's.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{AsyncConnectionConfig, PushInfo, PushKind, RedisResult, Value, cmd};
use async_trait::async_trait;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::cluster_builder;
use super::conn::Link;
use crate::backend::backplane::{Backplane, Listener, Message};
use crate::error::Result;

/// The first wait before reconnecting, doubled after every failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between attempts.
const LAST_BACKOFF: Duration = Duration::from_secs(1);
/// How often a task checks that its listener still exists while nothing
/// else wakes it.
const LISTENER_CHECK: Duration = Duration::from_secs(1);

/// The channel of a region's evictions: `{{prefix}{region}}!backplane`.
pub(super) fn channel(prefix: &str, region: &str) -> String {
    format!("{{{prefix}{region}}}!backplane")
}

/// Where a backplane's subscriptions connect: the region's own server or
/// cluster (the same URL as its [`Link`]).
// One per region, behind an Arc: boxing the larger variant would buy
// nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Source {
    /// One server; the client speaks RESP3.
    Single(::redis::Client),
    /// A cluster's seeds; each subscription builds its own client, with a
    /// push sender of its own.
    Cluster(Vec<::redis::ConnectionInfo>),
}

/// Evictions over Redis pub/sub, on the channels of one region's prefix
/// (`listen` and `publish` name the region).
pub(crate) struct RedisBackplane {
    /// Publishes (shared with the region's backend when the store is this
    /// server).
    link: Arc<Link>,
    source: Arc<Source>,
    prefix: String,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("link", &self.link)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBackplane {
    pub(super) fn new(link: Arc<Link>, source: Source, prefix: &str) -> RedisBackplane {
        RedisBackplane {
            link,
            source: Arc::new(source),
            prefix: prefix.to_owned(),
        }
    }

    /// The task of [`Backplane::listen`], not yet spawned.
    fn subscription(
        &self,
        region: &str,
        origin: u64,
        listener: Weak<dyn Listener>,
    ) -> Subscription {
        Subscription {
            source: self.source.clone(),
            timeout: self.link.timeout,
            channel: channel(&self.prefix, region),
            region: region.to_owned(),
            origin,
            listener,
            #[cfg(test)]
            probe: None,
        }
    }
}

#[async_trait]
impl Backplane for RedisBackplane {
    fn listen(&self, region: &str, origin: u64, listener: Weak<dyn Listener>) {
        // The task ends by itself with the listener: its handle is not
        // needed.
        drop(tokio::spawn(
            self.subscription(region, origin, listener).run(),
        ));
    }

    async fn publish(&self, message: &Message) -> Result<()> {
        let mut publish = cmd(if self.link.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        });
        publish
            .arg(channel(&self.prefix, &message.region))
            .arg(message.encode());
        // The reply counts the receivers; none (no other process
        // listening) is no failure.
        self.link.query::<i64>("publish", &publish).await?;
        Ok(())
    }
}

/// A subscription's open connection. Dropping it closes it (and, on a
/// cluster, stops the client's tasks).
#[allow(dead_code)] // held, never read: its drop is what matters
enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// How a connection's delivery ended.
enum Ended {
    /// The listener is gone: the task ends.
    Gone,
    /// The subscription is lost, for the reason given: reconnect.
    Lost(&'static str),
}

/// One region's subscription task.
struct Subscription {
    source: Arc<Source>,
    timeout: Duration,
    channel: String,
    region: String,
    origin: u64,
    listener: Weak<dyn Listener>,
    #[cfg(test)]
    probe: Option<Arc<tests::Probe>>,
}

impl Subscription {
    async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        // Failed attempts since the subscription was last live: the first
        // is a warning, the rest debug, so an outage logs once.
        let mut failures = 0_u32;
        let mut lost = false;
        loop {
            if self.listener.strong_count() == 0 {
                return;
            }
            let attempt = tokio::time::timeout(self.timeout, self.subscribe());
            let outcome = match self.while_wanted(attempt).await {
                None => return,
                Some(Ok(outcome)) => outcome.map_err(|err| err.to_string()),
                Some(Err(_)) => Err(format!("no answer within {:?}", self.timeout)),
            };
            match outcome {
                Ok((connection, pushes)) => {
                    let Some(listener) = self.listener.upgrade() else {
                        return;
                    };
                    listener.on_state(true);
                    drop(listener);
                    if lost || failures > 0 {
                        tracing::info!(
                            "backplane of region {}: subscribed to {} again",
                            self.region,
                            self.channel
                        );
                    }
                    backoff = FIRST_BACKOFF;
                    failures = 0;
                    let reason = match self.deliver(pushes).await {
                        Ended::Gone => return,
                        Ended::Lost(reason) => reason,
                    };
                    drop(connection);
                    let Some(listener) = self.listener.upgrade() else {
                        return;
                    };
                    listener.on_state(false);
                    drop(listener);
                    lost = true;
                    tracing::warn!(
                        "backplane of region {}: subscription to {} lost ({reason}); \
                         its L1 is emptied and unused until it is back",
                        self.region,
                        self.channel
                    );
                }
                Err(err) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(
                            "backplane of region {}: cannot subscribe to {}: {err}; \
                             retrying (is the server running?)",
                            self.region,
                            self.channel
                        );
                    } else {
                        tracing::debug!(
                            "backplane of region {}: attempt {failures} to subscribe to {} \
                             failed: {err}",
                            self.region,
                            self.channel
                        );
                    }
                }
            }
            if self
                .while_wanted(tokio::time::sleep(backoff))
                .await
                .is_none()
            {
                return;
            }
            backoff = (backoff * 2).min(LAST_BACKOFF);
        }
    }

    /// Runs `work` unless the listener goes first (checked every
    /// [`LISTENER_CHECK`]); `None` then.
    async fn while_wanted<F: Future>(&self, work: F) -> Option<F::Output> {
        let mut check =
            tokio::time::interval_at(tokio::time::Instant::now() + LISTENER_CHECK, LISTENER_CHECK);
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return Some(output),
                _ = check.tick() => {
                    if self.listener.strong_count() == 0 {
                        return None;
                    }
                }
            }
        }
    }

    /// Opens a fresh connection and subscribes; returns once the server
    /// has confirmed the subscription. The connection's pushes (messages,
    /// confirmations, its disconnection) arrive on the receiver, which is
    /// this connection's alone, so nothing from an earlier one is read.
    async fn subscribe(&self) -> RedisResult<(Connection, UnboundedReceiver<PushInfo>)> {
        let (pushes, received) = unbounded_channel();
        let connection = match &*self.source {
            Source::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_push_sender(pushes);
                let mut connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                connection.subscribe(&self.channel).await?;
                Connection::Single(connection)
            }
            Source::Cluster(seeds) => {
                let client = cluster_builder(seeds, self.timeout)
                    .push_sender(pushes)
                    .build()?;
                let mut connection = client.get_async_connection().await?;
                connection.ssubscribe(&self.channel).await?;
                Connection::Cluster(connection)
            }
        };
        #[cfg(test)]
        if let Some(probe) = &self.probe {
            probe.record(&connection, &self.channel).await?;
        }
        Ok((connection, received))
    }

    /// Hands the connection's messages on until it is lost or the
    /// listener is gone.
    async fn deliver(&self, mut pushes: UnboundedReceiver<PushInfo>) -> Ended {
        let mut check =
            tokio::time::interval_at(tokio::time::Instant::now() + LISTENER_CHECK, LISTENER_CHECK);
        loop {
            let push = tokio::select! {
                push = pushes.recv() => push,
                _ = check.tick() => {
                    if self.listener.strong_count() == 0 {
                        return Ended::Gone;
                    }
                    continue;
                }
            };
            let Some(push) = push else {
                // The connection dropped its sender: it is gone.
                return Ended::Lost("the connection closed");
            };
            match push.kind {
                PushKind::Message | PushKind::SMessage => {
                    let Some(listener) = self.listener.upgrade() else {
                        return Ended::Gone;
                    };
                    if let Some(message) = self.decode(&push.data) {
                        listener.on_eviction(message.eviction);
                    }
                }
                PushKind::Disconnection => return Ended::Lost("the connection closed"),
                // Never asked for: the server ended the subscription (a
                // cluster slot moving to another node does).
                PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                    return Ended::Lost("the server ended the subscription");
                }
                // Confirmations of our own subscribe, and anything else.
                _ => {}
            }
        }
    }

    /// The message a push carries, if it is on this channel, decodes, is
    /// for this region and from another process.
    fn decode(&self, data: &[Value]) -> Option<Message> {
        let [Value::BulkString(channel), Value::BulkString(payload), ..] = data else {
            return None;
        };
        if channel != self.channel.as_bytes() {
            return None;
        }
        let message = Message::decode(payload)?;
        (message.origin != self.origin && message.region == self.region).then_some(message)
    }
}

#[cfg(test)]
mod tests {
    //! Against the real servers that `scripts/services` starts (their
    //! addresses in `/tmp/tankard-services/env`).

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::backend::backplane::Eviction;
    use crate::options::{BackendKind, BackplaneSetting, RegionOptions};

    /// What a test's subscription connection looks like to the server:
    /// `CLIENT INFO`, asked on that very connection after subscribing.
    #[derive(Debug, Default)]
    pub(super) struct Probe {
        client_info: Mutex<Option<String>>,
    }

    impl Probe {
        pub(super) async fn record(
            &self,
            connection: &Connection,
            channel: &str,
        ) -> RedisResult<()> {
            let mut info = cmd("CLIENT");
            info.arg("INFO");
            let reply: Value = match connection {
                Connection::Single(c) => info.query_async(&mut c.clone()).await?,
                // The node that holds the subscription: the channel's.
                Connection::Cluster(c) => {
                    let route = Route::with_key(channel, SlotAddr::Master);
                    c.clone()
                        .route_command(
                            info,
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                        )
                        .await?
                }
            };
            let text: String = ::redis::from_redis_value(reply)?;
            *self.client_info.lock().unwrap() = Some(text);
            Ok(())
        }

        /// (server address, client id) of the last connection recorded.
        fn client(&self) -> (String, String) {
            let info = self.client_info.lock().unwrap().clone();
            let info = info.expect("no subscription recorded yet");
            let field = |name: &str| {
                info.split_whitespace()
                    .find_map(|f| f.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {info}"))
                    .to_owned()
            };
            (field("laddr="), field("id="))
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Kind {
        Single,
        Cluster,
    }

    impl Kind {
        fn url(self) -> String {
            let var = match self {
                Kind::Single => "TANKARD_REDIS_URL",
                Kind::Cluster => "TANKARD_REDIS_CLUSTER_URL",
            };
            std::env::var(var).unwrap_or_else(|_| {
                panic!(
                    "{var} is not set: start the test servers with scripts/services, then \
                     `. /tmp/tankard-services/env`"
                )
            })
        }

        fn options(self, test: &str) -> RegionOptions {
            static N: AtomicU64 = AtomicU64::new(0);
            RegionOptions {
                backend: match self {
                    Kind::Single => BackendKind::Redis,
                    Kind::Cluster => BackendKind::RedisCluster,
                },
                url: Some(self.url()),
                // A prefix no other test or run uses: channels are global.
                prefix: format!(
                    "t{}-{:x}-{}/{test}/",
                    std::process::id(),
                    crate::backend::generation_start(),
                    N.fetch_add(1, Ordering::Relaxed)
                ),
                timeout: Duration::from_secs(2),
                ..RegionOptions::defaults("bp")
            }
        }

        /// A raw connection to the server at `addr` (`host:port`): the
        /// single server's own URL (with its credentials), or that node.
        async fn node(self, addr: &str) -> MultiplexedConnection {
            let url = match self {
                Kind::Single => self.url(),
                Kind::Cluster => format!("redis://{addr}/"),
            };
            ::redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        }
    }

    /// The backplane of a Redis region (a process's: each call opens
    /// another region), as the region's `backplane()` hands it out.
    fn backplane_of(options: &RegionOptions) -> Arc<RedisBackplane> {
        let backend = super::super::open_backend(options).unwrap();
        let handed: Arc<dyn Backplane> = crate::backend::Backend::backplane(&backend).unwrap();
        let ours: Arc<dyn Backplane> = backend.backplane.clone();
        assert!(Arc::ptr_eq(&handed, &ours));
        backend.backplane.clone()
    }

    /// Spawns `backplane`'s task for `listener` with a probe, as `listen`
    /// does without one.
    fn spawn_probed(
        backplane: &RedisBackplane,
        origin: u64,
        listener: &Arc<Recorder>,
    ) -> (JoinHandle<()>, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        let mut subscription = backplane.subscription("bp", origin, weak(listener));
        subscription.probe = Some(probe.clone());
        (tokio::spawn(subscription.run()), probe)
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Heard {
        State(bool),
        Eviction(Eviction),
    }

    /// A listener that records what it hears, in order.
    struct Recorder(mpsc::UnboundedSender<Heard>);

    impl Listener for Recorder {
        fn on_eviction(&self, eviction: Eviction) {
            let _ = self.0.send(Heard::Eviction(eviction));
        }

        fn on_state(&self, live: bool) {
            let _ = self.0.send(Heard::State(live));
        }
    }

    struct Log {
        received: mpsc::UnboundedReceiver<Heard>,
    }

    const DEADLINE: Duration = Duration::from_secs(10);

    impl Log {
        async fn next(&mut self) -> Heard {
            tokio::time::timeout(DEADLINE, self.received.recv())
                .await
                .expect("nothing heard within 10 s")
                .expect("the listener is gone")
        }

        /// Nothing heard so far (what was sent before a later message that
        /// arrived is either here or was never delivered: channels keep
        /// order).
        fn nothing(&mut self) {
            assert_eq!(self.received.try_recv().ok(), None);
        }
    }

    fn recorder() -> (Arc<Recorder>, Log) {
        let (send, received) = mpsc::unbounded_channel();
        (Arc::new(Recorder(send)), Log { received })
    }

    fn weak(listener: &Arc<Recorder>) -> Weak<dyn Listener> {
        let listener: Arc<dyn Listener> = listener.clone();
        Arc::downgrade(&listener)
    }

    fn key(key: &str) -> Eviction {
        Eviction::Key {
            namespace: "views".to_owned(),
            key: key.to_owned(),
        }
    }

    fn message(origin: u64, region: &str, eviction: Eviction) -> Message {
        Message {
            origin,
            region: region.to_owned(),
            eviction,
        }
    }

    /// Declares each test twice: on the single server and on the cluster.
    macro_rules! both {
        ($($name:ident),* $(,)?) => {
            mod single {
                $(
                    #[tokio::test]
                    async fn $name() {
                        super::$name(super::Kind::Single).await;
                    }
                )*
            }
            mod cluster {
                $(
                    #[tokio::test]
                    async fn $name() {
                        super::$name(super::Kind::Cluster).await;
                    }
                )*
            }
        };
    }

    both!(
        evictions_reach_other_processes_only,
        foreign_and_misdirected_messages_are_ignored,
        a_killed_connection_is_reported_and_replaced,
        a_dropped_listener_ends_the_task_and_its_connection,
        a_backplane_of_its_own_carries_the_same_messages,
    );

    /// Two processes (two origins) on one region: each eviction one
    /// publishes reaches the other, never itself, and only after the
    /// subscription was reported live.
    async fn evictions_reach_other_processes_only(kind: Kind) {
        let options = kind.options("deliver");
        let (a, b) = (backplane_of(&options), backplane_of(&options));
        let (a_listener, mut a_heard) = recorder();
        let (b_listener, mut b_heard) = recorder();
        a.listen("bp", 1, weak(&a_listener));
        b.listen("bp", 2, weak(&b_listener));
        assert_eq!(a_heard.next().await, Heard::State(true));
        assert_eq!(b_heard.next().await, Heard::State(true));

        let evictions = [
            key("k"),
            Eviction::Namespace {
                namespace: "views".to_owned(),
            },
            Eviction::Region,
        ];
        for eviction in &evictions {
            a.publish(&message(1, "bp", eviction.clone()))
                .await
                .unwrap();
            assert_eq!(b_heard.next().await, Heard::Eviction(eviction.clone()));
        }
        // B's own message reaches A, which proves A was listening all
        // along and heard none of its own before it.
        b.publish(&message(2, "bp", key("from b"))).await.unwrap();
        assert_eq!(a_heard.next().await, Heard::Eviction(key("from b")));
        a_heard.nothing();
        b_heard.nothing();
    }

    /// A message for another region (on its own channel, or one that lands
    /// on this region's channel), and bytes that are no message, reach no
    /// one; the subscription goes on.
    async fn foreign_and_misdirected_messages_are_ignored(kind: Kind) {
        let options = kind.options("ignore");
        let (a, b) = (backplane_of(&options), backplane_of(&options));
        let (listener, mut heard) = recorder();
        b.listen("bp", 2, weak(&listener));
        assert_eq!(heard.next().await, Heard::State(true));

        a.publish(&message(1, "other", key("x"))).await.unwrap();
        let channel = channel(&options.prefix, "bp");
        let publish = if kind == Kind::Cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        for payload in [
            message(1, "other", key("y")).encode(),
            b"garbage".to_vec(),
            Vec::new(),
            b"tkb\x01\xff".to_vec(),
            b"tkb\x09whatever".to_vec(),
        ] {
            let receivers: i64 = a
                .link
                .query("test", cmd(publish).arg(&channel).arg(payload))
                .await
                .unwrap();
            assert_eq!(receivers, 1, "B is subscribed");
        }
        a.publish(&message(1, "bp", key("real"))).await.unwrap();
        assert_eq!(heard.next().await, Heard::Eviction(key("real")));
        heard.nothing();
    }

    /// The subscription's connection killed on the server: the listener
    /// hears it lost, then live again, and messages flow again.
    async fn a_killed_connection_is_reported_and_replaced(kind: Kind) {
        let options = kind.options("kill");
        let (a, b) = (backplane_of(&options), backplane_of(&options));
        let (listener, mut heard) = recorder();
        let (task, probe) = spawn_probed(&b, 2, &listener);
        assert_eq!(heard.next().await, Heard::State(true));
        a.publish(&message(1, "bp", key("before"))).await.unwrap();
        assert_eq!(heard.next().await, Heard::Eviction(key("before")));

        for round in 0..2 {
            let (addr, id) = probe.client();
            let killed: i64 = cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(&id)
                .query_async(&mut kind.node(&addr).await)
                .await
                .unwrap();
            assert_eq!(killed, 1, "round {round}: client {id} on {addr}");
            assert_eq!(heard.next().await, Heard::State(false));
            assert_eq!(heard.next().await, Heard::State(true));
            assert_ne!(probe.client().1, id, "a new connection");
            a.publish(&message(1, "bp", key("after"))).await.unwrap();
            assert_eq!(heard.next().await, Heard::Eviction(key("after")));
        }
        heard.nothing();
        assert!(!task.is_finished());
    }

    /// Dropping the listener ends the task, and its connection with it.
    async fn a_dropped_listener_ends_the_task_and_its_connection(kind: Kind) {
        let options = kind.options("drop");
        let b = backplane_of(&options);
        let (listener, mut heard) = recorder();
        let (task, probe) = spawn_probed(&b, 2, &listener);
        assert_eq!(heard.next().await, Heard::State(true));
        let (addr, id) = probe.client();
        drop(listener);
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the task outlived its listener by 10 s")
            .unwrap();
        // The connection closes as the task drops it; the server sees it
        // a moment later.
        let mut node = kind.node(&addr).await;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let listed: String = cmd("CLIENT")
                .arg("LIST")
                .arg("ID")
                .arg(&id)
                .query_async(&mut node)
                .await
                .unwrap();
            if listed.trim().is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "client {id} still connected: {listed}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `backplane = redis://…` on a region whose store is elsewhere: its
    /// own link, the same channel, so it talks with the store's backplane.
    async fn a_backplane_of_its_own_carries_the_same_messages(kind: Kind) {
        let mut options = kind.options("own");
        let store = backplane_of(&options);
        options.backend = BackendKind::Memcached;
        options.backplane = BackplaneSetting::Redis(options.url.take().unwrap());
        let own = crate::backend::open_backplane(&options, None)
            .unwrap()
            .expect("a backplane");
        let (listener, mut heard) = recorder();
        own.listen("bp", 2, weak(&listener));
        assert_eq!(heard.next().await, Heard::State(true));
        store.publish(&message(1, "bp", key("k"))).await.unwrap();
        assert_eq!(heard.next().await, Heard::Eviction(key("k")));
        let (store_listener, mut store_heard) = recorder();
        store.listen("bp", 1, weak(&store_listener));
        assert_eq!(store_heard.next().await, Heard::State(true));
        own.publish(&message(2, "bp", Eviction::Region))
            .await
            .unwrap();
        assert_eq!(store_heard.next().await, Heard::Eviction(Eviction::Region));
        heard.nothing();
    }

    #[test]
    fn a_backplane_url_is_checked_like_a_region_url() {
        let mut options = RegionOptions::defaults("short_term");
        options.backplane = BackplaneSetting::Redis("http://nope".to_owned());
        let err = crate::backend::open_backplane(&options, None).unwrap_err();
        assert!(err.is_config(), "{err}");
        let text = err.to_string();
        assert!(text.contains("cache.short_term.backplane"), "{text}");
        assert!(text.contains("http://nope"), "{text}");
        options.backplane =
            BackplaneSetting::Redis("redis://user:hunter2@h:1,redis://[::1".to_owned());
        let text = crate::backend::open_backplane(&options, None)
            .unwrap_err()
            .to_string();
        assert!(text.contains("cache.short_term.backplane"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        // Good URLs open without connecting.
        for url in [
            "redis://127.0.0.1:1/",
            "redis://127.0.0.1:1,redis://127.0.0.1:2",
        ] {
            options.backplane = BackplaneSetting::Redis(url.to_owned());
            assert!(
                crate::backend::open_backplane(&options, None)
                    .unwrap()
                    .is_some()
            );
        }
    }

    #[test]
    fn the_channel_is_the_regions_hash_tag() {
        assert_eq!(channel("app/", "short_term"), "{app/short_term}!backplane");
        // The same slot as the region's own keys.
        let options = RegionOptions {
            prefix: "app/".into(),
            ..RegionOptions::defaults("short_term")
        };
        let region = crate::backend::RegionScope::new(&options);
        let gen_key = super::super::tagged(&region.generation_key, "!gen");
        assert_eq!(
            Route::with_key(&gen_key, SlotAddr::Master),
            Route::with_key(channel("app/", "short_term"), SlotAddr::Master)
        );
    }
}
