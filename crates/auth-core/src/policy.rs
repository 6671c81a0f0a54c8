//! What a key carries besides its scopes: its name rules, the
//! application's metadata, an IP allowlist, its own rate limit and usage
//! credits.
//!
//! Whether a key may be used from an address is
//! [`AuthContext::allows_ip`](crate::AuthContext::allows_ip).

pub use crate::credits::{CreditSpend, Credits, Refill, RefillEvery, MAX_CREDITS};
pub use crate::issuer::{validate_name, MAX_NAME_LEN};
pub use crate::key_policy::{KeyPolicy, KeyRateLimit, MAX_EXTERNAL_ID_LEN, MAX_META_BYTES};
