//! The L1 tier over Redis and its backplane (DESIGN §8), against real
//! servers: two managers on one prefix are two nodes; real child
//! processes (`support/node.rs`) are more; a private `redis-server` is
//! killed off the backplane, fenced off it by ACL, and stopped.
//!
//! Nodes use `l1_expire = 1h` wherever the point is that only the
//! backplane can explain an eviction: within a test, nothing else ends a
//! copy. A message takes its time to arrive, so a test that waits for
//! one polls until a deadline; nothing here sleeps to synchronise.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tankard::{Cache, CacheManager, Clock, Config, Invalidation};

use crate::common::{Kind, PrivateServer, Raw, counted, manager, toml, toml_for, unique_prefix};
use crate::node::Node;

both!(
    a_put_reaches_the_other_node_and_the_writer_keeps_its_copy,
    a_remove_reaches_the_other_node,
    a_regenerated_entry_reaches_the_other_node,
    a_clear_reaches_the_other_node_in_that_namespace_only,
    a_soft_invalidation_reaches_the_other_node,
    a_hard_invalidation_reaches_the_other_node,
    a_cold_key_is_created_once_across_nodes_and_the_waiter_fills_its_l1_from_redis,
    a_background_refresh_serves_both_nodes_stale_and_runs_one_creator,
    changes_in_one_process_reach_the_other_processes_l1,
    a_tag_invalidation_reaches_the_other_node,
    a_tag_invalidation_in_one_process_reaches_the_other_processes,
);

/// How long a test waits for a message to have its effect.
const DEADLINE: Duration = Duration::from_secs(10);

/// The options of every node: an L1 whose copies only the backplane ends.
const L1: &str = "stale = 60\nl1 = true\nl1_expire = \"1h\"";

/// Polls `check` until it holds; fails after [`DEADLINE`].
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a node's next read returns (L1, then Redis).
async fn read(ns: &Cache, key: &str) -> Option<String> {
    let value = ns.get::<String>(key).await.unwrap();
    value.map(|v| (*v).clone())
}

/// What the node's L1 alone holds.
fn held(ns: &Cache, key: &str) -> Option<String> {
    ns.try_get_fresh::<String>(key).map(|v| (*v).clone())
}

async fn peek(ns: &Cache, key: &str) -> Option<(String, bool)> {
    let found = ns.peek::<String>(key).await.unwrap();
    found.map(|(v, fresh)| ((*v).clone(), fresh))
}

async fn put(ns: &Cache, key: &str, value: &str) {
    ns.put(key, value.to_owned()).await.unwrap();
}

/// Reads until a read keeps an L1 copy. The backplane's listener starts
/// on the first read and the L1 stays off until its subscription is
/// live; from then on the node hears every message.
async fn l1_on(ns: &Cache) {
    static N: AtomicU64 = AtomicU64::new(0);
    let key = format!("warm-{}", N.fetch_add(1, Ordering::Relaxed));
    ns.put(&key, 0u8).await.unwrap();
    until("the L1 comes on", || async {
        ns.get::<u8>(&key).await.unwrap();
        ns.try_get_fresh::<u8>(&key).is_some()
    })
    .await;
}

/// Returns once `to` has handled every backplane message published
/// before this call (its own included): `to` keeps a copy of a fresh key,
/// `from` writes that key, and messages on one channel arrive in order.
///
/// Tests need it because a message arrives on the subscription's own
/// connection, in no set order with reads on the store's: a copy `to`
/// takes right after another node's write can be dropped a moment later
/// by that write's message (a needless miss, never a stale read).
async fn fence(from: &Cache, to: &Cache) {
    static N: AtomicU64 = AtomicU64::new(0);
    let key = format!("fence-{}", N.fetch_add(1, Ordering::Relaxed));
    to.put(&key, 0u8).await.unwrap();
    assert!(
        to.try_get_fresh::<u8>(&key).is_some(),
        "a writer's own copy"
    );
    from.put(&key, 1u8).await.unwrap();
    until("the fence's message arrives", || async {
        to.try_get_fresh::<u8>(&key).is_none()
    })
    .await;
}

/// [`fence`] from this process to a child node.
async fn fence_child(from: &Cache, to: &mut Node) {
    static N: AtomicU64 = AtomicU64::new(0);
    let key = format!("child-fence-{}", N.fetch_add(1, Ordering::Relaxed));
    assert_eq!(to.send(&format!("put {key} 0")).await, "ok");
    assert_eq!(to.send(&format!("l1 {key}")).await, "value 0");
    put(from, &key, "1").await;
    assert_eq!(to.send(&format!("await-l1 {key} -")).await, "ok");
}

/// Two nodes on `config`, each on its clock, both with their L1 on.
async fn nodes_with(config: &str, clocks: (Clock, Clock)) -> (CacheManager, CacheManager) {
    let node = |clock: Clock| {
        CacheManager::with_clock(Config::from_toml_str(config).unwrap(), clock).unwrap()
    };
    let (a, b) = (node(clocks.0), node(clocks.1));
    l1_on(&a.namespace("l1")).await;
    l1_on(&b.namespace("l1")).await;
    (a, b)
}

async fn nodes(kind: Kind, test: &str) -> (CacheManager, CacheManager) {
    let config = toml(kind, &unique_prefix(test), L1);
    nodes_with(&config, (Clock::system(), Clock::system())).await
}

/// `key` written by `a` and read by `b`, which keeps a copy of it.
async fn held_by_both(a: &Cache, b: &Cache, key: &str, value: &str) {
    put(a, key, value).await;
    assert_eq!(held(a, key).as_deref(), Some(value), "the writer's copy");
    // The write's own message drops any copy B takes before it arrives
    // (see `fence`): read once it is in.
    fence(a, b).await;
    assert_eq!(read(b, key).await.as_deref(), Some(value));
    assert_eq!(held(b, key).as_deref(), Some(value), "the reader's copy");
}

async fn a_put_reaches_the_other_node_and_the_writer_keeps_its_copy(kind: Kind) {
    let (a, b) = nodes(kind, "l1-put").await;
    let (a, b) = (a.namespace("l1"), b.namespace("l1"));
    held_by_both(&a, &b, "k", "v1").await;

    put(&a, "k", "v2").await;
    assert_eq!(
        held(&a, "k").as_deref(),
        Some("v2"),
        "the writer's own copy"
    );
    until("B reads A's write", || async {
        read(&b, "k").await.as_deref() == Some("v2")
    })
    .await;
    assert_eq!(
        held(&b, "k").as_deref(),
        Some("v2"),
        "B's read filled its L1 again"
    );
    // A has now heard its own message too, and kept its copy.
    fence(&b, &a).await;
    assert_eq!(held(&a, "k").as_deref(), Some("v2"), "own messages ignored");

    // And the other way round.
    put(&b, "k", "v3").await;
    until("A reads B's write", || async {
        read(&a, "k").await.as_deref() == Some("v3")
    })
    .await;
    fence(&a, &b).await;
    assert_eq!(held(&b, "k").as_deref(), Some("v3"), "own messages ignored");
}

async fn a_remove_reaches_the_other_node(kind: Kind) {
    let (a, b) = nodes(kind, "l1-remove").await;
    let (a, b) = (a.namespace("l1"), b.namespace("l1"));
    held_by_both(&a, &b, "k", "v").await;
    assert!(a.remove("k").await.unwrap());
    assert_eq!(held(&a, "k"), None);
    assert_eq!(read(&a, "k").await, None);
    until("B's read misses", || async {
        read(&b, "k").await.is_none()
    })
    .await;
    assert_eq!(held(&b, "k"), None);
}

/// A regenerates an entry that expired by its clock; B's clock stands
/// still, so by B's own reckoning its copy is still fresh for a minute:
/// only the backplane can end it.
async fn a_regenerated_entry_reaches_the_other_node(kind: Kind) {
    let config = toml(kind, &unique_prefix("l1-regen"), L1);
    let now = Clock::system().now_ms();
    let (a_clock, b_clock) = (Clock::manual(now), Clock::manual(now));
    let (a, b) = nodes_with(&config, (a_clock.clone(), b_clock)).await;
    let (a, b) = (a.namespace("l1"), b.namespace("l1"));
    let runs = Arc::new(AtomicUsize::new(0));
    let created = a.get_or_create("k", counted(&runs, "v1")).await.unwrap();
    assert_eq!(*created, "v1");
    fence(&a, &b).await;
    let read_b = b.get_or_create("k", counted(&runs, "never")).await.unwrap();
    assert_eq!(*read_b, "v1");
    assert_eq!(held(&b, "k").as_deref(), Some("v1"));

    // expire = 60, stale = 60: past both, the entry is missing for A.
    a_clock.advance(Duration::from_secs(121));
    let regenerated = a.get_or_create("k", counted(&runs, "v2")).await.unwrap();
    assert_eq!(*regenerated, "v2");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(held(&a, "k").as_deref(), Some("v2"));
    until("B reads the regenerated entry", || async {
        read(&b, "k").await.as_deref() == Some("v2")
    })
    .await;
    assert_eq!(held(&b, "k").as_deref(), Some("v2"));
    assert_eq!(runs.load(Ordering::SeqCst), 2, "B created nothing");
}

async fn a_clear_reaches_the_other_node_in_that_namespace_only(kind: Kind) {
    let (a_node, b_node) = nodes(kind, "l1-clear").await;
    let (a, b) = (a_node.namespace("l1"), b_node.namespace("l1"));
    let (a_other, b_other) = (a_node.namespace("other"), b_node.namespace("other"));
    held_by_both(&a, &b, "k", "v").await;
    held_by_both(&a_other, &b_other, "k", "w").await;
    a.clear().await.unwrap();
    assert_eq!(held(&a, "k"), None);
    until("B's read misses", || async {
        read(&b, "k").await.is_none()
    })
    .await;
    assert_eq!(held(&b, "k"), None);
    // The namespace's message has arrived, and it touched nothing else.
    assert_eq!(held(&b_other, "k").as_deref(), Some("w"));
    assert_eq!(held(&a_other, "k").as_deref(), Some("w"));
}

async fn a_soft_invalidation_reaches_the_other_node(kind: Kind) {
    let (a_node, b_node) = nodes(kind, "l1-soft").await;
    let (a, b) = (a_node.namespace("l1"), b_node.namespace("l1"));
    held_by_both(&a, &b, "k", "v").await;
    a_node
        .default_region()
        .invalidate(Invalidation::Soft)
        .await
        .unwrap();
    assert_eq!(held(&a, "k"), None);
    until("B's read misses", || async {
        read(&b, "k").await.is_none()
    })
    .await;
    assert_eq!(held(&b, "k"), None);
    assert_eq!(
        peek(&b, "k").await,
        Some(("v".to_owned(), false)),
        "Redis still serves it stale"
    );
}

async fn a_hard_invalidation_reaches_the_other_node(kind: Kind) {
    let (a_node, b_node) = nodes(kind, "l1-hard").await;
    let (a, b) = (a_node.namespace("l1"), b_node.namespace("l1"));
    held_by_both(&a, &b, "k", "v").await;
    a_node
        .default_region()
        .invalidate(Invalidation::Hard)
        .await
        .unwrap();
    assert_eq!(held(&a, "k"), None);
    until("B's read misses", || async {
        read(&b, "k").await.is_none()
    })
    .await;
    assert_eq!(held(&b, "k"), None);
    assert_eq!(peek(&b, "k").await, None, "gone from Redis too");
}

/// A creator that counts its runs, waits for `gate` to open, and returns
/// `value`.
fn gated(
    runs: &Arc<AtomicUsize>,
    gate: &tokio::sync::watch::Receiver<bool>,
    value: &str,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = String> + Send>> + Send + 'static {
    let (runs, mut gate, value) = (runs.clone(), gate.clone(), value.to_owned());
    move || {
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            gate.wait_for(|open| *open).await.unwrap();
            value
        })
    }
}

/// The dog-pile contract across tiers: both nodes miss a cold key at
/// once, one creator runs (held until the other node is seen waiting on
/// Redis' lock), both get its value, and a node's L1 is filled from Redis
/// with no creator.
async fn a_cold_key_is_created_once_across_nodes_and_the_waiter_fills_its_l1_from_redis(
    kind: Kind,
) {
    let (a_node, b_node) = nodes(kind, "l1-cold").await;
    let (a, b) = (a_node.namespace("l1"), b_node.namespace("l1"));
    let runs = Arc::new(AtomicUsize::new(0));
    let (open, gate) = tokio::sync::watch::channel(false);
    let a_call = tokio::spawn({
        let (a, creator) = (a.clone(), gated(&runs, &gate, "by-a"));
        async move { a.get_or_create("cold", creator).await }
    });
    let b_call = tokio::spawn({
        let (b, creator) = (b.clone(), gated(&runs, &gate, "by-b"));
        async move { b.get_or_create("cold", creator).await }
    });
    until("one creator runs and the other node waits", || async {
        let waits =
            a_node.default_region().stats().lock_waits + b_node.default_region().stats().lock_waits;
        runs.load(Ordering::SeqCst) == 1 && waits >= 1
    })
    .await;
    open.send(true).unwrap();
    let a_got = a_call.await.unwrap().unwrap();
    let b_got = b_call.await.unwrap().unwrap();
    assert_eq!(a_got, b_got, "both nodes get the one creator's value");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one creator across nodes");

    let (creator, waiter) = if *a_got == "by-a" { (&a, &b) } else { (&b, &a) };
    assert_eq!(held(creator, "cold").as_deref(), Some(a_got.as_str()));
    // The waiter re-read Redis after the lock and kept a copy, which the
    // creator's message (on another connection, so in no set order with
    // that read) may have dropped again; once that message is surely in,
    // a read fills the waiter's L1 from Redis, still with no creator.
    fence(creator, waiter).await;
    let again = waiter
        .get_or_create("cold", gated(&runs, &gate, "never"))
        .await
        .unwrap();
    assert_eq!(again, a_got);
    assert_eq!(held(waiter, "cold").as_deref(), Some(a_got.as_str()));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "still one creator run");
}

/// `refresh = background` across two nodes on one (manual) clock: both
/// call `get_or_spawn` on a stale entry at once, both get the stale value
/// at once (while the creator is still held), one creator runs in all,
/// and both then read its value.
async fn a_background_refresh_serves_both_nodes_stale_and_runs_one_creator(kind: Kind) {
    let config = toml(
        kind,
        &unique_prefix("l1-background"),
        &format!("{L1}\nrefresh = \"background\""),
    );
    let clock = Clock::manual(Clock::system().now_ms());
    let (a_node, b_node) = nodes_with(&config, (clock.clone(), clock.clone())).await;
    let (a, b) = (a_node.namespace("l1"), b_node.namespace("l1"));
    let first = a
        .get_or_spawn("k", || async { "v1".to_owned() })
        .await
        .unwrap();
    assert_eq!(*first, "v1");
    fence(&a, &b).await;
    assert_eq!(read(&b, "k").await.as_deref(), Some("v1"));
    assert_eq!(held(&b, "k").as_deref(), Some("v1"));

    // Past expire (60), within stale (60): stale for both, in L1 and Redis.
    clock.advance(Duration::from_secs(61));
    assert_eq!((held(&a, "k"), held(&b, "k")), (None, None));
    let runs = Arc::new(AtomicUsize::new(0));
    let (open, gate) = tokio::sync::watch::channel(false);
    let both = async {
        tokio::join!(
            a.get_or_spawn("k", gated(&runs, &gate, "v2-by-a")),
            b.get_or_spawn("k", gated(&runs, &gate, "v2-by-b")),
        )
    };
    let (a_got, b_got) = tokio::time::timeout(DEADLINE, both)
        .await
        .expect("a caller waited for the held creator");
    assert_eq!(*a_got.unwrap(), "v1", "A gets the stale value at once");
    assert_eq!(*b_got.unwrap(), "v1", "B gets the stale value at once");
    until("the refresh's creator starts", || async {
        runs.load(Ordering::SeqCst) >= 1
    })
    .await;
    open.send(true).unwrap();
    until("both nodes read the refreshed value", || async {
        let (a_now, b_now) = (read(&a, "k").await, read(&b, "k").await);
        a_now.as_deref().is_some_and(|v| v.starts_with("v2-by-")) && a_now == b_now
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one creator in all");
    // Both L1s hold the new value once the refresh's message is surely in.
    fence(&a, &b).await;
    fence(&b, &a).await;
    let fresh = read(&a, "k").await;
    assert_eq!(read(&b, "k").await, fresh);
    assert_eq!((held(&a, "k"), held(&b, "k")), (fresh.clone(), fresh));
    assert!(a_node.default_region().stats().stale_served >= 1);
    assert!(b_node.default_region().stats().stale_served >= 1);
}

/// Three real processes (this one and two child nodes) on one region:
/// each change made in one reaches the L1 of the others, which held a
/// copy before.
async fn changes_in_one_process_reach_the_other_processes_l1(kind: Kind) {
    let config = toml(kind, &unique_prefix("l1-processes"), L1);
    let parent = manager(&config).namespace("nodes");
    l1_on(&parent).await;
    let (mut c1, mut c2) = tokio::join!(Node::start(&config), Node::start(&config));

    // Everyone holds `key` = `value`: written by the parent, read by the
    // children once its message is in (see `fence`).
    async fn everyone_holds(parent: &Cache, children: [&mut Node; 2], key: &str, value: &str) {
        put(parent, key, value).await;
        for child in children {
            fence_child(parent, child).await;
            assert_eq!(
                child.send(&format!("get {key}")).await,
                format!("value {value}")
            );
            assert_eq!(
                child.send(&format!("l1 {key}")).await,
                format!("value {value}")
            );
        }
        assert_eq!(held(parent, key).as_deref(), Some(value));
    }

    // A write in child 1.
    everyone_holds(&parent, [&mut c1, &mut c2], "k", "v1").await;
    assert_eq!(c1.send("put k v2").await, "ok");
    assert_eq!(c1.send("l1 k").await, "value v2", "the writer's own copy");
    assert_eq!(c2.send("await k v2").await, "ok");
    until("the parent reads child 1's write", || async {
        read(&parent, "k").await.as_deref() == Some("v2")
    })
    .await;

    // A remove in child 2.
    assert_eq!(c1.send("get k").await, "value v2");
    assert_eq!(c1.send("l1 k").await, "value v2");
    assert_eq!(held(&parent, "k").as_deref(), Some("v2"));
    assert_eq!(c2.send("remove k").await, "removed true");
    assert_eq!(c1.send("await k -").await, "ok");
    until("the parent's read misses", || async {
        read(&parent, "k").await.is_none()
    })
    .await;

    // A clear in the parent.
    everyone_holds(&parent, [&mut c1, &mut c2], "c", "v").await;
    parent.clear().await.unwrap();
    assert_eq!(c1.send("await c -").await, "ok");
    assert_eq!(c2.send("await c -").await, "ok");

    // A soft invalidation in child 1.
    everyone_holds(&parent, [&mut c1, &mut c2], "s", "v").await;
    assert_eq!(c1.send("invalidate soft").await, "ok");
    assert_eq!(c2.send("await s -").await, "ok");
    assert_eq!(c2.send("peek s").await, "stale v");
    until("the parent's read misses", || async {
        read(&parent, "s").await.is_none()
    })
    .await;
    assert_eq!(peek(&parent, "s").await, Some(("v".to_owned(), false)));

    // A hard invalidation in child 2.
    everyone_holds(&parent, [&mut c1, &mut c2], "h", "v").await;
    assert_eq!(c2.send("invalidate hard").await, "ok");
    assert_eq!(c1.send("await h -").await, "ok");
    assert_eq!(c1.send("peek h").await, "none");
    until("the parent's read misses", || async {
        read(&parent, "h").await.is_none()
    })
    .await;
}

/// Two nodes on a private server: A as the server's default user, B as
/// user `bnode`, so the test can cut B's subscription alone.
struct Private {
    // Dropped in this order: the nodes before their server.
    a: CacheManager,
    b: CacheManager,
    raw: Raw,
    server: PrivateServer,
}

async fn private(test: &str, extra: &str) -> Private {
    let server = PrivateServer::start(&[]);
    let mut raw = Raw::connect_url(Kind::Single, &server.url()).await;
    raw.query::<()>(
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("bnode")
            .arg("on")
            .arg(">bnode-secret")
            .arg("~*")
            .arg("&*")
            .arg("+@all"),
    )
    .await;
    let prefix = unique_prefix(test);
    let options = format!("{L1}\n{extra}");
    let a_url = server.url();
    let b_url = format!("redis://bnode:bnode-secret@127.0.0.1:{}/", server.port);
    let a = manager(&toml_for("ext:redis", &a_url, &prefix, &options));
    let b = manager(&toml_for("ext:redis", &b_url, &prefix, &options));
    l1_on(&a.namespace("l1")).await;
    l1_on(&b.namespace("l1")).await;
    Private { a, b, raw, server }
}

impl Private {
    /// Takes (true) or gives back B's right to subscribe; its current
    /// subscription survives this.
    async fn let_b_subscribe(&mut self, allowed: bool) {
        let sign = if allowed { '+' } else { '-' };
        self.raw
            .query::<()>(
                redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg("bnode")
                    .arg(format!("{sign}subscribe"))
                    .arg(format!("{sign}ssubscribe")),
            )
            .await;
    }

    /// Kills the subscriptions' connections (`user`: only that user's);
    /// returns how many.
    async fn kill_subscriptions(&mut self, user: Option<&str>) -> i64 {
        let mut kill = redis::cmd("CLIENT");
        kill.arg("KILL");
        if let Some(user) = user {
            kill.arg("USER").arg(user);
        }
        kill.arg("TYPE").arg("pubsub");
        self.raw.query(&kill).await
    }
}

/// The backplane's connection killed: the L1 is emptied, reads stay right
/// (from Redis), and once the node has subscribed again its L1 is used
/// again and hears messages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backplane_empties_the_l1_which_is_used_again_after_reconnecting() {
    let mut nodes = private("l1-kill", "").await;
    let (a, b) = (nodes.a.namespace("l1"), nodes.b.namespace("l1"));
    held_by_both(&a, &b, "k", "v1").await;

    assert_eq!(nodes.kill_subscriptions(None).await, 2, "A's and B's");
    until("B's L1 is emptied", || async { held(&b, "k").is_none() }).await;
    assert_eq!(read(&b, "k").await.as_deref(), Some("v1"), "from Redis");
    until("B's L1 is used again", || async {
        read(&b, "k").await.as_deref() == Some("v1") && held(&b, "k").as_deref() == Some("v1")
    })
    .await;
    put(&a, "k", "v2").await;
    until("B hears A's write again", || async {
        read(&b, "k").await.as_deref() == Some("v2")
    })
    .await;
}

/// B's subscription is cut and cannot come back (ACL) while Redis serves
/// both nodes: A's write, whose message B misses, is read by B at once
/// from Redis; B keeps no copy until it has subscribed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_missed_while_the_backplane_is_down_is_not_served_stale() {
    let mut nodes = private("l1-missed", "").await;
    let (a, b) = (nodes.a.namespace("l1"), nodes.b.namespace("l1"));
    held_by_both(&a, &b, "k", "v1").await;

    nodes.let_b_subscribe(false).await;
    assert_eq!(nodes.kill_subscriptions(Some("bnode")).await, 1);
    until("B's L1 is emptied", || async { held(&b, "k").is_none() }).await;
    put(&a, "k", "v2").await;
    assert_eq!(read(&b, "k").await.as_deref(), Some("v2"), "B reads Redis");
    assert_eq!(held(&b, "k"), None, "and keeps no copy while deaf");
    put(&a, "k", "v3").await;
    assert_eq!(read(&b, "k").await.as_deref(), Some("v3"));

    nodes.let_b_subscribe(true).await;
    until("B's L1 is used again", || async {
        read(&b, "k").await.as_deref() == Some("v3") && held(&b, "k").as_deref() == Some("v3")
    })
    .await;
    put(&a, "k", "v4").await;
    until("B hears A's write again", || async {
        read(&b, "k").await.as_deref() == Some("v4")
    })
    .await;
}

/// The other side of the same cut: B, whose own subscription is down,
/// still writes to a Redis that answers, and A, whose subscription is
/// live, holds a copy of what B overwrites. B must still announce its
/// write; A could otherwise serve its old copy for all of `l1_expire`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_subscription_is_down_still_announces_its_writes() {
    let mut nodes = private("l1-deaf-writer", "").await;
    let (a, b) = (nodes.a.namespace("l1"), nodes.b.namespace("l1"));
    held_by_both(&b, &a, "k", "v1").await;

    nodes.let_b_subscribe(false).await;
    assert_eq!(nodes.kill_subscriptions(Some("bnode")).await, 1);
    until("B's L1 is off", || async { held(&b, "k").is_none() }).await;
    put(&b, "k", "v2").await;
    until("A reads B's write", || async {
        read(&a, "k").await.as_deref() == Some("v2")
    })
    .await;
    assert!(b.remove("k").await.unwrap());
    until("A's read misses after B's remove", || async {
        read(&a, "k").await.is_none()
    })
    .await;
}

/// Continues a stopped server when dropped, the test failing or not.
struct Stopped<'a>(&'a PrivateServer);

impl<'a> Stopped<'a> {
    fn new(server: &'a PrivateServer) -> Stopped<'a> {
        server.signal("STOP");
        Stopped(server)
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        // Not `signal`, which asserts: a panic while unwinding would abort.
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.pid().to_string()])
            .status();
    }
}

/// Redis stopped (SIGSTOP): its sockets stay open, the subscription looks
/// live, and the L1 keeps answering its copies (within `l1_expire`); a key
/// it holds no copy of goes to the silent server and is a miss after
/// `timeout`. Once the server runs again, messages flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_leaves_the_l1_answering_its_copies() {
    let nodes = private("l1-stopped", "timeout = \"300ms\"").await;
    let (a, b) = (nodes.a.namespace("l1"), nodes.b.namespace("l1"));
    held_by_both(&a, &b, "k", "v1").await;
    {
        let _stopped = Stopped::new(&nodes.server);
        for _ in 0..3 {
            assert_eq!(read(&b, "k").await.as_deref(), Some("v1"));
            assert_eq!(held(&b, "k").as_deref(), Some("v1"));
            assert_eq!(read(&a, "k").await.as_deref(), Some("v1"));
        }
        assert_eq!(read(&b, "not held").await, None, "bypassed after timeout");
        assert_eq!(held(&b, "k").as_deref(), Some("v1"), "the copy stays");
        assert!(b.get::<String>("k").await.unwrap().is_some());
    }
    put(&a, "k", "v2").await;
    until("B hears A's write once Redis runs again", || async {
        read(&b, "k").await.as_deref() == Some("v2")
    })
    .await;
}

/// Node A's `invalidate_tag` hides node B's L1 copy of a tagged entry (only
/// the backplane can: copies live an hour here) and leaves B's copies of
/// untagged and otherwise tagged entries alone.
async fn a_tag_invalidation_reaches_the_other_node(kind: Kind) {
    let (a_node, b_node) = nodes(kind, "l1-tag").await;
    let (a, b) = (a_node.namespace("l1"), b_node.namespace("l1"));
    a.clone()
        .tags(["user:7"])
        .unwrap()
        .put("tagged", "v".to_owned())
        .await
        .unwrap();
    a.clone()
        .tags(["user:8"])
        .unwrap()
        .put("other", "w".to_owned())
        .await
        .unwrap();
    put(&a, "plain", "x").await;
    fence(&a, &b).await;
    for (key, value) in [("tagged", "v"), ("other", "w"), ("plain", "x")] {
        assert_eq!(read(&b, key).await.as_deref(), Some(value), "{key}");
        assert_eq!(held(&b, key).as_deref(), Some(value), "B's copy of {key}");
    }
    a_node
        .default_region()
        .invalidate_tag("user:7")
        .await
        .unwrap();
    assert_eq!(held(&a, "tagged"), None, "A's own copy");
    until("B's copy of the tagged entry goes", || async {
        held(&b, "tagged").is_none()
    })
    .await;
    assert_eq!(read(&b, "tagged").await, None, "hidden in Redis too");
    assert_eq!(held(&b, "other").as_deref(), Some("w"));
    assert_eq!(held(&b, "plain").as_deref(), Some("x"));
}

/// A child process's `invalidate_tag` hides the entry in this process
/// (its L1 copy, through the backplane) and in the other child.
async fn a_tag_invalidation_in_one_process_reaches_the_other_processes(kind: Kind) {
    let config = toml(kind, &unique_prefix("l1-tag-processes"), L1);
    let parent = manager(&config).namespace("nodes");
    l1_on(&parent).await;
    let (mut c1, mut c2) = tokio::join!(Node::start(&config), Node::start(&config));
    assert_eq!(c1.send("put-tagged t v team:1").await, "ok");
    assert_eq!(c1.send("put u w").await, "ok");
    fence_child(&parent, &mut c2).await;
    assert_eq!(c2.send("get t").await, "value v");
    assert_eq!(c2.send("l1 t").await, "value v");
    until("the parent holds a copy", || async {
        read(&parent, "t").await.as_deref() == Some("v") && held(&parent, "t").is_some()
    })
    .await;
    assert_eq!(read(&parent, "u").await.as_deref(), Some("w"));

    assert_eq!(c1.send("invalidate-tag team:1").await, "ok");
    assert_eq!(c2.send("await-l1 t -").await, "ok");
    assert_eq!(c2.send("get t").await, "none");
    until("the parent's copy goes", || async {
        held(&parent, "t").is_none()
    })
    .await;
    assert_eq!(read(&parent, "t").await, None);
    assert_eq!(read(&parent, "u").await.as_deref(), Some("w"), "untagged");
}
