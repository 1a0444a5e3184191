//! The page-caching service.

use std::fmt::Write as _;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::BoxError;
use axum_core::body::Body;
use axum_core::response::Response;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::CachePageLayer;
use super::page::{Page, Stored, X_CACHE, XCache, now_ms, storable};
use crate::engine::{Both, Creator, Declined};
use crate::error::Error;
use crate::namespace::Cache;

/// What a [`CachePageLayer`] was told beyond its namespace.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Settings {
    pub(super) allow_authorization: bool,
}

/// A service that answers from the cache, and otherwise calls the inner
/// service once per key and stores what it may: see the
/// [module docs](crate::web). Usually built by [`CachePageLayer`].
///
/// ```
/// use tower::{Service, ServiceExt};
/// # tokio_test::block_on(async {
/// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
/// let handler = tower::service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi")))
/// });
/// let mut svc = tankard::web::CachePage::new(handler, cache.namespace("pages"));
/// let first = svc.ready().await?.call(http::Request::new(String::new())).await?;
/// let second = svc.ready().await?.call(http::Request::new(String::new())).await?;
/// assert_eq!(first.headers()["x-cache"], "MISS");
/// assert_eq!(second.headers()["x-cache"], "HIT");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct CachePage<S> {
    inner: S,
    cache: Cache,
    settings: Settings,
}

impl<S> CachePage<S> {
    /// Wraps `inner`, storing its pages in `cache`.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let handler = tower::service_fn(|_req: http::Request<String>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    /// });
    /// let svc = tankard::web::CachePage::new(handler, cache.namespace("pages"));
    /// # let _ = svc;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(inner: S, cache: Cache) -> CachePage<S> {
        CachePage::with_settings(inner, cache, Settings::default())
    }

    pub(super) fn with_settings(inner: S, cache: Cache, settings: Settings) -> CachePage<S> {
        CachePage {
            inner,
            cache,
            settings,
        }
    }

    /// The layer that builds this service: the same as
    /// [`CachePageLayer::new`].
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let layer = tankard::web::CachePage::<()>::layer(cache.namespace("pages"));
    /// # let _ = layer;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn layer(cache: Cache) -> CachePageLayer {
        CachePageLayer::new(cache)
    }

    /// The inner service.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let svc = tankard::web::CachePage::new(7u8, cache.namespace("pages"));
    /// assert_eq!(*svc.get_ref(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let mut svc = tankard::web::CachePage::new(7u8, cache.namespace("pages"));
    /// *svc.get_mut() = 8;
    /// assert_eq!(*svc.get_ref(), 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let svc = tankard::web::CachePage::new(7u8, cache.namespace("pages"));
    /// assert_eq!(svc.into_inner(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CachePage<S>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> ResponseFuture<S::Error> {
        if !cacheable_request(&req, self.settings) {
            let future = self.inner.call(req);
            return ResponseFuture::new(async move { future.await.map(into_response) });
        }
        // A ready service need not be called: a hit leaves it ready for
        // the next request.
        #[cfg(feature = "memory")]
        if let Some(res) = fresh_in_memory(&self.cache, &req) {
            return ResponseFuture::ready(res);
        }
        let base = base_key(&req);
        // The clone takes the place of the service that was driven to
        // readiness; the ready one is called (at most once) in the future.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(serve(inner, self.cache.clone(), req, base))
    }
}

/// The whole hit path of a memory region, without a task or an await:
/// `None` unless the page is there and fresh.
#[cfg(feature = "memory")]
fn fresh_in_memory<B>(cache: &Cache, req: &Request<B>) -> Option<Response> {
    thread_local! {
        // The base key is built here on every request: reusing one buffer
        // per thread keeps an allocation off the hit path.
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    KEY.with(|key| {
        let mut key = key.try_borrow_mut().ok()?;
        key.clear();
        push_base_key(&mut key, req);
        fresh_page(cache, &key, req)
    })
}

#[cfg(feature = "memory")]
fn fresh_page<B>(cache: &Cache, base: &str, req: &Request<B>) -> Option<Response> {
    match &*cache.try_get_fresh::<Stored>(base)? {
        Stored::Page(page) => Some(page.respond_fresh()),
        Stored::Vary(vary) => {
            let key = variant_key(base, vary, req.headers());
            match &*cache.try_get_fresh::<Stored>(&key)? {
                Stored::Page(page) => Some(page.respond_fresh()),
                Stored::Vary(_) => None,
            }
        }
    }
}

fn into_response<B>(res: http::Response<B>) -> Response
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    res.map(Body::new)
}

fn cacheable_request<B>(req: &Request<B>, settings: Settings) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && (settings.allow_authorization || !req.headers().contains_key(header::AUTHORIZATION))
}

/// Appends a header value to a key. Values that are not visible ASCII are
/// hex-encoded behind `\u{1}`, which no visible-ASCII value contains, so
/// two different values never give the same key.
fn push_value(key: &mut String, value: &HeaderValue) {
    match value.to_str() {
        Ok(text) => key.push_str(text),
        Err(_) => {
            key.push('\u{1}');
            for byte in value.as_bytes() {
                let _ = write!(key, "{byte:02x}");
            }
        }
    }
}

/// `{method} {host}{path}?{query}`: the key of a route's page, or of its
/// `Vary` list.
fn base_key<B>(req: &Request<B>) -> String {
    let mut key = String::new();
    push_base_key(&mut key, req);
    key
}

fn push_base_key<B>(key: &mut String, req: &Request<B>) {
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    key.reserve(path.len() + 32);
    key.push_str(req.method().as_str());
    key.push(' ');
    match req.uri().authority() {
        Some(authority) => key.push_str(authority.as_str()),
        None => {
            if let Some(host) = req.headers().get(header::HOST) {
                push_value(key, host);
            }
        }
    }
    key.push_str(path);
}

/// The base key plus, per header the route varies on, a line `name=value`
/// (all the header's values joined by `, `), or `name` alone when the
/// request does not carry it. Header names cannot contain `=` and values
/// cannot contain a newline, so distinct requests give distinct keys.
fn variant_key(base: &str, vary: &[String], headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(base.len() + 32 * vary.len());
    key.push_str(base);
    for name in vary {
        key.push('\n');
        key.push_str(name);
        for (i, value) in headers.get_all(name.as_str()).iter().enumerate() {
            key.push_str(if i == 0 { "=" } else { ", " });
            push_value(&mut key, value);
        }
    }
    key
}

/// The creator's answer when nothing is stored under the key asked for
/// (what the request gets instead is left in its [`Run`]): declined, not
/// failed, so the region counts no creator error for it.
const NOT_STORED: Declined = Declined("the response was not stored under this key");

/// One request's way through the cache.
struct Run<ReqBody, E> {
    /// Until the handler is called with it.
    request: Option<Request<ReqBody>>,
    /// The handler's page, when it ran for this request and the page may be served.
    created: Option<Page>,
    /// The handler's answer when it is not to be stored (or failed).
    passed: Option<Result<Response, E>>,
}

async fn call<S, ReqBody, ResBody>(
    inner: &mut S,
    req: Request<ReqBody>,
) -> Result<Response, S::Error>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    inner.call(req).await.map(into_response)
}

fn fresh_until(cache: &Cache) -> u64 {
    cache.expiry().map_or(u64::MAX, |d| {
        now_ms().saturating_add(crate::clock::millis(d))
    })
}

impl<ReqBody, E> Run<ReqBody, E> {
    /// The creator: runs the handler and says what to store under the key
    /// being created. `expected` is `None` for the route's base key, and
    /// the `Vary` list the key was built from otherwise.
    async fn create<S, ResBody>(
        &mut self,
        inner: &mut S,
        cache: &Cache,
        base: &str,
        expected: Option<&[String]>,
    ) -> Result<Stored, Declined>
    where
        S: Service<Request<ReqBody>, Response = http::Response<ResBody>, Error = E>,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let req = self.request.take().ok_or(NOT_STORED)?;
        let headers = req.headers().clone();
        let res = match inner.call(req).await {
            Ok(res) => res,
            Err(err) => {
                self.passed = Some(Err(err));
                return Err(NOT_STORED);
            }
        };
        let (parts, body) = res.into_parts();
        if !storable(&parts) {
            self.passed = Some(Ok(Response::from_parts(parts, Body::new(body))));
            return Err(NOT_STORED);
        }
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                self.passed = Some(Ok(body_failed()));
                return Err(NOT_STORED);
            }
        };
        let page = Page::new(parts, bytes, fresh_until(cache));
        let vary = page.vary().unwrap_or_default();
        self.created = Some(page.clone());
        match expected {
            None if vary.is_empty() => Ok(Stored::Page(page)),
            // Stored before the marker is returned, so that the requests
            // waiting on this one find the page when they follow the marker.
            None => {
                let key = variant_key(base, &vary, &headers);
                let _ = cache.put(&key, Stored::Page(page)).await;
                Ok(Stored::Vary(vary))
            }
            Some(expected) if expected == vary.as_slice() => Ok(Stored::Page(page)),
            // The route changed what it varies on: point its base key anew.
            Some(_) => {
                if vary.is_empty() {
                    let _ = cache.put(base, Stored::Page(page)).await;
                } else {
                    let key = variant_key(base, &vary, &headers);
                    let _ = cache.put(&key, Stored::Page(page)).await;
                    let _ = cache.put(base, Stored::Vary(vary)).await;
                }
                Err(NOT_STORED)
            }
        }
    }

    /// The answer after the cache returned a value: `MISS` when this
    /// request's handler made it, `STALE` when the cache served it stale
    /// while another request regenerates it.
    fn answer(&mut self, stored: &Stored, served_stale: bool) -> Option<Response> {
        if let Some(page) = self.created.take() {
            return Some(page.respond(XCache::Miss));
        }
        let x_cache = if served_stale {
            XCache::Stale
        } else {
            XCache::Hit
        };
        match stored {
            Stored::Page(page) => Some(page.respond(x_cache)),
            Stored::Vary(_) => None,
        }
    }

    /// The answer when the cache had nothing to give: what the handler
    /// said for this request, or else a fresh call to it (this request
    /// waited on another whose response could not be stored).
    async fn fallback<S, ResBody>(&mut self, mut inner: S) -> Result<Response, E>
    where
        S: Service<Request<ReqBody>, Response = http::Response<ResBody>, Error = E>,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let res = if let Some(passed) = self.passed.take() {
            passed
        } else if let Some(page) = self.created.take() {
            return Ok(page.respond(XCache::Miss));
        } else if let Some(req) = self.request.take() {
            call(&mut inner, req).await
        } else {
            Ok(body_failed())
        };
        res.map(|mut res| {
            res.headers_mut()
                .insert(X_CACHE.clone(), XCache::Miss.value());
            res
        })
    }
}

fn body_failed() -> Response {
    let mut res = Response::new(Body::from(
        "the response body failed while it was being cached",
    ));
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res
}

/// What the request that found a page stale hands the task that
/// regenerates it (`refresh = background`), once it has its answer.
enum Handoff<ReqBody, S> {
    /// The request, answered from the stale page, and the ready service to
    /// call with it.
    Call(Request<ReqBody>, S),
    /// The stale `Vary` list of a route's base key, to store again as it
    /// is: the request is still needed for its variant key, and the
    /// variant's own regeneration checks the list against the handler's
    /// answer.
    Keep(Stored),
}

/// Where a step's creator leaves the sender of its task's [`Handoff`],
/// when the engine spawned one.
type Handing<ReqBody, S> = Option<oneshot::Sender<Handoff<ReqBody, S>>>;

/// The creator of one step of [`serve`]: the request's own [`Run`] in the
/// caller, as with `refresh = foreground`; with `background`, also a task
/// that waits for the caller's [`Handoff`] and regenerates the page as
/// the caller would have.
fn creator<'a, S, ReqBody, ResBody>(
    run: &'a mut Run<ReqBody, S::Error>,
    inner: &'a mut S,
    cache: &'a Cache,
    base: &'a str,
    expected: Option<&'a [String]>,
    handing: &'a mut Handing<ReqBody, S>,
) -> impl Creator<Stored, Future: Send> + 'a
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>> + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let owned = cache.refreshes_in_background().then_some(move || {
        let (sender, receiver) = oneshot::channel();
        *handing = Some(sender);
        let (cache, base, expected) = (cache.clone(), base.to_owned(), expected.map(<[_]>::to_vec));
        let task = async move {
            let stored = match receiver.await {
                Ok(Handoff::Call(req, mut inner)) => {
                    let mut run = Run {
                        request: Some(req),
                        created: None,
                        passed: None,
                    };
                    run.create(&mut inner, &cache, &base, expected.as_deref())
                        .await
                }
                Ok(Handoff::Keep(stored)) => Ok(stored),
                // The caller had nothing to hand over, or was dropped.
                Err(_) => Err(NOT_STORED),
            };
            stored.map_err(Error::creator_boxed)
        };
        Box::pin(task) as BoxFuture<'static, crate::Result<Stored>>
    });
    Both {
        local: move || async move {
            run.create(inner, cache, base, expected)
                .await
                .map_err(Error::creator_boxed)
        },
        owned,
    }
}

/// Hands the request and the service to the task regenerating the stale
/// page the request was answered with, if there is one.
fn hand_over<ReqBody, S, E>(handing: Handing<ReqBody, S>, run: &mut Run<ReqBody, E>, inner: S) {
    if let (Some(sender), Some(req)) = (handing, run.request.take()) {
        // A task that is gone (the manager dropped) needs nothing.
        let _ = sender.send(Handoff::Call(req, inner));
    }
}

async fn serve<S, ReqBody, ResBody>(
    mut inner: S,
    cache: Cache,
    req: Request<ReqBody>,
    base: String,
) -> Result<Response, S::Error>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>> + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let mut run = Run {
        request: Some(req),
        created: None,
        passed: None,
    };
    let mut handing = None;
    let (stored, served_stale) = cache
        .get_or_create_served(
            &base,
            creator(&mut run, &mut inner, &cache, &base, None, &mut handing),
        )
        .await;
    let vary = match stored {
        Ok(stored) => match run.answer(&stored, served_stale) {
            Some(res) => {
                hand_over(handing, &mut run, inner);
                return Ok(res);
            }
            None => match &*stored {
                Stored::Vary(vary) => {
                    if let Some(sender) = handing.take() {
                        let _ = sender.send(Handoff::Keep(Stored::Vary(vary.clone())));
                    }
                    vary.clone()
                }
                Stored::Page(_) => return run.fallback(inner).await,
            },
        },
        Err(_) => return run.fallback(inner).await,
    };
    let Some(req) = &run.request else {
        return run.fallback(inner).await;
    };
    let key = variant_key(&base, &vary, req.headers());
    let mut handing = None;
    let (stored, served_stale): (Result<Arc<Stored>, _>, _) = cache
        .get_or_create_served(
            &key,
            creator(
                &mut run,
                &mut inner,
                &cache,
                &base,
                Some(&vary),
                &mut handing,
            ),
        )
        .await;
    match stored
        .ok()
        .and_then(|stored| run.answer(&stored, served_stale))
    {
        Some(res) => {
            hand_over(handing, &mut run, inner);
            Ok(res)
        }
        None => {
            // A task waiting for this request declines without it.
            drop(handing);
            run.fallback(inner).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::header::HeaderName::from_bytes(name.as_bytes())
                    .unwrap_or_else(|_| unreachable!()),
                HeaderValue::from_bytes(value).unwrap_or_else(|_| unreachable!()),
            );
        }
        map
    }

    #[test]
    fn variant_keys_tell_absent_empty_repeated_and_binary_values_apart() {
        let vary = vec!["accept".to_owned(), "x-a".to_owned()];
        let keys = [
            variant_key("GET /", &vary, &headers(&[])),
            variant_key("GET /", &vary, &headers(&[("x-a", b"")])),
            variant_key("GET /", &vary, &headers(&[("x-a", b"1, 2")])),
            variant_key("GET /", &vary, &headers(&[("x-a", b"1"), ("x-a", b"2")])),
            variant_key("GET /", &vary, &headers(&[("accept", b"x-a=1")])),
            variant_key("GET /", &vary, &headers(&[("x-a", b"\xff")])),
            variant_key("GET /", &vary, &headers(&[("x-a", b"ff")])),
        ];
        // Repeated values join as one list, as HTTP reads them.
        assert_eq!(keys[2], keys[3]);
        let mut distinct: Vec<_> = keys.iter().collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), keys.len() - 1, "{keys:#?}");
    }

    #[test]
    fn base_keys_hold_method_host_path_and_query() {
        let req = Request::get("/a?b=1")
            .header("host", "example.org")
            .body(())
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(base_key(&req), "GET example.org/a?b=1");
        let req = Request::head("http://other.org/a")
            .body(())
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(base_key(&req), "HEAD other.org/a");
    }
}
