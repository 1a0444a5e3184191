//! The Redis and Redis Cluster backends against real servers: the ones
//! `scripts/services` starts (Redis on 26379, the cluster on 27001-27003;
//! override with TANKARD_REDIS_URL / TANKARD_REDIS_CLUSTER_URL), and
//! private `redis-server` processes the outage tests start, stop and hang
//! themselves.
//!
//! Every behaviour test runs against both kinds through [`both!`], and
//! every test writes under its own key prefix, so runs never see each
//! other's data.

// Tests may unwrap: a panic is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/stampede.rs"]
mod stampede;
stampede::child_entry!();
#[path = "../support/node.rs"]
mod node;
node::node_entry!();

mod common;

/// Declares each listed test (an `async fn(Kind)` in scope) twice: as
/// `<name>::standalone` and `<name>::cluster`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn standalone() {
                    super::$name($crate::common::Kind::Single).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() {
                    super::$name($crate::common::Kind::Cluster).await
                }
            }
        )*
    };
}

mod api;
mod breaker;
mod faults;
mod l1;
mod locks;
mod multiprocess;
mod outage;
