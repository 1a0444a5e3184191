//! Servers, configurations and a raw client for the Redis tests.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub(crate) const REDIS_DEFAULT: &str = "redis://127.0.0.1:26379/";
pub(crate) const CLUSTER_DEFAULT: &str =
    "redis://127.0.0.1:27001,redis://127.0.0.1:27002,redis://127.0.0.1:27003";

/// Which server a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Single,
    Cluster,
}

impl Kind {
    pub(crate) fn url(self) -> String {
        match self {
            Kind::Single => {
                std::env::var("TANKARD_REDIS_URL").unwrap_or_else(|_| REDIS_DEFAULT.to_owned())
            }
            Kind::Cluster => std::env::var("TANKARD_REDIS_CLUSTER_URL")
                .unwrap_or_else(|_| CLUSTER_DEFAULT.to_owned()),
        }
    }

    pub(crate) fn backend(self) -> &'static str {
        match self {
            Kind::Single => "ext:redis",
            Kind::Cluster => "ext:rediscluster",
        }
    }
}

/// A key prefix no other test or run uses.
pub(crate) fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t{}-{nanos:x}-{}/{test}/",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TOML configuration for the default region on `url`, plus `extra`
/// lines under `[cache]`.
pub(crate) fn toml_for(backend: &str, url: &str, prefix: &str, extra: &str) -> String {
    format!(
        "[cache]\ntype = \"{backend}\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\nexpire = 60\n{extra}\n"
    )
}

pub(crate) fn toml(kind: Kind, prefix: &str, extra: &str) -> String {
    toml_for(kind.backend(), &kind.url(), prefix, extra)
}

pub(crate) fn manager(toml: &str) -> tankard::CacheManager {
    tankard::CacheManager::new(tankard::Config::from_toml_str(toml).unwrap()).unwrap()
}

/// The Redis key of an entry of the default region (see the module docs of
/// `backend::redis`).
pub(crate) fn entry_key(prefix: &str, namespace: &str, key: &str) -> String {
    format!("{{{prefix}default:{namespace}}}#{key}")
}

pub(crate) fn lock_key(prefix: &str, namespace: &str, key: &str) -> String {
    format!("{{{prefix}default:{namespace}}}!lock#{key}")
}

/// A plain client of the same server, for looking behind the cache's back.
#[derive(Clone)]
pub(crate) enum Raw {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Raw {
    pub(crate) async fn connect(kind: Kind) -> Raw {
        Raw::connect_url(kind, &kind.url()).await
    }

    pub(crate) async fn connect_url(kind: Kind, url: &str) -> Raw {
        let attempt = async {
            match kind {
                Kind::Single => redis::Client::open(url)?
                    .get_multiplexed_async_connection()
                    .await
                    .map(Raw::Single),
                Kind::Cluster => redis::cluster::ClusterClient::new(url.split(','))?
                    .get_async_connection()
                    .await
                    .map(Raw::Cluster),
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(raw)) => raw,
            Ok(Err(err)) => panic!(
                "{kind:?} Redis at {url} is not answering ({err}); start it with scripts/services"
            ),
            Err(_) => panic!(
                "{kind:?} Redis at {url} did not answer within 5 s; start it with scripts/services"
            ),
        }
    }

    pub(crate) async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        self.try_query(cmd).await.unwrap()
    }

    pub(crate) async fn try_query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Raw::Single(c) => cmd.query_async(c).await,
            Raw::Cluster(c) => cmd.query_async(c).await,
        }
    }

    pub(crate) async fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    pub(crate) async fn set(&mut self, key: &str, value: &[u8]) {
        self.query::<()>(redis::cmd("SET").arg(key).arg(value))
            .await
    }

    pub(crate) async fn pttl(&mut self, key: &str) -> i64 {
        self.query(redis::cmd("PTTL").arg(key)).await
    }
}

/// A `redis-server` of our own, on a free loopback port, in its own
/// directory; killed when dropped.
pub(crate) struct PrivateServer {
    pub(crate) port: u16,
    pub(crate) args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn redis_server_bin() -> &'static str {
    if Path::new("/usr/bin/redis-server").exists() {
        "/usr/bin/redis-server"
    } else {
        "redis-server"
    }
}

impl PrivateServer {
    pub(crate) fn start(extra: &[&str]) -> PrivateServer {
        let mut server = PrivateServer {
            port: free_port(),
            args: extra.iter().map(|s| (*s).to_owned()).collect(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.spawn();
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// (Re)starts the server on its port and waits until it accepts connections.
    pub(crate) fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut args: Vec<&str> = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        args.extend(self.args.iter().map(String::as_str));
        let child = Command::new(redis_server_bin())
            .args(&args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start redis-server ({err}); install it with scripts/services")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let listen_port: u16 = self
            .args
            .iter()
            .position(|a| a == "--tls-port")
            .map(|i| self.args[i + 1].parse().unwrap())
            .unwrap_or(self.port);
        while std::net::TcpStream::connect(("127.0.0.1", listen_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills the server and waits until it is gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A stopped process must be continued to die from SIGKILL promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A creator that counts its runs and returns `value`.
pub(crate) fn counted(
    runs: &Arc<AtomicUsize>,
    value: &str,
) -> impl FnOnce() -> std::future::Ready<String> + use<> {
    let (runs, value) = (runs.clone(), value.to_owned());
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::ready(value)
    }
}
