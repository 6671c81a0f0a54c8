//! What the two limiters ([`RateLimiter`](crate::RateLimiter) and
//! [`FailedAuthLimiter`](crate::FailedAuthLimiter)) are configured with
//! alike: how clients are told apart, how refusals are written and where
//! the buckets live. One struct and one set of builder setters, so the two
//! builders cannot drift apart.

use std::{sync::Arc, time::Duration};

use auth_core::response::ErrorFormat;

use crate::{
    fallback::Stores,
    memory::{DEFAULT_MAX_KEYS, DEFAULT_SWEEP_INTERVAL},
    MemoryStore, MonotonicClock, OnStoreError, QuantaClock, RateLimitStore, TrustedProxies,
};

/// The settings behind `limiter_setters!`.
pub(crate) struct LimiterOptions {
    pub(crate) format: ErrorFormat,
    pub(crate) proxies: TrustedProxies,
    pub(crate) ipv6_prefix: u8,
    pub(crate) ipv6_site: crate::ipv6_site::Ipv6Site,
    pub(crate) clock: Option<Arc<dyn MonotonicClock>>,
    pub(crate) max_keys: usize,
    pub(crate) sweep_interval: Duration,
    pub(crate) store: Option<Arc<dyn RateLimitStore>>,
    pub(crate) on_store_error: OnStoreError,
}

impl Default for LimiterOptions {
    fn default() -> Self {
        Self {
            format: ErrorFormat::default(),
            proxies: TrustedProxies::none(),
            ipv6_prefix: 64,
            ipv6_site: crate::ipv6_site::Ipv6Site::default(),
            clock: None,
            max_keys: DEFAULT_MAX_KEYS,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            store: None,
            on_store_error: OnStoreError::default(),
        }
    }
}

impl LimiterOptions {
    /// The limiter's clock: the injected one, else the real one.
    pub(crate) fn clock(&self) -> Arc<dyn MonotonicClock> {
        self.clock.clone().unwrap_or_else(|| Arc::new(QuantaClock))
    }

    /// The shared store, if any, with the in-memory buckets behind it.
    pub(crate) fn stores(&self) -> Stores {
        // Without an injected clock the store keeps the real one as itself,
        // so it calls it directly.
        let mut memory = MemoryStore::for_limiter();
        if let Some(clock) = &self.clock {
            memory = memory.clock(clock.clone());
        }
        let memory = memory
            .max_keys(self.max_keys)
            .sweep_interval(self.sweep_interval);
        Stores::new(memory, self.store.clone(), self.on_store_error)
    }
}

/// The public setters of [`LimiterOptions`], for a builder holding them in
/// an `options` field. (`redis` is not here: the rate limiter also keeps
/// the store for credits.)
macro_rules! limiter_setters {
    () => {
        /// The JSON error format of the 429 (and 503) answers; use the auth
        /// layer's, so clients see one format. Default
        /// [`ErrorFormat::Flat`](auth_core::response::ErrorFormat::Flat).
        pub fn error_format(mut self, format: auth_core::response::ErrorFormat) -> Self {
            self.options.format = format;
            self
        }

        /// Proxies whose forwarding headers name the client (default: none,
        /// the socket peer is the client). Used when no earlier component
        /// (the auth layer, the failed-authentication limiter, which runs
        /// first) left a [`ClientIp`](auth_core::client_ip::ClientIp) in the request; give
        /// all of them the same [`TrustedProxies`](auth_core::client_ip::TrustedProxies).
        pub fn trusted_proxies(mut self, proxies: $crate::TrustedProxies) -> Self {
            self.options.proxies = proxies;
            self
        }

        /// IPv6 clients share a bucket per network of this prefix length
        /// (default 64, as one subscriber usually holds a /64; 128 for one
        /// bucket per address).
        pub fn ipv6_prefix(mut self, bits: u8) -> Self {
            self.options.ipv6_prefix = bits.min(128);
            self
        }

        /// IPv6 clients are also counted in an aggregate bucket per network
        /// of `bits` (default 48, a site's usual assignment), whose quota is
        /// `multiplier` times the rule's (default 16: the same window, 16
        /// times the requests). So the holder of a /48 gets at most 16 times
        /// one /64's quota, not 65,536 times. A multiplier of 0 turns the
        /// aggregate off.
        pub fn ipv6_site(mut self, bits: u8, multiplier: u32) -> Self {
            self.options.ipv6_site = $crate::ipv6_site::Ipv6Site {
                bits: bits.min(128),
                multiplier,
            };
            self
        }

        /// The clock of the in-memory buckets (default the real one); tests
        /// pass a [`FakeClock`](crate::clock::FakeClock). A shared store has its
        /// own (Redis: the server's time unless
        /// `RedisStore::clock` says otherwise).
        pub fn clock(mut self, clock: impl $crate::MonotonicClock) -> Self {
            self.options.clock = Some(std::sync::Arc::new(clock));
            self
        }

        /// Cap on keys tracked in memory (default 1,000,000); see
        /// [`MemoryStore`](crate::MemoryStore) for what happens at the cap.
        pub fn max_keys(mut self, max_keys: usize) -> Self {
            self.options.max_keys = max_keys;
            self
        }

        /// How often, at most, full in-memory buckets are swept (default 60 s).
        pub fn sweep_interval(mut self, every: std::time::Duration) -> Self {
            self.options.sweep_interval = every;
            self
        }

        /// Keeps the buckets in `store`, for instance one shared by every
        /// instance; the in-memory buckets then serve as the fallback (see
        /// [`on_store_error`](Self::on_store_error)).
        pub fn store(mut self, store: impl $crate::RateLimitStore) -> Self {
            self.options.store = Some(std::sync::Arc::new(store));
            self
        }

        /// What to do when the shared store cannot answer (default: fall
        /// back to memory).
        pub fn on_store_error(mut self, policy: $crate::OnStoreError) -> Self {
            self.options.on_store_error = policy;
            self
        }
    };
}
pub(crate) use limiter_setters;
