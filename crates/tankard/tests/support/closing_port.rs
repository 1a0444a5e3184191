//! The port of a dead server, answered by something that counts: every
//! connection is accepted and closed at once (the client reads EOF, as
//! from a server that crashed behind a proxy), and counted. The count is
//! how often the client tried to reach the server, seen from the network.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct ClosingPort {
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ClosingPort {
    /// Listens on `port` of 127.0.0.1, once the dead server's socket is gone.
    pub(crate) async fn bind(port: u16) -> ClosingPort {
        let started = Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => break listener,
                Err(err) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "cannot listen on the dead server's port {port}: {err}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let accepted = accepted.clone();
            async move {
                while let Ok((socket, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    drop(socket);
                }
            }
        });
        ClosingPort { accepted, task }
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening, so a server can take the port again.
    pub(crate) async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
