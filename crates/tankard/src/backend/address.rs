//! The grammar of a server address that more than one store reads: a host
//! and a port, as memcached lists and Redis URLs write them.

/// A host with no spaces, quotes or slashes (`memcached://h:1` is a common
/// mistake, and `127.0.0.1.11211` the seed's), or a bracketed IPv6
/// address.
pub(crate) fn is_host(host: &str) -> bool {
    let bracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit() || c == ':'));
    bracketed
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '%')))
}

/// A port from 1 to 65535, in digits only.
pub(crate) fn is_port(port: &str) -> bool {
    !port.is_empty()
        && port.chars().all(|c| c.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}
