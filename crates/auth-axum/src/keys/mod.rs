#![doc = include_str!("../docs/keys.md")]

// Dependencies flow one way: the request, response, error and policy
// modules and `manager` (configuration and the rules) know no routes;
// `caller`, `edit` and `csrf` build on `manager`; `routes` (`keys_router`)
// and `admin` (`admin_keys_router`) are the two routers on top.
mod admin;
mod caller;
mod csrf;
mod default_scopes;
mod edit;
mod enforced;
mod error;
mod manager;
mod origins;
mod owner;
mod policy_input;
mod request;
mod response;
mod routes;
mod usage;

/// The bodies and query strings, for the OpenAPI document's schemas.
#[cfg(feature = "openapi")]
pub(crate) use self::{
    admin::{AdminKeyList, ListParams},
    edit::EditKey,
    request::{ActivityQuery, CreateKey, RotateKey},
    response::{CreatedKey, KeyList},
    routes::KeyOptions,
    usage::{Usage, UsageParams},
};
pub use admin::{admin_keys_router, KeyAdmin};
pub use default_scopes::DefaultScopes;
pub use enforced::EnforcedPolicy;
pub use manager::KeyManager;
pub use origins::AllowedOrigins;
pub use owner::KeyOwner;
pub use routes::keys_router;
