//! What the page layer stores: a whole response, or, under a route's base
//! key, the list of request headers its responses vary on.

use std::time::{SystemTime, UNIX_EPOCH};

use axum_core::body::Body;
use axum_core::response::Response;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, response};
use serde::{Deserialize, Serialize};

/// One cached entry of the layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(into = "Wire", try_from = "Wire")]
pub(super) enum Stored {
    /// A response, kept ready to clone onto the wire.
    Page(Page),
    /// The route's responses vary on these request headers (lowercase,
    /// sorted): the page itself is under the key that includes their values.
    Vary(Vec<String>),
}

#[derive(Clone, Debug)]
pub(super) struct Page {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    /// Epoch ms after which the page is served as `STALE`.
    pub(super) fresh_until_ms: u64,
}

/// The serialized form: header maps and status codes are not serde types.
#[derive(Serialize, Deserialize)]
enum Wire {
    Page {
        status: u16,
        headers: Vec<(String, Bytes)>,
        body: Bytes,
        fresh_until_ms: u64,
    },
    Vary(Vec<String>),
}

impl From<Stored> for Wire {
    fn from(stored: Stored) -> Wire {
        match stored {
            Stored::Page(page) => Wire::Page {
                status: page.status.as_u16(),
                headers: page
                    .headers
                    .iter()
                    .filter(|(name, _)| *name != X_CACHE)
                    .map(|(name, value)| {
                        (
                            name.as_str().to_owned(),
                            Bytes::copy_from_slice(value.as_bytes()),
                        )
                    })
                    .collect(),
                body: page.body,
                fresh_until_ms: page.fresh_until_ms,
            },
            Stored::Vary(names) => Wire::Vary(names),
        }
    }
}

impl TryFrom<Wire> for Stored {
    type Error = String;

    fn try_from(wire: Wire) -> Result<Stored, String> {
        Ok(match wire {
            Wire::Page {
                status,
                headers,
                body,
                fresh_until_ms,
            } => {
                let status = StatusCode::from_u16(status).map_err(|e| e.to_string())?;
                let mut map = HeaderMap::with_capacity(headers.len() + 1);
                for (name, value) in headers {
                    let name =
                        HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                    let value = HeaderValue::from_maybe_shared(value).map_err(|e| e.to_string())?;
                    map.append(name, value);
                }
                map.insert(X_CACHE.clone(), XCache::Hit.value());
                Stored::Page(Page {
                    status,
                    headers: map,
                    body,
                    fresh_until_ms,
                })
            }
            Wire::Vary(names) => Stored::Vary(names),
        })
    }
}

/// The `X-Cache` header's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum XCache {
    Hit,
    Miss,
    Stale,
}

pub(super) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

impl XCache {
    pub(super) fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            XCache::Hit => "HIT",
            XCache::Miss => "MISS",
            XCache::Stale => "STALE",
        })
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Headers that describe one connection, not the resource: never replayed.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHENTICATE,
];

impl Page {
    pub(super) fn new(parts: response::Parts, body: Bytes, fresh_until_ms: u64) -> Page {
        let mut headers = parts.headers;
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        headers.remove("keep-alive");
        // Kept in the stored map so that a hit clones a map that needs no
        // insertion (and so no growth); a miss or stale answer overwrites it.
        headers.insert(X_CACHE.clone(), XCache::Hit.value());
        Page {
            status: parts.status,
            headers,
            body,
            fresh_until_ms,
        }
    }

    /// Builds the response; `STALE` replaces `HIT` once the page is past
    /// its expiry.
    pub(super) fn respond(&self, mut x_cache: XCache) -> Response {
        if x_cache == XCache::Hit && now_ms() >= self.fresh_until_ms {
            x_cache = XCache::Stale;
        }
        let mut res = self.respond_fresh();
        if x_cache != XCache::Hit {
            res.headers_mut().insert(X_CACHE.clone(), x_cache.value());
        }
        res
    }

    /// Builds the response of a page the cache called fresh: `X-Cache: HIT`.
    pub(super) fn respond_fresh(&self) -> Response {
        let mut res = Response::new(Body::from(self.body.clone()));
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers.clone();
        res
    }

    /// The request headers the response varies on, lowercase and sorted;
    /// `None` for `Vary: *` (varies on everything: never cached).
    pub(super) fn vary(&self) -> Option<Vec<String>> {
        vary_of(&self.headers)
    }
}

pub(super) fn vary_of(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let value = value.to_str().ok()?;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            names.push(name.to_ascii_lowercase());
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// Whether a response may be stored at all.
pub(super) fn storable(parts: &response::Parts) -> bool {
    if parts.status != StatusCode::OK || parts.headers.contains_key(header::SET_COOKIE) {
        return false;
    }
    let private = parts
        .headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("no-store").split(','))
        .map(|d| {
            d.split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .any(|d| matches!(d.as_str(), "private" | "no-store" | "no-cache"));
    let streaming = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    !private && !streaming && vary_of(&parts.headers).is_some()
}
