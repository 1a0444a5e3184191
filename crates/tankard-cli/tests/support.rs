//! Running the `tankard` binary: the demo as a child process, and the
//! other commands to completion.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub(crate) const TANKARD: &str = env!("CARGO_BIN_EXE_tankard");

/// The seed post's config, typo included.
pub(crate) fn seed_ini() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed.ini")
}

/// `tankard` in `dir`, with none of the variables it reads (the config
/// file's and the log level's) inherited from the test's environment.
pub(crate) fn command(dir: &Path) -> Command {
    let mut command = Command::new(TANKARD);
    command
        .current_dir(dir)
        .env_remove("TANKARD_CONFIG")
        .env_remove("RUST_LOG");
    command
}

/// Runs `tankard ARGS` in `dir` to completion.
pub(crate) fn tankard(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).output().expect("run tankard")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `tankard demo` process on a free port, killed on drop.
pub(crate) struct Demo {
    child: Child,
    pub(crate) url: String,
    pub(crate) banner: String,
    client: reqwest::Client,
}

impl Demo {
    /// Starts the demo in `dir` with `--bind 127.0.0.1:0 --work-ms WORK`
    /// and `extra` arguments, and waits for the URL it prints.
    pub(crate) fn start(dir: &Path, work_ms: u64, extra: &[&str]) -> Demo {
        let mut child = command(dir)
            .args([
                "demo",
                "--bind",
                "127.0.0.1:0",
                "--work-ms",
                &work_ms.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tankard demo");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = match lines.next() {
            Some(Ok(line)) => line,
            _ => {
                let mut err = String::new();
                let _ = child
                    .stderr
                    .take()
                    .expect("stderr")
                    .read_to_string(&mut err);
                let status = child.wait().expect("wait");
                panic!("the demo did not start ({status}): {err}");
            }
        };
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in the demo's first line: {first:?}"))
            .trim_end_matches('/')
            .to_owned();
        let mut banner = first;
        for line in lines.by_ref().take(4).map_while(Result::ok) {
            banner.push('\n');
            banner.push_str(&line);
        }
        // Keep draining stdout so the demo never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Demo {
            child,
            url,
            banner,
            client: reqwest::Client::new(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let res = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = res.status().as_u16();
        (status, res.text().await.expect("body"))
    }

    /// GET `path`: (status, `X-Cache`, body).
    pub(crate) async fn get_x_cache(&self, path: &str) -> (u16, Option<String>, String) {
        let res = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = res.status().as_u16();
        let x_cache = res
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, x_cache, res.text().await.expect("body"))
    }

    pub(crate) async fn get_with_type(&self, path: &str) -> (u16, String, String) {
        let res = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = res.status().as_u16();
        let kind = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, kind, res.text().await.expect("body"))
    }

    pub(crate) async fn post(&self, path: &str) -> (u16, String) {
        let res = self
            .client
            .post(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = res.status().as_u16();
        (status, res.text().await.expect("body"))
    }

    /// `/stats` as JSON.
    pub(crate) async fn stats(&self) -> serde_json::Value {
        let (status, body) = self.get("/stats").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/stats is not JSON ({e}): {body}"))
    }

    /// One counter of one region in `/stats`.
    pub(crate) async fn counter(&self, region: &str, counter: &str) -> u64 {
        let stats = self.stats().await;
        stats["regions"][region][counter]
            .as_u64()
            .unwrap_or_else(|| panic!("no {region}.{counter} in {stats}"))
    }

    /// Fires `n` concurrent GETs of `path` and returns the bodies.
    pub(crate) async fn burst(&self, path: &str, n: usize) -> Vec<String> {
        let requests: Vec<_> = (0..n)
            .map(|_| {
                let (client, url) = (self.client.clone(), format!("{}{path}", self.url));
                tokio::spawn(async move {
                    let res = client.get(url).send().await.expect("burst request");
                    assert_eq!(res.status().as_u16(), 200);
                    res.text().await.expect("body")
                })
            })
            .collect();
        let mut bodies = Vec::new();
        for request in requests {
            bodies.push(request.await.expect("burst task"));
        }
        bodies
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TOML config with `long_term` in files under `dir` and `short_term`
/// as given (TOML lines of its table).
pub(crate) fn config(dir: &Path, short_term: &str) -> PathBuf {
    let path = dir.join("tankard.toml");
    let text = format!(
        "[cache]\nregions = [\"short_term\", \"long_term\"]\n\
         type = \"file\"\ndata_dir = \"{data}\"\nlock_dir = \"{lock}\"\n\
         [cache.long_term]\nexpire = 86400\n\
         [cache.short_term]\n{short_term}\n",
        data = dir.join("cache/data").display(),
        lock = dir.join("cache/lock").display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}
