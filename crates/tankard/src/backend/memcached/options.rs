//! The memcached store's own options, read out of a region's: its server
//! list.

use crate::backend::OptionProblem;
use crate::backend::address::{is_host, is_port};
use crate::options::RegionOptions;

/// What the `url` of a memcached region looks like, for its errors.
const SERVERS: &str = "host:port[;host:port…]";

/// The servers a memcached region spreads its keys over.
// Read by the store, which its cargo feature builds.
#[cfg_attr(not(feature = "memcached"), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct MemcachedOptions {
    /// `host:port` each, as written (at least one).
    pub(crate) servers: Vec<String>,
}

impl MemcachedOptions {
    /// The store's options, or what is wrong with them: `url` is a list of
    /// `host:port` items separated by `;` (or `,`, which users also write).
    pub(crate) fn read(options: &RegionOptions) -> Result<MemcachedOptions, OptionProblem> {
        let url = options
            .url
            .as_deref()
            .ok_or_else(|| OptionProblem::Missing {
                option: "url",
                message: format!("missing; the memcached backend needs url = \"{SERVERS}\""),
            })?;
        match servers_problem(url) {
            Some(problem) => Err(OptionProblem::Bad {
                option: "url",
                value: url.to_owned(),
                problem: format!("is not a memcached address: {problem}"),
                expected: SERVERS,
            }),
            None => Ok(MemcachedOptions {
                servers: url.split([';', ',']).map(|s| s.trim().to_owned()).collect(),
            }),
        }
    }
}

/// What is wrong with a memcached server list, naming the part.
fn servers_problem(url: &str) -> Option<String> {
    let servers: Vec<&str> = url.split([';', ',']).map(str::trim).collect();
    if servers.iter().all(|s| s.is_empty()) {
        return Some("no server in it".to_owned());
    }
    // With one server the value already shows it; with several, say which.
    let in_server = |server: &str| {
        if servers.len() == 1 {
            String::new()
        } else {
            format!(" in {server:?}")
        }
    };
    for (index, server) in servers.iter().enumerate() {
        if server.is_empty() {
            return Some(format!(
                "server {} of {} is empty (a `;` or `,` too many)",
                index + 1,
                servers.len()
            ));
        }
        let Some((host, port)) = server.rsplit_once(':') else {
            // The seed's `127.0.0.1.11211`: a dot typed for the colon.
            let hint = server
                .rsplit_once('.')
                .filter(|(host, port)| is_host(host) && is_port(port))
                .map(|(host, port)| format!(" (did you mean \"{host}:{port}\"?)"))
                .unwrap_or_default();
            return Some(format!("no port{}{hint}", in_server(server)));
        };
        if host.is_empty() {
            return Some(format!("no host{}", in_server(server)));
        }
        if !is_host(host) {
            let scheme = if host.contains("://") {
                " (memcached addresses take no scheme)"
            } else {
                ""
            };
            return Some(format!(
                "host {host:?}{} is not a host name or IP address{scheme}",
                in_server(server)
            ));
        }
        if !is_port(port) {
            return Some(format!(
                "port {port:?}{} is not a number from 1 to 65535",
                in_server(server)
            ));
        }
    }
    None
}
