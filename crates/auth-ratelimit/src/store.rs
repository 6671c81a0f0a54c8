//! Where buckets live: the [`RateLimitStore`] trait, which the in-memory
//! [`MemoryStore`](crate::MemoryStore) and (feature `redis`) `RedisStore`
//! implement, as `governor`'s `StateStore` does for its states; what they
//! answer ([`Decision`]); their defaults.
//!
//! A limiter holds one store. A check hands it every bucket that applies to
//! a request ([`Bucket`]), and the store takes each bucket's cost only if
//! every bucket holds it: a request refused by one limit costs nothing
//! against the others. The memory store answers at once
//! ([`StoreFuture::ready`]); a shared store answers after a round trip
//! ([`StoreFuture::pending`]), and the limiter's
//! [`OnStoreError`](crate::OnStoreError) policy decides what happens when it
//! cannot answer.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use smallvec::SmallVec;

pub use crate::decision::Decision;
pub use crate::memory::{DEFAULT_MAX_KEYS, DEFAULT_SWEEP_INTERVAL};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::redis_store::{DEFAULT_REDIS_RETRY, DEFAULT_REDIS_TIMEOUT};
use crate::{
    key::{KeyValue, LimitKey},
    LimitStoreError, Quota,
};

/// How many buckets a request keeps on the stack (a handful of rules).
pub(crate) const RULES_INLINE: usize = 4;

/// One decision per bucket, in the order the buckets were given.
pub type Decisions = SmallVec<[Decision; RULES_INLINE]>;

/// Where a limiter keeps its token buckets.
///
/// Implementations must give every bucket the GCRA arithmetic of
/// [`Quota`]: the shared conformance suite in the crate's tests checks a
/// store against a textbook token bucket with a fake clock.
pub trait RateLimitStore: fmt::Debug + Send + Sync + 'static {
    /// Takes each bucket's cost if every bucket holds it, else takes nothing.
    ///
    /// Answers one decision per bucket, in order. When all allow, each
    /// decision is the bucket after taking. When any refuses, the refusing
    /// buckets answer their refusal and the others what they hold now,
    /// as allowed decisions (nothing was taken from them).
    fn check_all(&self, buckets: &[Bucket<'_>]) -> StoreFuture<Decisions>;

    /// Charges [`Bucket::cost`] tokens whether or not the bucket holds them
    /// (for events that already happened, such as failed authentications),
    /// keeping its debt within `max_debt` ahead of now; a cost of 0 only
    /// reads. Answers what a check of one token would now get.
    fn charge(&self, bucket: &Bucket<'_>, max_debt: Duration) -> StoreFuture<Decision>;
}

/// One token bucket of a check: whose bucket, under which limit, its quota
/// and what the request costs.
///
/// ```
/// use auth_ratelimit::{clock::FakeClock, store::{Bucket, RateLimitStore}, MemoryStore, Quota};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemoryStore::for_limiter().clock(FakeClock::new());
/// let q = Quota::per_minute(2);
/// let alice = Bucket::new("exports", "alice", q, 1);
/// assert!(store.check_all(&[alice.clone()]).await.unwrap()[0].is_allowed());
/// assert!(store.check_all(&[alice.clone()]).await.unwrap()[0].is_allowed());
/// assert!(!store.check_all(&[alice]).await.unwrap()[0].is_allowed());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Bucket<'a> {
    /// The rule's index in its limiter (`usize::MAX` for [`Bucket::new`]).
    pub(crate) rule: usize,
    pub(crate) name: &'a str,
    pub(crate) value: KeyValue<'a>,
    pub(crate) key: LimitKey,
    pub(crate) quota: Quota,
    pub(crate) cost: u32,
}

impl<'a> Bucket<'a> {
    /// The bucket `key` of the limit called `name`, taking `cost` tokens of
    /// `quota`. Buckets with the same name and key are one bucket.
    pub fn new(name: &'a str, key: impl Into<String>, quota: Quota, cost: u32) -> Self {
        let value = KeyValue::Custom(key.into());
        Self {
            rule: usize::MAX,
            key: LimitKey::named(name, &value),
            name,
            value,
            quota,
            cost,
        }
    }

    /// The bucket of rule number `rule`, called `name`, for `value`.
    #[inline]
    pub(crate) fn for_rule(
        rule: usize,
        name: &'a str,
        value: KeyValue<'a>,
        quota: Quota,
        cost: u32,
    ) -> Self {
        Self {
            rule,
            key: LimitKey::new(rule, &value),
            name,
            value,
            quota,
            cost,
        }
    }

    /// The name of the limit the bucket belongs to.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The bucket's quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// How many tokens the request takes.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// The bucket's identity within this process (a fixed-size digest).
    #[inline]
    pub fn limit_key(&self) -> LimitKey {
        self.key
    }

    /// Appends the bucket's identity as text, the same in every process:
    /// the limit's name, `:`, then a type tag and the value (for keys shared
    /// between instances, as in Redis).
    pub fn write_key(&self, out: &mut String) {
        out.push_str(self.name);
        out.push(':');
        self.value.write_to(out);
    }

    /// [`Bucket::write_key`], except that a user-chosen identifier is
    /// returned instead of written (see `KeyValue::write_hiding_names`).
    #[cfg(feature = "redis")]
    pub(crate) fn write_key_hiding_names(&self, out: &mut String) -> Option<String> {
        out.push_str(self.name);
        out.push(':');
        self.value.write_hiding_names(out)
    }
}

/// A store's answer: ready now (the memory store), or after a round trip.
///
/// It is a [`Future`]; a limiter looks at [`StoreFuture::now`] first so an
/// answer that is ready costs no allocation and no poll.
#[must_use = "a store answer does nothing unless looked at"]
pub enum StoreFuture<T> {
    /// The answer, until taken.
    Ready(Option<Result<T, LimitStoreError>>),
    /// The answer to come.
    Pending(Pin<Box<dyn Future<Output = Result<T, LimitStoreError>> + Send>>),
}

impl<T> StoreFuture<T> {
    /// An answer available now.
    #[inline]
    pub fn ready(result: Result<T, LimitStoreError>) -> Self {
        Self::Ready(Some(result))
    }

    /// An answer `future` will give.
    pub fn pending(
        future: impl Future<Output = Result<T, LimitStoreError>> + Send + 'static,
    ) -> Self {
        Self::Pending(Box::pin(future))
    }

    /// The answer if it is ready, else the future to await.
    #[inline]
    pub fn now(self) -> Result<Result<T, LimitStoreError>, Self> {
        match self {
            Self::Ready(Some(r)) => Ok(r),
            other => Err(other),
        }
    }
}

impl<T: Unpin> Future for StoreFuture<T> {
    type Output = Result<T, LimitStoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Both variants are Unpin (an Option, a Box).
        match self.get_mut() {
            Self::Ready(r) => Poll::Ready(
                r.take()
                    .unwrap_or_else(|| Err(LimitStoreError::backend("answer already taken"))),
            ),
            Self::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for StoreFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ready(_) => "StoreFuture::Ready",
            Self::Pending(_) => "StoreFuture::Pending",
        })
    }
}
