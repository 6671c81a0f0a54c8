//! Scope rules beyond [`ScopeSet`](crate::ScopeSet): validation, the
//! implication policy a verifier applies, and the error of an unknown
//! [`AccessLevel`](crate::AccessLevel).

pub use crate::access::InvalidAccessLevel;
pub use crate::scope_set::{validate_scope, InvalidScope, ScopePolicy, MAX_SCOPE_LEN};
