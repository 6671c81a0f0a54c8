//! Argon2id parameters and hashing errors for
//! [`SecretHasher`](crate::SecretHasher).

pub use crate::hasher::{HashError, HashParams};
