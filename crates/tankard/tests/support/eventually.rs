//! Waiting for work that runs in a task of its own (a background refresh,
//! a backplane message): poll a condition, fail the test after a deadline.

use std::time::{Duration, Instant};

/// Polls `done` (sleeping a millisecond between tries) until it holds, or
/// fails the test after 10 s, naming `what` it waited for.
pub(crate) async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
