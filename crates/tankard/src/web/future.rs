//! The response future of [`CachePage`](super::CachePage).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum_core::response::Response;

type Boxed<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

/// The future [`CachePage`](super::CachePage) returns: a page from the
/// cache, or the inner service's response (stored on the way when it may
/// be). Boxed, because the inner service's future runs inside the cache's
/// creator.
///
/// ```
/// use tower::{Service, ServiceExt};
/// # tokio_test::block_on(async {
/// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
/// let handler = tower::service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi")))
/// });
/// let mut svc = tankard::web::CachePage::new(handler, cache.namespace("pages"));
/// let future: tankard::web::ResponseFuture<_> = svc.ready().await?.call(http::Request::new(String::new()));
/// assert_eq!(future.await?.headers()["x-cache"], "MISS");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ResponseFuture<E> {
    state: State<E>,
}

enum State<E> {
    /// A page found without waiting (a fresh hit in a memory region).
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    Ready(Option<Response>),
    Pending(Boxed<E>),
}

impl<E> ResponseFuture<E> {
    pub(super) fn new(inner: impl Future<Output = Result<Response, E>> + Send + 'static) -> Self {
        ResponseFuture {
            state: State::Pending(Box::pin(inner)),
        }
    }

    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    pub(super) fn ready(response: Response) -> Self {
        ResponseFuture {
            state: State::Ready(Some(response)),
        }
    }
}

// Both states are `Unpin` whatever `E` is: the pending one is boxed.
impl<E> Future for ResponseFuture<E> {
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Ready(response) => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("ResponseFuture polled after it completed"),
            },
            State::Pending(inner) => inner.as_mut().poll(cx),
        }
    }
}

impl<E> fmt::Debug for ResponseFuture<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
