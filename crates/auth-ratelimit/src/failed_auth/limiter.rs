//! [`FailedAuthLimiter`]: failed authentications per client address.

use std::{
    fmt,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use auth_core::{client_ip::TrustedProxies, response::ErrorFormat, AuthError};
use bytes::Bytes;
use http::{Request, Response, StatusCode};

use crate::options::{limiter_setters, LimiterOptions};
use crate::FailedAuthLayer;
use crate::{
    fallback::{LimiterMemory, Stores},
    key::{KeyValue, RequestInfo},
    store::{Bucket, Decision, StoreFuture},
    LimitStoreError, OnStoreError, Quota,
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

    /// Notes that the shared store answered (ends a fallback).
    pub(super) fn answered(&self) {
        self.inner.stores.answered();
    }

    /// The in-memory buckets (the only ones, or the fallback when Redis is down).
    pub fn memory(&self) -> &LimiterMemory {
        &self.inner.stores.memory
    }

    /// A layer applying this limiter; put it outside the auth layer.
    pub fn layer(&self) -> FailedAuthLayer {
        FailedAuthLayer::new(self.clone())
    }

    /// The client address `req` is counted under: the [`ClientIp`](auth_core::client_ip::ClientIp) an
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
    pub(super) fn start(&self, ip: IpAddr, charge: u32) -> StoreFuture<Decision> {
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
    pub(super) fn reading(
        &self,
        ip: IpAddr,
        charge: u32,
        answer: Result<Decision, LimitStoreError>,
    ) -> Reading {
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
    pub(super) fn charge_failure(&self, ip: IpAddr) {
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
    pub(super) fn refusal(&self, reading: Reading) -> Option<Response<Bytes>> {
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
    a: Result<Decision, LimitStoreError>,
    b: Result<Decision, LimitStoreError>,
) -> Result<Decision, LimitStoreError> {
    let (a, b) = (a?, b?);
    Ok(if crate::headers::more_restrictive(&b, &a) {
        b
    } else {
        a
    })
}

/// `res`, counted as a refusal when it is the limit's 429 (not a 503).
pub(super) fn counted(res: Response<Bytes>) -> Response<Bytes> {
    if res.status() == StatusCode::TOO_MANY_REQUESTS {
        crate::metrics::failed_auth_refusal();
    }
    res
}

/// What a check of the failure bucket found.
pub(super) enum Reading {
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
