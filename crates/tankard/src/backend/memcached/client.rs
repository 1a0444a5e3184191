//! A small async memcached client on tokio: the text protocol's `get`,
//! `gets`, `set`, `add`, `cas`, `delete`, `incr` and `touch`, plus the meta
//! commands `md … C<cas>` for the lock's compare-and-delete and `mg … t`
//! for a lock's remaining lifetime.
//!
//! No value longer than the client's read limit (the region's
//! `max_entry_bytes`) is ever read into memory: the `VALUE` header gives
//! its length first, and the value is skipped instead (see
//! [`Item::oversized`]).
//!
//! Per server it keeps a bounded pool of plain TCP connections: a request
//! checks one out, writes, reads the reply and puts it back. A request
//! whose future is dropped mid-exchange (a timeout, a cancelled caller)
//! drops its connection instead of returning it, so a half-read reply can
//! never be paired with the next request.
//!
//! Keys are spread over the servers by rendezvous hashing over the servers
//! currently believed up. A server that fails (refused, reset, timed out) is
//! marked down for [`RETRY_AFTER`]; its keys go to the server with the next
//! highest score until then, and the failed request is retried there
//! within the same deadline.

use std::borrow::Cow;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};

use crate::error::{Error, Result};
use crate::key;
use crate::sync::lock;

const BACKEND: &str = "memcached";

/// memcached's limit on key length, in bytes.
pub(crate) const MAX_KEY: usize = 250;
/// How long a failed server is skipped before it is tried again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Connections per server and process: enough for the concurrency one
/// process drives, far below memcached's default `-c 1024`.
const MAX_CONNECTIONS: usize = 128;
/// A reply line longer than this is not memcached talking.
const MAX_LINE: usize = 2048;
/// The most the client reads into memory for one value, whatever
/// `max_entry_bytes` says: memcached's `-I` tops out at 1 GiB, so no real
/// server sends more.
const MAX_VALUE: u64 = 1 << 30;
/// A value over the read limit is drained (read and thrown away in
/// buffer-sized chunks) when at most this long, so the connection stays in
/// the pool; a longer one closes the connection instead, which costs one
/// reconnect where draining would cost its transfer time (at 1 Gbit/s,
/// 16 MiB is about 130 ms, well inside the default 2 s `timeout`; a 1 GiB
/// value would overrun it and get the server marked down).
const DRAIN_MAX: u64 = 16 << 20;
/// A deadline this far ahead stands for "never" when a configured duration
/// is too long for the clock (tokio's own far future is 30 years too).
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// FNV-1a, 64 bits: a hash every process computes alike, whatever its Rust
/// version (std's `DefaultHasher` promises no such thing).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// SplitMix64's finalizer: spreads a combined hash over all 64 bits.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether memcached accepts `byte` in a key: no whitespace, no control
/// characters (bytes of UTF-8 sequences are fine).
fn key_byte_ok(byte: u8) -> bool {
    byte > b' ' && byte != 0x7f
}

/// The memcached key for one of Tankard's keys: the key itself when
/// memcached accepts it, otherwise `{prefix}#{blake3 hex}` (the format of
/// the core's long-key hashing, see `key.rs`), or `#{blake3 hex}` when the
/// prefix itself is unusable.
pub(crate) fn memcached_key<'a>(key: &'a str, prefix: &str) -> Cow<'a, str> {
    if key.len() <= MAX_KEY && key.bytes().all(key_byte_ok) {
        return Cow::Borrowed(key);
    }
    let prefix = if prefix.len() + 65 <= MAX_KEY && prefix.bytes().all(key_byte_ok) {
        prefix
    } else {
        ""
    };
    Cow::Owned(key::limit_length(prefix, key.to_owned(), 0))
}

/// memcached's `exptime` for a lifetime: 0 for none; otherwise whole
/// seconds rounded up plus one, because the server's clock ticks once a
/// second and an item set with exptime `n` may expire up to a second
/// early; beyond 30 days the protocol wants an absolute unix time.
pub(crate) fn exptime(ttl: Option<Duration>, now_unix: u64) -> u32 {
    const THIRTY_DAYS: u64 = 30 * 24 * 3600;
    let Some(ttl) = ttl else { return 0 };
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .saturating_add(1);
    if secs <= THIRTY_DAYS {
        return secs as u32;
    }
    // memcached parses exptime as a signed 32-bit number: past 2038 the
    // only representable choice is "no expiry"; the entry's own header
    // still expires it, the server merely keeps it until evicted.
    match now_unix.checked_add(secs) {
        Some(at) if at <= i32::MAX as u64 => at as u32,
        _ => 0,
    }
}

/// The instant `after` from now: a far future one when `after` is too long
/// for the clock (`timeout = 10000000000000000000` is a valid config and
/// must not panic with "overflow when adding duration to instant").
pub(crate) fn deadline_in(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// The current unix time in seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A key and the hash that places it on a server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keyed<'a> {
    pub(crate) key: &'a str,
    pub(crate) route: u64,
}

impl<'a> Keyed<'a> {
    /// A key placed by its own hash.
    pub(crate) fn own(key: &'a str) -> Keyed<'a> {
        Keyed {
            key,
            route: fnv1a(&[key.as_bytes()]),
        }
    }
}

/// The storage verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    Set,
    Add,
    /// Store only if the item's CAS value is still this one.
    Cas(u64),
}

/// One request to one server.
#[derive(Debug)]
pub(crate) enum Request<'a> {
    /// `get k1 k2 …`: the reply lists values in the order of `keys`.
    Get(&'a [&'a str]),
    /// `gets k`: the value with its CAS value.
    Gets(&'a str),
    Store {
        verb: Verb,
        key: &'a str,
        exptime: u32,
        data: &'a [u8],
    },
    Delete(&'a str),
    /// `md k C<cas>`: delete only if the CAS value still matches.
    DeleteIfCas(&'a str, u64),
    Incr(&'a str, u64),
    /// `touch k <exptime>`: a new lifetime, value untouched.
    Touch(&'a str, u32),
    /// `mg k t`: the item's remaining lifetime (memcached ≥ 1.6).
    Ttl(&'a str),
}

/// A stored value.
#[derive(Debug)]
pub(crate) struct Item {
    /// The value; empty when it was over the read limit (see `oversized`).
    pub(crate) data: Vec<u8>,
    pub(crate) cas: u64,
    /// The value's length when it was over the client's read limit: it was
    /// skipped, never read into memory. An empty `data` then reads as
    /// garbage everywhere (a counter of 0, a lock token nobody has).
    pub(crate) oversized: Option<u64>,
}

/// What a server answered.
#[derive(Debug)]
pub(crate) enum Reply {
    /// One slot per requested key, in request order.
    Values(Vec<Option<Item>>),
    Stored,
    NotStored,
    /// A `cas` or `md C` found another CAS value.
    Exists,
    NotFound,
    Deleted,
    /// `incr` succeeded (the new value is of no use to the cache).
    Incremented,
    /// `incr` found a value that is not a decimal number.
    NonNumeric,
    /// `touch` succeeded.
    Touched,
    /// `mg k t`: seconds left, -1 for an item without expiry.
    Ttl(i64),
    /// `ERROR`: the server does not know the command (memcached < 1.6 for `md`).
    Unsupported,
}

/// Why an exchange with one server failed.
#[derive(Debug)]
enum Fault {
    /// Unreachable, refused or dropped the connection: mark it down.
    Down(io::Error),
    /// No answer before the deadline: mark it down.
    Timeout,
    /// Every connection to the server was busy until the deadline.
    Busy,
    /// The server answered with an error line; the connection is still good.
    Refused(String),
    /// The reply did not parse; the connection is dropped.
    Protocol(String),
}

fn protocol(message: impl Into<String>) -> Fault {
    Fault::Protocol(message.into())
}

/// One connection: a buffered reader over the socket and a reusable
/// request buffer.
struct Conn {
    io: BufReader<TcpStream>,
    out: Vec<u8>,
    line: Vec<u8>,
    /// False once the rest of a reply was left unread (an oversized value
    /// not drained): the connection must then never serve another request.
    reusable: bool,
}

impl Conn {
    async fn dial(addr: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            io: BufReader::with_capacity(16 * 1024, stream),
            out: Vec::with_capacity(512),
            line: Vec::with_capacity(128),
            reusable: true,
        })
    }

    fn encode(&mut self, request: &Request<'_>) {
        use std::io::Write as _;
        let out = &mut self.out;
        out.clear();
        // Writes into a Vec cannot fail.
        let _ = match request {
            Request::Get(keys) => {
                out.extend_from_slice(b"get");
                for key in *keys {
                    out.push(b' ');
                    out.extend_from_slice(key.as_bytes());
                }
                Ok(())
            }
            Request::Gets(key) => write!(out, "gets {key}"),
            Request::Store {
                verb,
                key,
                exptime,
                data,
            } => {
                let len = data.len();
                let r = match verb {
                    Verb::Set => write!(out, "set {key} 0 {exptime} {len}"),
                    Verb::Add => write!(out, "add {key} 0 {exptime} {len}"),
                    Verb::Cas(cas) => write!(out, "cas {key} 0 {exptime} {len} {cas}"),
                };
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(data);
                r
            }
            Request::Delete(key) => write!(out, "delete {key}"),
            Request::DeleteIfCas(key, cas) => write!(out, "md {key} C{cas}"),
            Request::Incr(key, by) => write!(out, "incr {key} {by}"),
            Request::Touch(key, exptime) => write!(out, "touch {key} {exptime}"),
            Request::Ttl(key) => write!(out, "mg {key} t"),
        };
        out.extend_from_slice(b"\r\n");
    }

    /// Reads one `\r\n`-terminated line into `self.line`, without the
    /// terminator; refuses lines longer than [`MAX_LINE`].
    async fn read_line(&mut self) -> Result<(), Fault> {
        self.line.clear();
        loop {
            let available = self.io.fill_buf().await.map_err(Fault::Down)?;
            if available.is_empty() {
                return Err(Fault::Down(io::ErrorKind::UnexpectedEof.into()));
            }
            if let Some(end) = available.iter().position(|&b| b == b'\n') {
                self.line.extend_from_slice(&available[..end]);
                self.io.consume(end + 1);
                break;
            }
            let n = available.len();
            self.line.extend_from_slice(available);
            self.io.consume(n);
            if self.line.len() > MAX_LINE {
                return Err(protocol("reply line too long"));
            }
        }
        if self.line.pop() != Some(b'\r') {
            return Err(protocol("reply line not terminated by CRLF"));
        }
        Ok(())
    }

    /// Sends a request and reads its whole reply; values longer than
    /// `limit` are skipped, not read.
    async fn call(&mut self, request: &Request<'_>, limit: u64) -> Result<Reply, Fault> {
        self.encode(request);
        self.io
            .get_mut()
            .write_all(&self.out)
            .await
            .map_err(Fault::Down)?;
        match request {
            Request::Get(keys) => self.read_values(keys, false, limit).await,
            Request::Gets(key) => self.read_values(&[key], true, limit).await,
            _ => {
                self.read_line().await?;
                self.status(request)
            }
        }
    }

    /// Interprets a one-line reply.
    fn status(&self, request: &Request<'_>) -> Result<Reply, Fault> {
        let line = self.line.as_slice();
        Ok(match line {
            b"STORED" => Reply::Stored,
            b"NOT_STORED" => Reply::NotStored,
            b"EXISTS" | b"EX" => Reply::Exists,
            b"NOT_FOUND" | b"NF" | b"EN" => Reply::NotFound,
            b"DELETED" | b"HD" => Reply::Deleted,
            b"ERROR" => Reply::Unsupported,
            b"TOUCHED" => Reply::Touched,
            // memcached's words for `incr` on anything but a decimal number
            // that fits 64 bits: a reply, not a failure, because the caller
            // repairs the counter.
            b"CLIENT_ERROR cannot increment or decrement non-numeric value"
                if matches!(request, Request::Incr(..)) =>
            {
                Reply::NonNumeric
            }
            _ => {
                if let Some(message) = error_line(line) {
                    return Err(Fault::Refused(message));
                }
                if let (Request::Ttl(_), Some(flags)) = (request, line.strip_prefix(b"HD")) {
                    return ttl_flag(flags).map(Reply::Ttl).ok_or_else(|| {
                        protocol(format!("no TTL in {:?}", String::from_utf8_lossy(line)))
                    });
                }
                match (request, parse_u64(line)) {
                    (Request::Incr(..), Some(_)) => Reply::Incremented,
                    _ => {
                        return Err(protocol(format!(
                            "unexpected reply {:?}",
                            String::from_utf8_lossy(line)
                        )));
                    }
                }
            }
        })
    }

    /// Reads `VALUE` blocks up to `END`, placing each in its key's slot.
    ///
    /// A value longer than `limit` is never held in memory: its slot gets
    /// an [`Item::oversized`] and the bytes are drained through the read
    /// buffer, or, past [`DRAIN_MAX`], left unread and the connection
    /// retired. Only a value that is the last key asked for can be left
    /// unread (nothing else of the reply can follow it); otherwise the
    /// reply fails, since the keys after it would read as missing.
    async fn read_values(
        &mut self,
        keys: &[&str],
        with_cas: bool,
        limit: u64,
    ) -> Result<Reply, Fault> {
        let mut slots: Vec<Option<Item>> = keys.iter().map(|_| None).collect();
        loop {
            self.read_line().await?;
            if self.line == b"END" {
                return Ok(Reply::Values(slots));
            }
            if let Some(message) = error_line(&self.line) {
                return Err(Fault::Refused(message));
            }
            let header = parse_value_header(&self.line, with_cas).ok_or_else(|| {
                protocol(format!(
                    "unexpected reply {:?}",
                    String::from_utf8_lossy(&self.line)
                ))
            })?;
            let slot = keys
                .iter()
                .position(|k| k.as_bytes() == &self.line[6..6 + header.key_len])
                .ok_or_else(|| protocol("value for a key that was not asked for"))?;
            let mut item = Item {
                data: Vec::new(),
                cas: header.cas,
                oversized: None,
            };
            let within_limit = usize::try_from(header.len)
                .ok()
                .filter(|_| header.len <= limit.min(MAX_VALUE));
            match within_limit {
                Some(len) => {
                    let mut data = vec![0; len + 2];
                    self.io.read_exact(&mut data).await.map_err(Fault::Down)?;
                    if !data.ends_with(b"\r\n") {
                        return Err(protocol("value not terminated by CRLF"));
                    }
                    data.truncate(len);
                    item.data = data;
                }
                None if header.len <= DRAIN_MAX => {
                    self.drain(header.len).await?;
                    let mut end = [0; 2];
                    self.io.read_exact(&mut end).await.map_err(Fault::Down)?;
                    if end != *b"\r\n" {
                        return Err(protocol("value not terminated by CRLF"));
                    }
                    item.oversized = Some(header.len);
                }
                None if slot + 1 == keys.len() => {
                    self.reusable = false;
                    item.oversized = Some(header.len);
                    slots[slot] = Some(item);
                    return Ok(Reply::Values(slots));
                }
                None => {
                    return Err(protocol(format!(
                        "value of {} bytes before other keys' values; too long to drain",
                        header.len
                    )));
                }
            }
            slots[slot] = Some(item);
        }
    }

    /// Reads and discards `len` bytes, one buffer at a time.
    async fn drain(&mut self, mut len: u64) -> Result<(), Fault> {
        while len > 0 {
            let available = self.io.fill_buf().await.map_err(Fault::Down)?;
            if available.is_empty() {
                return Err(Fault::Down(io::ErrorKind::UnexpectedEof.into()));
            }
            let take = available
                .len()
                .min(usize::try_from(len).unwrap_or(usize::MAX));
            self.io.consume(take);
            len -= take as u64;
        }
        Ok(())
    }
}

/// The `t<seconds>` flag of a meta reply's flags.
fn ttl_flag(flags: &[u8]) -> Option<i64> {
    flags
        .split(|&b| b == b' ')
        .find_map(|flag| flag.strip_prefix(b"t"))
        .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
}

/// `CLIENT_ERROR …` or `SERVER_ERROR …`: the message.
fn error_line(line: &[u8]) -> Option<String> {
    ["CLIENT_ERROR", "SERVER_ERROR"].iter().find_map(|tag| {
        line.strip_prefix(tag.as_bytes())
            .map(|rest| String::from_utf8_lossy(rest).trim().to_owned())
    })
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

struct ValueHeader {
    key_len: usize,
    len: u64,
    cas: u64,
}

/// `VALUE <key> <flags> <bytes>[ <cas>]`.
fn parse_value_header(line: &[u8], with_cas: bool) -> Option<ValueHeader> {
    let rest = line.strip_prefix(b"VALUE ")?;
    let mut parts = rest.split(|&b| b == b' ');
    let key = parts.next()?;
    let _flags = parse_u64(parts.next()?)?;
    let len = parse_u64(parts.next()?)?;
    let cas = if with_cas {
        parse_u64(parts.next()?)?
    } else {
        0
    };
    Some(ValueHeader {
        key_len: key.len(),
        len,
        cas,
    })
}

/// One server: its address, idle connections and health.
struct Server {
    addr: String,
    seed: u64,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
    /// Milliseconds since the client's epoch until which the server is
    /// skipped; 0 = up.
    down_until_ms: AtomicU64,
}

/// A pooled, hashing, failure-aware client for a list of servers.
pub(crate) struct Client {
    servers: Box<[Server]>,
    epoch: Instant,
    /// Values longer than this are skipped, not read (`max_entry_bytes`).
    read_limit: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "servers",
                &self.servers.iter().map(|s| &s.addr).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `servers` (`host:port` each, at least one; the
    /// store's options have checked them) that reads no value longer than
    /// `read_limit` bytes. Connects lazily: building one never fails on a
    /// server that is down.
    pub(crate) fn new(servers: &[String], read_limit: u64) -> Client {
        let servers: Box<[Server]> = servers
            .iter()
            .map(|addr| Server {
                seed: fnv1a(&[addr.as_bytes()]),
                addr: addr.clone(),
                idle: Mutex::new(Vec::new()),
                slots: Semaphore::new(MAX_CONNECTIONS),
                down_until_ms: AtomicU64::new(0),
            })
            .collect();
        Client {
            servers,
            epoch: Instant::now(),
            read_limit,
        }
    }

    fn now_ms(&self) -> u64 {
        // +1 so that "down until 0" can mean "up" from the first instant.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn mark_down(&self, server: usize) {
        let until = self.now_ms() + RETRY_AFTER.as_millis() as u64;
        self.servers[server]
            .down_until_ms
            .store(until, Ordering::Relaxed);
    }

    /// The up server with the highest rendezvous score for `route`.
    /// Removing a server moves only the keys it held; every process with
    /// the same server list (in any order) agrees on the placement.
    fn pick(&self, route: u64) -> Option<usize> {
        let now = self.now_ms();
        let mut best: Option<(usize, u64)> = None;
        for (i, server) in self.servers.iter().enumerate() {
            if server.down_until_ms.load(Ordering::Relaxed) > now {
                continue;
            }
            let score = mix(route ^ server.seed);
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }

    fn all_down(&self) -> Error {
        Error::backend(
            BACKEND,
            format!(
                "no server is reachable ({}); each failed server is retried {} ms after its failure",
                self.servers
                    .iter()
                    .map(|s| s.addr.as_str())
                    .collect::<Vec<_>>()
                    .join(";"),
                RETRY_AFTER.as_millis()
            ),
        )
        .into_connection_failure()
    }

    /// One exchange with one server, bounded by `deadline`. A pooled
    /// connection that turns out dead (the server restarted, or the
    /// runtime that opened it is gone) is replaced by one fresh dial before
    /// the server is blamed.
    async fn exchange(
        &self,
        server: usize,
        request: &Request<'_>,
        deadline: Instant,
    ) -> Result<Reply, Fault> {
        let server = &self.servers[server];
        // Waiting for a free connection is this process's congestion, not
        // the server's failure: it times out without marking it down.
        let _slot = match timeout_at(deadline, server.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) | Err(_) => return Err(Fault::Busy),
        };
        let attempt = async {
            let pooled = lock(&server.idle).pop();
            let (mut conn, was_pooled) = match pooled {
                Some(conn) => (conn, true),
                None => (Conn::dial(&server.addr).await.map_err(Fault::Down)?, false),
            };
            let mut result = conn.call(request, self.read_limit).await;
            if was_pooled && matches!(result, Err(Fault::Down(_))) {
                conn = Conn::dial(&server.addr).await.map_err(Fault::Down)?;
                result = conn.call(request, self.read_limit).await;
            }
            if conn.reusable && matches!(result, Ok(_) | Err(Fault::Refused(_))) {
                let mut idle = lock(&server.idle);
                if idle.len() < MAX_CONNECTIONS {
                    idle.push(conn);
                }
            }
            result
        };
        timeout_at(deadline, attempt)
            .await
            .unwrap_or(Err(Fault::Timeout))
    }

    fn fault_error(&self, server: usize, fault: Fault, operation: &'static str) -> Error {
        let addr = &self.servers[server].addr;
        // The region's circuit breaker opens only when no server is left
        // to fail over to: while one is, the failed one's keys move there.
        let unreachable =
            matches!(fault, Fault::Down(_) | Fault::Timeout) && self.pick(0).is_none();
        let err = match fault {
            Fault::Timeout | Fault::Busy => Error::timeout(BACKEND, operation),
            Fault::Down(err) => Error::backend_source(
                BACKEND,
                format!("{operation}: server {addr} failed; check that it is running"),
                err,
            ),
            Fault::Refused(message) => Error::backend(
                BACKEND,
                format!("{operation}: server {addr} answered: {message}"),
            ),
            Fault::Protocol(message) => Error::backend(
                BACKEND,
                format!("{operation}: server {addr} sent an unexpected reply: {message}"),
            ),
        };
        if unreachable {
            err.into_connection_failure()
        } else {
            err
        }
    }

    /// Runs one request on the server that owns `route`; if that server
    /// fails, marks it down and runs the request on the next one, until
    /// `deadline`.
    pub(crate) async fn run(
        &self,
        route: u64,
        request: &Request<'_>,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<Reply> {
        let (_, reply) = self.run_routed(route, request, deadline, operation).await?;
        Ok(reply)
    }

    /// [`run`](Self::run), also telling which server answered: what a lock
    /// needs to renew and release itself where it was taken, whatever
    /// servers go down or come back meanwhile.
    pub(crate) async fn run_routed(
        &self,
        route: u64,
        request: &Request<'_>,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<(usize, Reply)> {
        loop {
            let server = self.pick(route).ok_or_else(|| self.all_down())?;
            match self.exchange(server, request, deadline).await {
                Ok(reply) => return Ok((server, reply)),
                Err(fault @ (Fault::Down(_) | Fault::Timeout)) => {
                    self.mark_down(server);
                    if matches!(fault, Fault::Timeout) || Instant::now() >= deadline {
                        return Err(self.fault_error(server, fault, operation));
                    }
                    tracing::debug!(server = %self.servers[server].addr, "memcached server marked down: {fault:?}");
                }
                Err(fault) => return Err(self.fault_error(server, fault, operation)),
            }
        }
    }

    /// Runs one request on `server` (an index [`run_routed`](Self::run_routed)
    /// returned), with no failover: what lives there is not elsewhere. A
    /// connection failure marks it down, as in `run`.
    pub(crate) async fn run_on(
        &self,
        server: usize,
        request: &Request<'_>,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<Reply> {
        match self.exchange(server, request, deadline).await {
            Ok(reply) => Ok(reply),
            Err(fault) => {
                if matches!(fault, Fault::Down(_) | Fault::Timeout) {
                    self.mark_down(server);
                }
                Err(self.fault_error(server, fault, operation))
            }
        }
    }

    /// Reads several keys, one `get` per server involved, the servers
    /// queried in parallel: one round trip whatever the spread. Slots
    /// follow the order of `keys`.
    pub(crate) async fn get_many(
        &self,
        keys: &[Keyed<'_>],
        deadline: Instant,
        operation: &'static str,
    ) -> Result<Vec<Option<Item>>> {
        let Some(head) = keys.first() else {
            return Ok(Vec::new());
        };
        loop {
            // The common case (one server, or everything on one): one plain
            // exchange, no grouping.
            let first = self.pick(head.route).ok_or_else(|| self.all_down())?;
            if keys[1..].iter().all(|k| self.pick(k.route) == Some(first)) {
                let names: Vec<&str> = keys.iter().map(|k| k.key).collect();
                match self.exchange(first, &Request::Get(&names), deadline).await {
                    Ok(Reply::Values(values)) => return Ok(values),
                    Ok(other) => {
                        return Err(Error::backend(
                            BACKEND,
                            format!("{operation}: unexpected reply {other:?} to get"),
                        ));
                    }
                    Err(fault @ (Fault::Down(_) | Fault::Timeout)) => {
                        self.mark_down(first);
                        if matches!(fault, Fault::Timeout) || Instant::now() >= deadline {
                            return Err(self.fault_error(first, fault, operation));
                        }
                        continue;
                    }
                    Err(fault) => return Err(self.fault_error(first, fault, operation)),
                }
            }
            // Group by server, keeping each key's position.
            let mut groups: Vec<(usize, Vec<usize>)> = Vec::with_capacity(2);
            for (i, keyed) in keys.iter().enumerate() {
                let server = self.pick(keyed.route).ok_or_else(|| self.all_down())?;
                match groups.iter_mut().find(|(s, _)| *s == server) {
                    Some((_, positions)) => positions.push(i),
                    None => groups.push((server, vec![i])),
                }
            }
            let names: Vec<Vec<&str>> = groups
                .iter()
                .map(|(_, positions)| positions.iter().map(|&i| keys[i].key).collect())
                .collect();
            let requests: Vec<Request<'_>> = names.iter().map(|n| Request::Get(n)).collect();
            let replies = join_all(
                groups
                    .iter()
                    .zip(&requests)
                    .map(|((server, _), request)| self.exchange(*server, request, deadline)),
            )
            .await;
            let mut slots: Vec<Option<Item>> = keys.iter().map(|_| None).collect();
            let mut retry = false;
            let mut failure = None;
            for ((server, positions), reply) in groups.iter().zip(replies) {
                match reply {
                    Ok(Reply::Values(values)) => {
                        for (&i, value) in positions.iter().zip(values) {
                            slots[i] = value;
                        }
                    }
                    Ok(other) => {
                        failure = Some(Error::backend(
                            BACKEND,
                            format!("{operation}: unexpected reply {other:?} to get"),
                        ));
                    }
                    Err(fault @ (Fault::Down(_) | Fault::Timeout)) => {
                        self.mark_down(*server);
                        if matches!(fault, Fault::Timeout) || Instant::now() >= deadline {
                            failure = Some(self.fault_error(*server, fault, operation));
                        } else {
                            retry = true;
                        }
                    }
                    Err(fault) => failure = Some(self.fault_error(*server, fault, operation)),
                }
            }
            if let Some(err) = failure {
                return Err(err);
            }
            if !retry {
                return Ok(slots);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn keys_memcached_refuses_are_hashed_and_distinct() {
        assert_eq!(memcached_key("p:r:n#k", "p:"), "p:r:n#k");
        let spaced = memcached_key("p:r:n#a b", "p:");
        assert!(spaced.starts_with("p:#") && spaced.len() == 3 + 64);
        assert_ne!(spaced, memcached_key("p:r:n#a\tb", "p:"));
        assert_ne!(spaced, memcached_key("p:r:n#a_b", "p:"));
        let long = "x".repeat(400);
        assert_eq!(memcached_key(&long, "").len(), 65);
        assert_eq!(memcached_key("r:n#\u{e9}t\u{e9}", ""), "r:n#\u{e9}t\u{e9}");
        // A prefix memcached cannot take is left out rather than breaking the key.
        let odd_prefix = "\u{7f}".repeat(3);
        assert!(memcached_key(&format!("{odd_prefix}r:n#k"), &odd_prefix).starts_with('#'));
        for key in ["a b", &long, "\u{0}"] {
            let mapped = memcached_key(key, "prefix:");
            assert!(mapped.len() <= MAX_KEY && mapped.bytes().all(key_byte_ok));
        }
    }

    #[test]
    fn exptime_rounds_up_pads_a_tick_and_goes_absolute_past_30_days() {
        let now = 1_700_000_000;
        assert_eq!(exptime(None, now), 0);
        assert_eq!(exptime(Some(Duration::from_millis(1)), now), 2);
        assert_eq!(exptime(Some(Duration::from_secs(1)), now), 2);
        assert_eq!(exptime(Some(Duration::from_millis(1500)), now), 3);
        let thirty_days = 30 * 24 * 3600;
        assert_eq!(
            exptime(Some(Duration::from_secs(thirty_days - 1)), now),
            thirty_days as u32
        );
        assert_eq!(
            exptime(Some(Duration::from_secs(thirty_days)), now),
            (now + thirty_days + 1) as u32
        );
        assert_eq!(exptime(Some(Duration::from_secs(u64::MAX)), now), 0);
        assert_eq!(
            exptime(Some(Duration::from_secs(100 * 365 * 86400)), now),
            0
        );
    }

    #[test]
    fn rendezvous_moves_only_the_failed_servers_keys() {
        let client = Client::new(&["a:1".into(), "b:2".into(), "c:3".into()], 1 << 20);
        let before: Vec<usize> = (0..3000u64)
            .map(|k| client.pick(fnv1a(&[&k.to_le_bytes()])).unwrap())
            .collect();
        let mut counts = [0; 3];
        for &s in &before {
            counts[s] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "unbalanced: {counts:?}");
        client.mark_down(1);
        for (k, &was) in (0..3000u64).zip(&before) {
            let now = client.pick(fnv1a(&[&k.to_le_bytes()])).unwrap();
            if was == 1 {
                assert_ne!(now, 1);
            } else {
                assert_eq!(now, was);
            }
        }
        client.mark_down(0);
        client.mark_down(2);
        assert_eq!(client.pick(7), None);
    }

    /// A server that answers each `get` with a value per key: `big-<n>`
    /// gets `n` bytes, any other key two. Returns its address and the
    /// number of connections it accepted.
    async fn fake_server() -> (String, Arc<AtomicUsize>) {
        use tokio::io::AsyncBufReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut io = BufReader::new(stream);
                    let mut line = String::new();
                    while io.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                        let mut reply = Vec::new();
                        for key in line.trim_end().split(' ').skip(1) {
                            let len = key
                                .strip_prefix("big-")
                                .map_or(2, |n| n.parse::<usize>().unwrap());
                            reply.extend_from_slice(format!("VALUE {key} 0 {len}\r\n").as_bytes());
                            reply.resize(reply.len() + len, b'x');
                            reply.extend_from_slice(b"\r\n");
                        }
                        reply.extend_from_slice(b"END\r\n");
                        if io.get_mut().write_all(&reply).await.is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn get(client: &Client, keys: &[&str]) -> Result<Vec<Option<Item>>> {
        let deadline = deadline_in(Duration::from_secs(10));
        match client.run(0, &Request::Get(keys), deadline, "test").await? {
            Reply::Values(values) => Ok(values),
            other => panic!("{other:?}"),
        }
    }

    /// A value over the read limit is skipped, never read into memory; a
    /// drainable one keeps the connection, a longer one retires it.
    #[tokio::test]
    async fn values_over_the_read_limit_are_skipped_and_the_pool_stays_sound() {
        let (addr, accepted) = fake_server().await;
        let client = Client::new(std::slice::from_ref(&addr), 1024);
        let drained = format!("big-{}", 4 << 20);
        let values = get(&client, &["a", &drained, "b"]).await.unwrap();
        let sizes: Vec<_> = values
            .iter()
            .map(|v| v.as_ref().map(|i| (i.data.len(), i.oversized)))
            .collect();
        assert_eq!(
            sizes,
            [Some((2, None)), Some((0, Some(4 << 20))), Some((2, None))]
        );
        assert!(get(&client, &["a"]).await.unwrap()[0].is_some());
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "drained, yet redialled");

        // Too long to drain: left unread, and the connection never reused.
        let undrained = format!("big-{}", DRAIN_MAX + 1);
        let values = get(&client, &["a", &undrained]).await.unwrap();
        assert_eq!(values[1].as_ref().unwrap().oversized, Some(DRAIN_MAX + 1));
        assert!(get(&client, &["a"]).await.unwrap()[0].is_some());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Unread before other keys' values: a failed reply, not false misses.
        assert!(get(&client, &[&undrained, "a"]).await.is_err());
        assert!(get(&client, &["a"]).await.unwrap()[0].is_some());
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn deadlines_past_the_clocks_range_are_far_away_not_a_panic() {
        let far = deadline_in(Duration::from_secs(10_000_000_000_000_000_000));
        assert!(far > Instant::now() + Duration::from_secs(365 * 86_400));
        assert!(deadline_in(Duration::MAX) > Instant::now());
    }

    #[test]
    fn replies_parse() {
        let h = parse_value_header(b"VALUE k 0 5 42", true).unwrap();
        assert_eq!((h.key_len, h.len, h.cas), (1, 5, 42));
        assert!(parse_value_header(b"VALUE k 0", false).is_none());
        assert!(parse_value_header(b"VALUE k 0 -1", false).is_none());
        assert_eq!(ttl_flag(b" t-1"), Some(-1));
        assert_eq!(ttl_flag(b" c5 t30"), Some(30));
        assert_eq!(ttl_flag(b""), None);
        assert_eq!(
            error_line(b"SERVER_ERROR out of memory").as_deref(),
            Some("out of memory")
        );
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"184467440737095516150"), None);
    }
}
