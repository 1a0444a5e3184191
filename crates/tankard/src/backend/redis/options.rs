//! The Redis stores' own options, read out of a region's: one server's URL,
//! or a cluster's seed URLs. The same grammar checks a `backplane = redis://…`
//! setting, whatever the region's store.

use crate::backend::OptionProblem;
use crate::backend::address::{is_host, is_port};
use crate::options::{BackendKind, RegionOptions};

/// What a Redis URL looks like, for its errors.
const URL: &str = "redis://[user:password@]host[:port][/db] (or rediss://, redis+unix://, unix://)";
/// What a cluster's seeds look like, for their errors.
const SEEDS: &str = "redis://host:port[,redis://host:port…]";

/// Where a Redis region connects.
// Read by the store, which its cargo feature builds.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct RedisOptions {
    /// One server's URL, or a cluster's seed URLs (at least one).
    pub(crate) urls: Vec<String>,
    /// `type = redis-cluster`.
    pub(crate) cluster: bool,
}

impl RedisOptions {
    /// The store's options, or what is wrong with them.
    pub(crate) fn read(options: &RegionOptions) -> Result<RedisOptions, OptionProblem> {
        let cluster = options.backend == BackendKind::RedisCluster;
        let example = if cluster { SEEDS } else { "redis://host:port" };
        let url = options
            .url
            .as_deref()
            .ok_or_else(|| OptionProblem::Missing {
                option: "url",
                message: format!(
                    "missing; the {} backend needs url = \"{example}\"",
                    options.backend
                ),
            })?;
        let bad = |problem: &str, expected| OptionProblem::Bad {
            option: "url",
            value: redact(url),
            problem: problem.to_owned(),
            expected,
        };
        if !cluster {
            return match is_url(url, true) {
                true => Ok(RedisOptions {
                    urls: vec![url.to_owned()],
                    cluster,
                }),
                false => Err(bad("is not a redis URL", URL)),
            };
        }
        let seeds: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        match !seeds.is_empty() && seeds.iter().all(|seed| is_url(seed, false)) {
            true => Ok(RedisOptions {
                urls: seeds,
                cluster,
            }),
            false => Err(bad("is not a list of redis cluster seeds", SEEDS)),
        }
    }
}

/// `redis://[user[:password]@]host[:port][/db][?query]`, `rediss://…`, and
/// with `allow_unix` also `redis+unix:///path` and `unix:///path`.
pub(crate) fn is_url(url: &str, allow_unix: bool) -> bool {
    let lower = url.to_ascii_lowercase();
    if allow_unix {
        for scheme in ["redis+unix://", "unix://"] {
            if lower.starts_with(scheme) {
                let path = url[scheme.len()..].split('?').next().unwrap_or("");
                return !path.is_empty() && !path.contains(char::is_whitespace);
            }
        }
    }
    let Some(rest) = ["redis://", "rediss://"]
        .iter()
        .find(|scheme| lower.starts_with(**scheme))
        .map(|scheme| &url[scheme.len()..])
    else {
        return false;
    };
    let rest = rest.split('?').next().unwrap_or("");
    let (authority, db) = match rest.split_once('/') {
        Some((authority, db)) => (authority, db),
        None => (rest, ""),
    };
    if !(db.is_empty() || db.chars().all(|c| c.is_ascii_digit())) {
        return false;
    }
    // The password may contain `@`; the host is after the last one.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.starts_with('[') {
        return match host_port.split_once(']') {
            Some((host, "")) => is_host(&format!("{host}]")),
            Some((host, port)) => {
                is_host(&format!("{host}]")) && port.strip_prefix(':').is_some_and(is_port)
            }
            None => false,
        };
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => is_host(host) && is_port(port),
        None => is_host(host_port),
    }
}

/// A URL (or comma-separated seeds) with any password replaced by `***`,
/// for messages: errors end up in logs.
pub(crate) fn redact(url: &str) -> String {
    url.split(',')
        .map(|seed| {
            let Some((scheme, rest)) = seed.split_once("://") else {
                return seed.to_owned();
            };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or("", |(user, _)| user);
                    format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
                }
                None => seed.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_error_messages() {
        assert_eq!(
            redact("redis://user:hunter2@h:1/2"),
            "redis://user:***@h:1/2"
        );
        assert_eq!(
            redact("redis://:pw@h,redis://h2"),
            "redis://:***@h,redis://h2"
        );
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }
}
