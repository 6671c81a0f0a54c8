//! Argon2id hashing of key secrets, off the async worker threads.

use std::{fmt, sync::Arc};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// Hashing failed (bad parameters, a corrupt stored hash, a lost worker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hashing failed: {0}")]
pub struct HashError(pub String);

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB (default 19456, i.e. 19 MiB).
    pub m_cost: u32,
    /// Iterations (default 2).
    pub t_cost: u32,
    /// Parallelism (default 1).
    pub p_cost: u32,
}

impl Default for HashParams {
    /// OWASP's argon2id baseline: m=19456 KiB, t=2, p=1.
    fn default() -> Self {
        Self {
            m_cost: 19_456,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

/// Hashes and verifies secrets with argon2id on the blocking thread pool,
/// at most `concurrency` at a time, so a burst cannot stall the runtime.
/// Cheap to clone; clones share the bound.
#[derive(Clone)]
pub struct SecretHasher {
    argon: Arc<Argon2<'static>>,
    params: HashParams,
    permits: Arc<Semaphore>,
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretHasher")
            .field("params", &self.params)
            .field("available_permits", &self.permits.available_permits())
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

    /// A hasher with `params`, at most `concurrency` hashes at once.
    pub fn with_concurrency(params: HashParams, concurrency: usize) -> Result<Self, HashError> {
        let p = Params::new(params.m_cost, params.t_cost, params.p_cost, None)
            .map_err(|e| HashError(e.to_string()))?;
        Ok(Self {
            argon: Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, p)),
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    /// Cheap parameters (m=64 KiB, t=1): for tests and doc examples only.
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
                .map_err(|e| HashError(e.to_string()))
        })
        .await
    }

    /// Whether `secret` matches the PHC string `phc` (in constant time).
    pub async fn verify(&self, secret: &[u8; 32], phc: &str) -> Result<bool, HashError> {
        let secret = Zeroizing::new(*secret);
        let phc = phc.to_owned();
        let argon = self.argon.clone();
        self.run("verify", move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| HashError(e.to_string()))?;
            match argon.verify_password(&secret[..], &parsed) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::Password) => Ok(false),
                Err(e) => Err(HashError(e.to_string())),
            }
        })
        .await
    }

    /// Whether `phc` was made with weaker parameters than the current ones.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let Ok(p) = Params::try_from(&parsed) else {
            return true;
        };
        parsed.algorithm != argon2::ARGON2ID_IDENT
            || p.m_cost() < self.params.m_cost
            || p.t_cost() < self.params.t_cost
            || p.p_cost() < self.params.p_cost
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashError("hasher closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = f();
            crate::metrics::argon2_run(operation, started);
            result
        })
        .await
        .map_err(|e| HashError(format!("hash worker failed: {e}")))?
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
