//! Argon2id hashing of key secrets, off the async worker threads.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// Hashing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// Bad parameters, a corrupt stored hash, a lost worker: `source()` is
    /// the argon2 or task error.
    #[error("hashing failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Too many hashes already waiting (see [`SecretHasher::with_queue`]):
    /// refused at once rather than queued without bound. Callers answer 503
    /// with `Retry-After`.
    #[error("too many secrets waiting to be hashed")]
    Busy,
}

/// Argon2id cost parameters.
///
/// The default is chosen for what is hashed: random 256-bit secrets, not
/// passwords. Against a secret with 256 bits of entropy, a slow hash adds
/// nothing a cheap one does not already give (2^255 guesses on average
/// either way), while each verification's cost is paid on every cold
/// request. See "Threat model" in `docs/ARCHITECTURE.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HashParams {
    /// Memory in KiB (default 256).
    pub m_cost: u32,
    /// Iterations (default 1).
    pub t_cost: u32,
    /// Parallelism (default 1).
    pub p_cost: u32,
}

impl Default for HashParams {
    /// m=256 KiB, t=1, p=1: for random 256-bit secrets.
    fn default() -> Self {
        Self::RANDOM_SECRET
    }
}

impl HashParams {
    /// Memory in KiB, iterations and parallelism.
    pub const fn new(m_cost: u32, t_cost: u32, p_cost: u32) -> Self {
        Self {
            m_cost,
            t_cost,
            p_cost,
        }
    }

    /// m=256 KiB, t=1, p=1: the default, for random 256-bit secrets.
    pub const RANDOM_SECRET: Self = Self {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    };

    /// OWASP's argon2id baseline for passwords (m=19456 KiB, t=2, p=1): the
    /// default before the secret check; records hashed with it are re-hashed
    /// with the current parameters on their next successful verification.
    pub const OWASP_PASSWORD: Self = Self {
        m_cost: 19_456,
        t_cost: 2,
        p_cost: 1,
    };
}

/// Hashes allowed to wait for a worker, per worker, by default.
const QUEUE_PER_WORKER: usize = 128;

/// Hashes and verifies secrets with argon2id on the blocking thread pool,
/// at most `concurrency` at a time, so a burst cannot stall the runtime, and
/// with at most a bounded number waiting: past it, [`HashError::Busy`] at
/// once (no unbounded memory). Cheap to clone; clones share the bounds.
#[derive(Clone)]
pub struct SecretHasher {
    argon: Arc<Argon2<'static>>,
    params: HashParams,
    permits: Arc<Semaphore>,
    max_waiting: usize,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    waiting: AtomicUsize,
    runs: AtomicU64,
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretHasher")
            .field("params", &self.params)
            .field("available_permits", &self.permits.available_permits())
            .field("max_waiting", &self.max_waiting)
            .finish()
    }
}

impl Default for SecretHasher {
    fn default() -> Self {
        Self::new(HashParams::default()).expect("default argon2 parameters are valid")
    }
}

impl SecretHasher {
    /// A hasher with `params`, as many at once as there are CPUs.
    pub fn new(params: HashParams) -> Result<Self, HashError> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_concurrency(params, cpus)
    }

    /// A hasher with `params`, at most `concurrency` hashes at once and
    /// 128 per worker waiting.
    pub fn with_concurrency(params: HashParams, concurrency: usize) -> Result<Self, HashError> {
        let p = Params::new(params.m_cost, params.t_cost, params.p_cost, None)
            .map_err(|e| HashError::Failed(e.into()))?;
        let concurrency = concurrency.max(1);
        Ok(Self {
            argon: Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, p)),
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            max_waiting: concurrency.saturating_mul(QUEUE_PER_WORKER),
            counters: Arc::default(),
        })
    }

    /// At most `max_waiting` hashes wait for a worker; one more is refused
    /// with [`HashError::Busy`]. Clones made before this keep their bound.
    pub fn with_queue(mut self, max_waiting: usize) -> Self {
        self.max_waiting = max_waiting;
        self
    }

    /// How many argon2 runs (hashes and verifications) this hasher and its
    /// clones have started: for metrics and for tests proving a path costs none.
    pub fn runs(&self) -> u64 {
        self.counters.runs.load(Ordering::Relaxed)
    }

    /// Cheap parameters (m=64 KiB, t=1): for tests and doc examples only.
    ///
    /// **Not for production.** Behind the `test-util` feature, which only
    /// `[dev-dependencies]` should enable: a production build that reaches
    /// for this constructor does not compile. Use [`SecretHasher::default`]
    /// or [`SecretHasher::new`].
    #[cfg(any(test, feature = "test-util"))]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn for_tests() -> Self {
        Self::new(HashParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        })
        .expect("valid test parameters")
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// A PHC string for `secret` with a fresh random salt.
    pub async fn hash(&self, secret: &[u8; 32]) -> Result<String, HashError> {
        let secret = Zeroizing::new(*secret);
        let argon = self.argon.clone();
        self.run("hash", move || {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(&secret[..], &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError::Failed(e.into()))
        })
        .await
    }

    /// Whether `secret` matches the PHC string `phc` (in constant time).
    pub async fn verify(&self, secret: &[u8; 32], phc: &str) -> Result<bool, HashError> {
        let secret = Zeroizing::new(*secret);
        let phc = phc.to_owned();
        let argon = self.argon.clone();
        self.run("verify", move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| HashError::Failed(e.into()))?;
            match argon.verify_password(&secret[..], &parsed) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::Password) => Ok(false),
                Err(e) => Err(HashError::Failed(e.into())),
            }
        })
        .await
    }

    /// Whether `phc` was made with other parameters than the current ones
    /// (stronger or weaker: records move to whatever is configured, e.g.
    /// from the password-grade default to the random-secret one).
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let Ok(p) = Params::try_from(&parsed) else {
            return true;
        };
        parsed.algorithm != argon2::ARGON2ID_IDENT
            || p.m_cost() != self.params.m_cost
            || p.t_cost() != self.params.t_cost
            || p.p_cost() != self.params.p_cost
    }

    /// Takes every worker, as a burst of hashes would (tests only).
    #[cfg(test)]
    pub(crate) fn occupy_workers(&self) -> tokio::sync::OwnedSemaphorePermit {
        let n = self.permits.available_permits() as u32;
        self.permits.clone().try_acquire_many_owned(n).unwrap()
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => {
                return Err(HashError::Failed("hasher closed".into()))
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let waiting = &self.counters.waiting;
                if waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(HashError::Busy);
                }
                // Decremented however the wait ends (granted or cancelled).
                let _queued = Queued(waiting);
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| HashError::Failed("hasher closed".into()))?
            }
        };
        self.counters.runs.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let started = std::time::Instant::now();
            let result = f();
            crate::metrics::argon2_run(operation, started);
            result
        })
        .await
        .map_err(|e| HashError::Failed(e.into()))?
    }
}

struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = SecretHasher::for_tests();
        let phc = h.hash(&[7; 32]).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(h.verify(&[7; 32], &phc).await.unwrap());
        assert!(!h.verify(&[8; 32], &phc).await.unwrap());
        assert!(h.verify(&[7; 32], "not a phc").await.is_err());
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_not_queued_without_bound() {
        let h = SecretHasher::with_concurrency(
            HashParams {
                m_cost: 64,
                t_cost: 1,
                p_cost: 1,
            },
            1,
        )
        .unwrap()
        .with_queue(1);
        let workers = h.occupy_workers();
        let queued = {
            let h = h.clone();
            tokio::spawn(async move { h.hash(&[1; 32]).await })
        };
        while h.counters.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(h.hash(&[2; 32]).await, Err(HashError::Busy)));
        assert!(matches!(
            h.verify(&[2; 32], "x").await,
            Err(HashError::Busy)
        ));
        drop(workers);
        assert!(queued.await.unwrap().is_ok());
        assert_eq!(h.counters.waiting.load(Ordering::Acquire), 0);
        assert!(h.hash(&[3; 32]).await.is_ok(), "room again once drained");
        assert_eq!(h.runs(), 2, "refused calls ran nothing");
    }

    #[tokio::test]
    async fn raised_parameters_need_rehash() {
        let weak = SecretHasher::for_tests();
        let phc = weak.hash(&[1; 32]).await.unwrap();
        assert!(!weak.needs_rehash(&phc));
        let strong = SecretHasher::new(HashParams {
            m_cost: 128,
            t_cost: 2,
            p_cost: 1,
        })
        .unwrap();
        assert!(strong.needs_rehash(&phc));
    }
}
