//! A cache node in a process of its own: the test binary re-executes
//! itself as a child (the ignored test `node_child`), opens a manager on
//! the configuration it is given, turns its L1 on and then answers line
//! commands on stdin, one reply line each, so a test can drive several
//! real processes sharing one region and look into each one's L1.
//!
//! Commands, all on the default region's namespace `nodes` (keys and
//! values are single words; `-` stands for "no value"):
//!
//! | command | reply |
//! |---|---|
//! | `get K` | `value V` or `none` (a normal read: L1, then the store) |
//! | `l1 K` | `value V` or `none`: the L1 alone (`try_get_fresh`) |
//! | `peek K` | `fresh V`, `stale V` or `none` |
//! | `put K V` | `ok` |
//! | `put-tagged K V T` | `ok` (the entry carries tag `T`) |
//! | `remove K` | `removed true` or `removed false` |
//! | `clear` | `ok` (the namespace) |
//! | `invalidate soft` / `invalidate hard` | `ok` (the region) |
//! | `invalidate-tag T` | `ok` (the region's entries tagged `T`) |
//! | `await K V` | `ok` once `get K` returns V (`-`: none), or `timeout, last …` after 10 s |
//! | `await-l1 K V` | `ok` once `l1 K` answers V (`-`: none), or `timeout, last …` after 10 s |
//!
//! Use from a test binary's `main.rs`:
//!
//! ```ignore
//! #[path = "../support/node.rs"]
//! mod node;
//! node::node_entry!();
//! ```

#![allow(dead_code, unreachable_pub)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long a node waits for a value (`await`) and the parent for a reply.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Every reply line starts with this (libtest may print before it on the
/// same line).
const REPLY: &str = "node:";

/// Declares the child's entry point in the test binary that uses this module.
#[macro_export]
macro_rules! node_entry {
    () => {
        /// Entry point of the child processes of `node::Node`: run by the
        /// parent with `--ignored --exact node_child`, never alone.
        #[test]
        #[ignore = "child process of the multi-node tests; started by them"]
        fn node_child() {
            node::run_child();
        }
    };
}
pub use node_entry;

/// A running node process; killed when dropped.
#[derive(Debug)]
pub struct Node {
    child: Child,
    stdin: ChildStdin,
    replies: Lines<BufReader<ChildStdout>>,
}

impl Node {
    /// Starts a node on `config_toml` and waits until its L1 is on (its
    /// backplane subscription is live, if it has one).
    pub async fn start(config_toml: &str) -> Node {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([
                "--ignored",
                "--exact",
                "node_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TANKARD_NODE_CONFIG", config_toml)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take().expect("node stdin");
        let replies = BufReader::new(child.stdout.take().expect("node stdout")).lines();
        let mut node = Node {
            child,
            stdin,
            replies,
        };
        let ready = node.reply().await;
        assert_eq!(ready, "ready", "the node did not start");
        node
    }

    /// Sends one command and returns its reply (without the `node:` mark).
    pub async fn send(&mut self, command: &str) -> String {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("write to node");
        self.stdin.flush().await.expect("write to node");
        self.reply().await
    }

    async fn reply(&mut self) -> String {
        // A node answers within its own deadline; the margin covers a slow
        // start of the process.
        let wait = DEADLINE * 3;
        loop {
            let line = tokio::time::timeout(wait, self.replies.next_line())
                .await
                .unwrap_or_else(|_| panic!("the node said nothing for {wait:?}"))
                .expect("read node");
            let Some(line) = line else {
                let status = self.child.wait().await.expect("wait node");
                panic!("the node exited ({status})");
            };
            if let Some(at) = line.find(REPLY) {
                return line[at + REPLY.len()..].to_owned();
            }
        }
    }
}

/// The child's side: open the manager, turn the L1 on, say `ready`, then
/// answer commands until stdin closes.
pub fn run_child() {
    let config = std::env::var("TANKARD_NODE_CONFIG")
        .unwrap_or_else(|_| panic!("TANKARD_NODE_CONFIG not set: run only by Node::start"));
    let config = tankard::Config::from_toml_str(&config).expect("config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let manager = Arc::new(tankard::CacheManager::new(config).expect("manager"));
        let ns = manager.namespace("nodes");
        l1_on(&ns).await;
        println!("{REPLY}ready");
        let mut commands = BufReader::new(tokio::io::stdin()).lines();
        while let Some(command) = commands.next_line().await.expect("read stdin") {
            let reply = answer(&manager, &ns, &command).await;
            println!("{REPLY}{reply}");
        }
    });
}

/// Reads (which starts the backplane's listener) until a read keeps an L1
/// copy: from then on the L1 is on.
async fn l1_on(ns: &tankard::Cache) {
    let key = format!("node-warm-{}", std::process::id());
    ns.put(&key, 0u8).await.expect("put");
    let deadline = Instant::now() + DEADLINE;
    loop {
        ns.get::<u8>(&key).await.expect("get");
        if ns.try_get_fresh::<u8>(&key).is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "the node's L1 never came on");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn value(found: Option<Arc<String>>) -> String {
    match found {
        Some(v) => format!("value {v}"),
        None => "none".to_owned(),
    }
}

async fn answer(manager: &tankard::CacheManager, ns: &tankard::Cache, command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words[..] {
        ["get", key] => value(ns.get::<String>(key).await.expect("get")),
        ["l1", key] => value(ns.try_get_fresh::<String>(key)),
        ["peek", key] => match ns.peek::<String>(key).await.expect("peek") {
            Some((v, true)) => format!("fresh {v}"),
            Some((v, false)) => format!("stale {v}"),
            None => "none".to_owned(),
        },
        ["put", key, v] => {
            ns.put(key, v.to_owned()).await.expect("put");
            "ok".to_owned()
        }
        ["put-tagged", key, v, tag] => {
            let tagged = ns.clone().tags([tag]).expect("tag");
            tagged.put(key, v.to_owned()).await.expect("put");
            "ok".to_owned()
        }
        ["invalidate-tag", tag] => {
            manager
                .default_region()
                .invalidate_tag(tag)
                .await
                .expect("invalidate_tag");
            "ok".to_owned()
        }
        ["remove", key] => format!("removed {}", ns.remove(key).await.expect("remove")),
        ["clear"] => {
            ns.clear().await.expect("clear");
            "ok".to_owned()
        }
        ["invalidate", how] => {
            let how = match how {
                "soft" => tankard::Invalidation::Soft,
                "hard" => tankard::Invalidation::Hard,
                other => return format!("error: invalidate {other}?"),
            };
            manager
                .default_region()
                .invalidate(how)
                .await
                .expect("invalidate");
            "ok".to_owned()
        }
        ["await-l1", key, want] => {
            let want = (want != "-").then_some(want);
            let deadline = Instant::now() + DEADLINE;
            loop {
                let got = ns.try_get_fresh::<String>(key);
                if got.as_deref().map(String::as_str) == want {
                    return "ok".to_owned();
                }
                if Instant::now() >= deadline {
                    return format!("timeout, last {}", value(got));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        ["await", key, want] => {
            let want = (want != "-").then_some(want);
            let deadline = Instant::now() + DEADLINE;
            loop {
                let got = ns.get::<String>(key).await.expect("get");
                if got.as_deref().map(String::as_str) == want {
                    return "ok".to_owned();
                }
                if Instant::now() >= deadline {
                    return format!("timeout, last {}", value(got));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        _ => format!("error: unknown command {command:?}"),
    }
}
