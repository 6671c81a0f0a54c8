//! Failed authentication, limited per client address: [`FailedAuthLimiter`]
//! and its layer, [`FailedAuthLayer`].
//!
//! The rate limiter runs *after* authentication (it counts by the
//! authenticated user), so requests refused with 401 never reach it: without
//! this limiter, guessing is free, every random key id costs a store read,
//! and a flood of bad tokens fills the audit queue. This limiter goes
//! *outside* the auth layer and keeps one bucket per client address:
//!
//! * the address is resolved like the rate limiter's and the auth layer's:
//!   the socket peer, or what [`TrustedProxies`] forwarded (IPv6 grouped by
//!   a /64 by default); it is left in the request as a [`ClientIp`], so the
//!   audit log, the IP allowlists and the rate limiter inside name the same
//!   client;
//! * only refusals charge it: a response with status 401, whatever answered
//!   it (the auth layer, an extractor, a WebSocket handshake). Successful and
//!   other requests cost nothing;
//! * every failure counts, even past the limit (a burst of concurrent
//!   guesses cannot slip through while the first ones are still being
//!   answered), but the debt is capped at two windows: an address that stops
//!   failing is let in again at most one window after its bucket would have
//!   been full;
//! * while the address's bucket is empty, its requests are answered 429
//!   `rate_limited` with `Retry-After`, in the configured [`ErrorFormat`],
//!   before the auth layer runs: no store read, no argon2, no audit event.
//!   Other addresses are unaffected;
//! * **no collateral lockout**: with [`FailedAuthLayer::pass_cached`]
//!   (given the auth layer's `AuthLayer::verifies_from_cache`), a request
//!   from such an address whose credential verifies from the verifier's
//!   cache (a key this instance has already verified, within the address
//!   allowlist) is still served: a guesser behind a shared address (a
//!   company NAT, a carrier, a CI provider) does not lock out the clients
//!   behind it. Only what a guess looks like gets 429: a credential the
//!   cache refuses or does not know (its check would read the store or run
//!   argon2), and requests with no credential at all (a sign-in form's
//!   password is a guess too);
//! * with [`FailedAuthLimiterBuilder::redis`] the buckets live in Redis and
//!   are shared by every instance: each 401 is charged there (one round
//!   trip), and every other request is answered from a local mirror of the
//!   addresses over the limit, shared within 100 ms, with no round trip;
//!   the same [`OnStoreError`] policies as the rate limiter apply.
//!
//! Socket.IO connects authenticate inside the upgraded connection, out of
//! reach of HTTP layers: `auth_socketio::SocketIoAuth::failed_auth_limits` calls
//! [`FailedAuthLimiter::check`] and [`FailedAuthLimiter::record_failure`] itself.
//!
//! ```
//! use std::net::SocketAddr;
//! use auth_ratelimit::{FailedAuthLimiter, Quota};
//! use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // 3 failures at once, then one more every 20 seconds.
//! let failures = FailedAuthLimiter::builder(Quota::per_minute(3)).build();
//! let app = Router::new()
//!     // Stands in for a route behind the AuthLayer: always 401.
//!     .route("/", get(|| async { StatusCode::UNAUTHORIZED }))
//!     .layer(failures.layer()); // outside (after) the auth layer
//! let from = |ip: [u8; 4]| {
//!     let mut req = Request::get("/").body(Body::empty()).unwrap();
//!     // The peer, as a server records it: a `SocketAddr` extension (or, with
//!     // the `axum` feature, axum's `ConnectInfo<SocketAddr>`).
//!     req.extensions_mut().insert(SocketAddr::from((ip, 4000)));
//!     req
//! };
//! for _ in 0..3 {
//!     assert_eq!(app.clone().oneshot(from([203, 0, 113, 9])).await.unwrap().status(), 401);
//! }
//! let res = app.clone().oneshot(from([203, 0, 113, 9])).await.unwrap();
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(res.headers()["retry-after"], "20");
//! // Another address is not affected.
//! assert_eq!(app.oneshot(from([198, 51, 100, 7])).await.unwrap().status(), 401);
//! # }
//! ```

use std::{
    fmt,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use auth_core::{response::ErrorFormat, AuthError};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::options::{limiter_setters, LimiterOptions};
use crate::{
    fallback::{LimiterMemory, Stores},
    key::KeyValue,
    store::{Bucket, StoreFuture},
    ClientIp, Decision, OnStoreError, Quota, RequestInfo, StoreError, TrustedProxies,
};

/// The bucket name of failed authentications (in shared stores' keys).
const BUCKET: &str = "auth-failures";

/// Failed authentications per client address. Build it once
/// ([`FailedAuthLimiter::builder`]), put its [`layer`](Self::layer) outside
/// the auth layer; clones share the buckets. See the [module docs](crate::failed_auth).
#[derive(Clone)]
pub struct FailedAuthLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    quota: Quota,
    /// Most debt failures may build: two windows.
    max_debt: Duration,
    stores: Stores,
    format: ErrorFormat,
    proxies: TrustedProxies,
    ipv6_prefix: u8,
    ipv6_site: crate::ipv6_site::Ipv6Site,
    warned_no_peer: AtomicBool,
}

/// Builds a [`FailedAuthLimiter`].
#[must_use]
pub struct FailedAuthLimiterBuilder {
    quota: Quota,
    options: LimiterOptions,
}

impl fmt::Debug for FailedAuthLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedAuthLimiterBuilder")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl FailedAuthLimiterBuilder {
    limiter_setters!();

    /// Keeps the buckets in Redis, shared by every instance using the same
    /// prefix. Only failures go to Redis (one round trip per 401); every
    /// other request is answered from a local mirror of the addresses over
    /// the limit, which the instances share through Redis within 100 ms.
    /// For one round trip per request instead, pass the `RedisStore` to
    /// [`store`](Self::store).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(self, store: crate::RedisStore) -> Self {
        let quota = self.quota;
        self.store(crate::redis_failures::MirroredFailures::new(store, quota))
    }

    /// The limiter.
    pub fn build(self) -> FailedAuthLimiter {
        FailedAuthLimiter {
            inner: Arc::new(Inner {
                quota: self.quota,
                max_debt: self.quota.window().saturating_mul(2),
                stores: self.options.stores(),
                format: self.options.format,
                proxies: self.options.proxies,
                ipv6_prefix: self.options.ipv6_prefix,
                ipv6_site: self.options.ipv6_site,
                warned_no_peer: AtomicBool::new(false),
            }),
        }
    }
}

impl FailedAuthLimiter {
    /// A limiter letting each address fail `quota.burst()` times at once,
    /// then once per `quota.interval()`.
    pub fn builder(quota: Quota) -> FailedAuthLimiterBuilder {
        FailedAuthLimiterBuilder {
            quota,
            options: LimiterOptions::default(),
        }
    }

    /// The quota of failures per address.
    pub fn quota(&self) -> Quota {
        self.inner.quota
    }

    /// The in-memory buckets (the only ones, or the fallback when Redis is down).
    pub fn memory(&self) -> &LimiterMemory {
        &self.inner.stores.memory
    }

    /// A layer applying this limiter; put it outside the auth layer.
    pub fn layer(&self) -> FailedAuthLayer {
        FailedAuthLayer {
            limiter: self.clone(),
            cached: None,
        }
    }

    /// The client address `req` is counted under: the [`ClientIp`] an
    /// earlier component left, else the socket peer
    /// ([`RequestInfo::peer_addr`]) or what the trusted proxies forwarded.
    /// `None` without a peer address: such a request is not limited.
    pub fn client_ip<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let ip = RequestInfo::new(req, &self.inner.proxies).client_ip();
        if ip.is_none() && !self.inner.warned_no_peer.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "failed-authentication limit skipped: no client address in the request (a ClientIp or SocketAddr \
                 extension; with axum, auth-ratelimit's `axum` feature and \
                 into_make_service_with_connect_info::<SocketAddr>())"
            );
        }
        ip
    }

    /// `Err` with the 429 to answer when `ip` has used up its failures.
    pub async fn check(&self, ip: IpAddr) -> Result<(), Response<Bytes>> {
        match self.refusal(self.read(ip, 0).await) {
            Some(res) => Err(counted(res)),
            None => Ok(()),
        }
    }

    /// Counts one failed authentication from `ip`.
    pub async fn record_failure(&self, ip: IpAddr) {
        self.read(ip, 1).await;
    }

    /// What one more failure from `ip` would meet, after charging `charge`
    /// failures.
    async fn read(&self, ip: IpAddr, charge: u32) -> Reading {
        self.reading(ip, charge, self.start(ip, charge).await)
    }

    /// Asks the store to charge `charge` failures to `ip` (0 to read), and
    /// to its IPv6 site aggregate: the more restrictive answer.
    fn start(&self, ip: IpAddr, charge: u32) -> StoreFuture<Decision> {
        let inner = &*self.inner;
        let store = &inner.stores.store;
        let client = store.charge(&self.bucket(ip, charge), inner.max_debt);
        let Some(site) = self.site_bucket(ip, charge) else {
            return client;
        };
        let site = store.charge(&site, inner.max_debt);
        match (client.now(), site.now()) {
            (Ok(a), Ok(b)) => StoreFuture::ready(stricter(a, b)),
            (a, b) => StoreFuture::pending(async move {
                let a = match a {
                    Ok(a) => a,
                    Err(pending) => pending.await,
                };
                let b = match b {
                    Ok(b) => b,
                    Err(pending) => pending.await,
                };
                stricter(a, b)
            }),
        }
    }

    /// The in-memory fallback's answer to [`Self::start`].
    fn charge_memory(&self, ip: IpAddr, charge: u32) -> Decision {
        let inner = &*self.inner;
        let memory = &inner.stores.memory;
        let client = memory.charge_bucket(&self.bucket(ip, charge), inner.max_debt);
        match self.site_bucket(ip, charge) {
            Some(site) => {
                let site = memory.charge_bucket(&site, inner.max_debt);
                if crate::headers::more_restrictive(&site, &client) {
                    site
                } else {
                    client
                }
            }
            None => client,
        }
    }

    fn bucket(&self, ip: IpAddr, charge: u32) -> Bucket<'static> {
        let value = KeyValue::ip(ip, self.inner.ipv6_prefix);
        Bucket::for_rule(0, BUCKET, value, self.inner.quota, charge)
    }

    /// The bucket of `ip`'s IPv6 site aggregate (see
    /// [`FailedAuthLimiterBuilder::ipv6_site`]).
    fn site_bucket(&self, ip: IpAddr, charge: u32) -> Option<Bucket<'static>> {
        let site = &self.inner.ipv6_site;
        let net = site.network(ip)?;
        let quota = site.quota(self.inner.quota);
        Some(Bucket::for_rule(
            0,
            BUCKET,
            KeyValue::Site(net),
            quota,
            charge,
        ))
    }

    /// The store's answer to [`Self::start`], with the policy applied when
    /// it could not answer.
    fn reading(&self, ip: IpAddr, charge: u32, answer: Result<Decision, StoreError>) -> Reading {
        let stores = &self.inner.stores;
        match answer {
            Ok(d) => Reading::Bucket(d),
            Err(err) => match stores.failed(&err) {
                OnStoreError::FallBackToMemory => Reading::Bucket(self.charge_memory(ip, charge)),
                OnStoreError::FailClosed => Reading::StoreDown,
                OnStoreError::FailOpen => Reading::Unlimited,
            },
        }
    }

    /// Charges one failure to `ip` after a 401: at once when the store
    /// answers at once, else in a task.
    fn charge_failure(&self, ip: IpAddr) {
        if let Err(pending) = self.start(ip, 1).now() {
            let this = self.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let answer = pending.await;
                    if answer.is_ok() {
                        this.inner.stores.answered();
                    }
                    this.reading(ip, 1, answer)
                });
            }
        }
    }

    /// The answer to send instead of calling the service, if any.
    fn refusal(&self, reading: Reading) -> Option<Response<Bytes>> {
        let err = match reading {
            Reading::Bucket(d) if !d.is_allowed() => {
                AuthError::rate_limited(d.retry_after().unwrap_or(Duration::from_secs(1)))
                    .with_message("Too many failed authentication attempts from this address")
            }
            Reading::Bucket(_) | Reading::Unlimited => return None,
            Reading::StoreDown => {
                AuthError::unavailable("Authentication is temporarily unavailable")
            }
        };
        Some(self.inner.format.render(&err))
    }
}

/// The more restrictive of two answers; an error if either failed.
fn stricter(
    a: Result<Decision, StoreError>,
    b: Result<Decision, StoreError>,
) -> Result<Decision, StoreError> {
    let (a, b) = (a?, b?);
    Ok(if crate::headers::more_restrictive(&b, &a) {
        b
    } else {
        a
    })
}

/// `res`, counted as a refusal when it is the limit's 429 (not a 503).
fn counted(res: Response<Bytes>) -> Response<Bytes> {
    if res.status() == StatusCode::TOO_MANY_REQUESTS {
        crate::metrics::failed_auth_refusal();
    }
    res
}

/// What a check of the failure bucket found.
enum Reading {
    /// Whether one more failure fits.
    Bucket(Decision),
    /// The store is down and the policy is to fail open.
    Unlimited,
    /// The store is down and the policy is to fail closed (503).
    StoreDown,
}

impl fmt::Debug for FailedAuthLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("FailedAuthLimiter");
        d.field("quota", &self.inner.quota)
            .field("format", &self.inner.format)
            .field("proxies", &self.inner.proxies)
            .field("stores", &self.inner.stores);
        d.finish()
    }
}

/// Tells whether a request's credential verifies from the verifier's cache.
type CachedCheck = Arc<dyn Fn(&http::request::Parts) -> bool + Send + Sync>;

/// Applies a [`FailedAuthLimiter`] to every request of the wrapped service.
/// Put it outside the auth layer (with axum: `.layer(auth)` first, then
/// `.layer(failures.layer())`).
#[derive(Clone)]
pub struct FailedAuthLayer {
    limiter: FailedAuthLimiter,
    cached: Option<CachedCheck>,
}

impl FailedAuthLayer {
    /// Still serves a request from an address over the limit when `check`
    /// says its credential verifies from the verifier's cache, with no store
    /// read and no argon2: pass the auth layer's own check,
    /// `move |req| auth.verifies_from_cache(req)`. Everything else from that
    /// address still gets 429 (see the [module docs](crate::failed_auth)).
    ///
    /// `check` runs only for requests from addresses over the limit.
    pub fn pass_cached(
        mut self,
        check: impl Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.cached = Some(Arc::new(check));
        self
    }
}

impl fmt::Debug for FailedAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedAuthLayer")
            .field("limiter", &self.limiter)
            .field("pass_cached", &self.cached.is_some())
            .finish()
    }
}

impl<S> Layer<S> for FailedAuthLayer {
    type Service = FailedAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FailedAuthService {
            inner,
            limiter: self.limiter.clone(),
            cached: self.cached.clone(),
        }
    }
}

/// The service made by [`FailedAuthLayer`].
#[derive(Clone)]
pub struct FailedAuthService<S> {
    inner: S,
    limiter: FailedAuthLimiter,
    cached: Option<CachedCheck>,
}

impl<S: fmt::Debug> fmt::Debug for FailedAuthService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedAuthService")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("pass_cached", &self.cached.is_some())
            .finish()
    }
}

/// Whether `check` lets `req` through although its address is over the limit.
fn passes_cached<B>(check: Option<&CachedCheck>, req: Request<B>) -> (bool, Request<B>) {
    let Some(check) = check else {
        return (false, req);
    };
    let (parts, body) = req.into_parts();
    let pass = check(&parts);
    (pass, Request::from_parts(parts, body))
}

impl<S> FailedAuthService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for FailedAuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = FailedAuthFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some(ip) = self.limiter.client_ip(&req) else {
            return FailedAuthFuture::inner(self.inner.call(req), None);
        };
        // Resolved once: the auth layer and the rate limiter inside read it.
        req.extensions_mut().insert(ClientIp(ip));
        match self.limiter.start(ip, 0).now() {
            Ok(answer) => match self.limiter.refusal(self.limiter.reading(ip, 0, answer)) {
                None => {
                    let charge = Some((self.limiter.clone(), ip));
                    FailedAuthFuture::inner(self.inner.call(req), charge)
                }
                Some(res) => match passes_cached(self.cached.as_ref(), req) {
                    (true, req) => {
                        let charge = Some((self.limiter.clone(), ip));
                        FailedAuthFuture::inner(self.inner.call(req), charge)
                    }
                    (false, _) => FailedAuthFuture::denied(counted(res).map(ResBody::from)),
                },
            },
            Err(pending) => {
                // A shared store: read the bucket, then call the service
                // that was made ready.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let limiter = self.limiter.clone();
                let cached = self.cached.clone();
                FailedAuthFuture::boxed(Box::pin(async move {
                    let answer = pending.await;
                    if answer.is_ok() {
                        limiter.inner.stores.answered();
                    }
                    let reading = limiter.reading(ip, 0, answer);
                    let req = match limiter.refusal(reading) {
                        None => req,
                        Some(res) => match passes_cached(cached.as_ref(), req) {
                            (true, req) => req,
                            (false, _) => return Ok(counted(res).map(ResBody::from)),
                        },
                    };
                    let res = inner.call(req).await?;
                    if res.status() == StatusCode::UNAUTHORIZED {
                        limiter.record_failure(ip).await;
                    }
                    Ok(res)
                }))
            }
        }
    }
}

type Boxed<F> = Pin<Box<dyn Future<Output = <F as Future>::Output> + Send>>;

pin_project! {
    /// The response future of [`FailedAuthService`].
    pub struct FailedAuthFuture<F: Future, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F: Future, B> {
        Inner {
            #[pin]
            future: F,
            // Who to charge if the answer is 401.
            charge: Option<(FailedAuthLimiter, IpAddr)>,
        },
        Denied {
            response: Option<Response<B>>,
        },
        Boxed {
            future: Boxed<F>,
        },
    }
}

impl<F: Future, B> FailedAuthFuture<F, B> {
    fn inner(future: F, charge: Option<(FailedAuthLimiter, IpAddr)>) -> Self {
        Self {
            kind: Kind::Inner { future, charge },
        }
    }

    fn denied(response: Response<B>) -> Self {
        Self {
            kind: Kind::Denied {
                response: Some(response),
            },
        }
    }

    fn boxed(future: Boxed<F>) -> Self {
        Self {
            kind: Kind::Boxed { future },
        }
    }
}

impl<F, B, E> Future for FailedAuthFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, charge } => {
                let res = ready!(future.poll(cx))?;
                if res.status() == StatusCode::UNAUTHORIZED {
                    if let Some((limiter, ip)) = charge.take() {
                        limiter.charge_failure(ip);
                    }
                }
                Poll::Ready(Ok(res))
            }
            KindProj::Denied { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => panic!("FailedAuthFuture polled after completion"),
            },
            KindProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F: Future, B> fmt::Debug for FailedAuthFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedAuthFuture").finish_non_exhaustive()
    }
}
