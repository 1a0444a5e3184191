//! What the memcached tests share: the servers' addresses, a raw
//! synchronous client to look under the backend, and memcached processes
//! of the test's own for outages.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The shared servers (`scripts/services`), from `TANKARD_MEMCACHED_URL`.
pub(crate) fn url() -> String {
    std::env::var("TANKARD_MEMCACHED_URL")
        .unwrap_or_else(|_| "127.0.0.1:21211;127.0.0.1:21212;127.0.0.1:21213".to_owned())
}

/// The shared servers, each checked to answer.
pub(crate) fn servers() -> Vec<String> {
    let servers: Vec<String> = url()
        .split([';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    for server in &servers {
        let answers = Raw::connect(server).is_some_and(|mut raw| raw.version().is_some());
        assert!(
            answers,
            "memcached at {server} is not answering: run scripts/services (TANKARD_MEMCACHED_URL={})",
            url()
        );
    }
    servers
}

/// A key prefix no other test run uses, so runs never see each other's data.
pub(crate) fn unique_prefix(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t{}-{nanos:x}-{tag}:", std::process::id())
}

/// A memcached configuration (default region) with extra flat options.
pub(crate) fn config(url: &str, prefix: &str, extra: &[(&str, &str)]) -> tankard::Config {
    let mut pairs: Vec<(String, String)> = vec![
        ("cache.type".into(), "ext:memcached".into()),
        ("cache.url".into(), url.into()),
        ("cache.prefix".into(), prefix.into()),
    ];
    pairs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    tankard::Config::from_flat(pairs).expect("config")
}

/// The full key of an entry of the default region (DESIGN §6 / key.rs).
pub(crate) fn entry_key(prefix: &str, namespace: &str, key: &str) -> String {
    format!("{prefix}default:{namespace}#{key}")
}

/// The key of the creation lock of an entry of the default region.
pub(crate) fn lock_key(prefix: &str, namespace: &str, key: &str) -> String {
    format!("{prefix}default:{namespace}!lock#{key}")
}

/// A raw text-protocol connection: the test's view under the backend.
pub(crate) struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    pub(crate) fn connect(addr: &str) -> Option<Raw> {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        Some(Raw {
            reader: BufReader::new(stream),
        })
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader
            .get_mut()
            .write_all(bytes)
            .expect("write to memcached");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("read from memcached");
        line.trim_end().to_owned()
    }

    pub(crate) fn version(&mut self) -> Option<String> {
        self.reader.get_mut().write_all(b"version\r\n").ok()?;
        let mut line = String::new();
        self.reader.read_line(&mut line).ok()?;
        line.starts_with("VERSION").then_some(line)
    }

    pub(crate) fn set(&mut self, key: &str, data: &[u8], exptime: u32) {
        let mut request = format!("set {key} 0 {exptime} {}\r\n", data.len()).into_bytes();
        request.extend_from_slice(data);
        request.extend_from_slice(b"\r\n");
        self.send(&request);
        assert_eq!(self.line(), "STORED");
    }

    pub(crate) fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.send(format!("get {key}\r\n").as_bytes());
        let header = self.line();
        if header == "END" {
            return None;
        }
        let len: usize = header.rsplit(' ').next().unwrap().parse().unwrap();
        let mut data = vec![0; len + 2];
        self.reader.read_exact(&mut data).unwrap();
        data.truncate(len);
        assert_eq!(self.line(), "END");
        Some(data)
    }

    /// One figure of the server's `stats`.
    pub(crate) fn stat(&mut self, name: &str) -> u64 {
        self.send(b"stats\r\n");
        let mut found = None;
        loop {
            let line = self.line();
            if line == "END" {
                break;
            }
            if let Some(value) = line.strip_prefix(&format!("STAT {name} ")) {
                found = Some(value.parse().unwrap());
            }
        }
        found.unwrap_or_else(|| panic!("no stat {name}"))
    }

    pub(crate) fn delete(&mut self, key: &str) {
        self.send(format!("delete {key}\r\n").as_bytes());
        self.line();
    }

    /// The item's remaining server lifetime in seconds (`me`, memcached
    /// ≥ 1.6): `Some(-1)` for none, `None` if there is no such item.
    pub(crate) fn remaining_secs(&mut self, key: &str) -> Option<i64> {
        self.send(format!("me {key}\r\n").as_bytes());
        let line = self.line();
        if line == "EN" {
            return None;
        }
        let exp = line
            .split(' ')
            .find_map(|field| field.strip_prefix("exp="))
            .unwrap_or_else(|| panic!("unexpected `me` reply {line:?}"));
        let exp: i64 = exp.parse().unwrap();
        // memcached 1.6.18 prints the remaining time negated; later
        // versions print it as is. -1 means "no expiry" in both.
        Some(if exp == -1 { -1 } else { exp.abs() })
    }
}

/// Every server holding `key`, with its value.
pub(crate) fn find(servers: &[String], key: &str) -> Vec<(String, Vec<u8>)> {
    servers
        .iter()
        .filter_map(|s| {
            let value = Raw::connect(s).expect("raw connect").get(key)?;
            Some((s.clone(), value))
        })
        .collect()
}

fn memcached_binary() -> &'static str {
    let path = "/usr/bin/memcached";
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: run scripts/services (it installs memcached)"
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// memcached processes of the test's own, on free ports. Dropping it
/// resumes and kills them all, also when the test fails.
pub(crate) struct OwnServers {
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    extra_args: Vec<String>,
}

impl OwnServers {
    pub(crate) fn start(count: usize) -> OwnServers {
        OwnServers::start_with(count, &[])
    }

    /// Starts `count` servers with extra command-line options (such as
    /// `-I 16m` for items over memcached's default 1 MiB).
    pub(crate) fn start_with(count: usize, extra_args: &[&str]) -> OwnServers {
        let mut own = OwnServers {
            ports: (0..count).map(|_| free_port()).collect(),
            children: (0..count).map(|_| None).collect(),
            extra_args: extra_args.iter().map(|&a| a.to_owned()).collect(),
        };
        for i in 0..count {
            own.restart(i);
        }
        own
    }

    pub(crate) fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(";")
    }

    pub(crate) fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    /// Starts server `i` (again) on its port and waits until it answers.
    pub(crate) fn restart(&mut self, i: usize) {
        let port = self.ports[i].to_string();
        let mut command = Command::new(memcached_binary());
        command
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "0",
                "-m",
                "16",
                "-t",
                "2",
            ])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            command.args(["-u", "root"]);
        }
        self.children[i] = Some(command.spawn().expect("start memcached"));
        let started = Instant::now();
        while Raw::connect(&self.addr(i)).is_none_or(|mut r| r.version().is_none()) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "memcached on port {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills server `i` (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            signal(child.id(), "-CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes server `i` (SIGSTOP): connections are accepted by the kernel
    /// but nothing is answered.
    pub(crate) fn freeze(&self, i: usize) {
        if let Some(child) = &self.children[i] {
            signal(child.id(), "-STOP");
        }
    }

    pub(crate) fn thaw(&self, i: usize) {
        if let Some(child) = &self.children[i] {
            signal(child.id(), "-CONT");
        }
    }
}

impl Drop for OwnServers {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}
