//! The key-management router: the "Settings → API tokens" screens as an API.
//!
//! | Route | Answer |
//! |---|---|
//! | `POST /` `{"name", "scopes", "expires_at", "meta", "ip_allowlist", "rate_limit", "remaining", "refill"}` | 201: the key's metadata and its `token`, shown this once |
//! | `GET /` | 200 `{"keys": [...]}`: the owner's keys, newest first, without secrets or hashes |
//! | `GET /options` | 200 `{"scopes": [{"name", "description", "grantable"}], "max_grace_seconds"}`: what a "New key" form offers this owner |
//! | `GET /{id}` | 200: one key's metadata |
//! | `PATCH /{id}` with any of `{"name", "scopes", "expires_at", "meta", "enabled", "ip_allowlist"}` | 200: the key's metadata after the edit |
//! | `DELETE /{id}` | 204: revoked, effective on the next request |
//! | `POST /{id}/rotate` `{"grace_seconds": N}` (body optional) | 201: the replacement key and its `token`; the old one works for N more seconds |
//! | `GET /{id}/activity?limit=&before=` | 200 `{"events": [...], "next_cursor"}`: the key's audit events, newest first |
//! | `GET /{id}/usage?bucket=hour\|day&since=<RFC 3339>` | 200 `{"bucket", "buckets": [{"start", "success", "refused", "rate_limited"}]}`: requests per bucket and outcome, every bucket from `since` (default 7 days of hours, 30 of days) to now, oldest first |
//!
//! Only `name` is required on `POST /`. Without `scopes` the key gets the
//! manager's [`DefaultScopes`] (none, or everything the owner may grant);
//! `"scopes": []` always means none, and `"scopes": null` is refused (422
//! `null_not_allowed`), as is `null` for any field whose meaning is not
//! stated here. The policy fields:
//!
//! * `meta`: a JSON object of at most 4 KiB. It is the key holder's to
//!   write (here and by `PATCH`): handlers must treat it as user input,
//!   never as something the application vouches for;
//! * `ip_allowlist`: CIDR blocks or addresses (at most 64), e.g.
//!   `["203.0.113.0/24", "2001:db8::/32"]`; empty: any address;
//! * `rate_limit`: `{"limit": 100, "period_seconds": 60}`, the key's own
//!   quota: at most `limit` requests at once and no faster on average. It
//!   only tightens: a limiter with a per-key-quota rule applies the smaller
//!   burst and the lower rate of it and the owner's tier, so a slower but
//!   burstier limit brings no more requests at once than the tier allows;
//! * `remaining` and `refill` (`{"amount": N, "every": "hour"|"day"|"week"|"month"}`):
//!   a usage-limited key's credits.
//!
//! A policy accepted is a policy enforced: `rate_limit` and the credits are
//! refused with 422 `policy_not_enforced` (naming the field) unless the
//! application declares that it enforces them ([`KeyManager::enforces`],
//! [`EnforcedPolicy`]).
//!
//! `external_id`, the application's own id for a key (a customer or tenant
//! id handlers read from `AuthContext::external_id` and trust), is *not*
//! settable here: a body carrying it, even as `null`, is refused with 422
//! `field_not_settable`. The application sets it through
//! `KeyIssuer::issue` (`NewKey::policy`) or `KeyStore::update`. Listings
//! show it.
//!
//! Listings show each of them, and `state`: `active`, `expiring` (ends within
//! [`KeyManager::expiring_within`], default 7 days), `expired`, `revoked`,
//! `disabled` or `replaced`; `last_used_ip` is the address of the latest
//! recorded use.
//!
//! `PATCH /{id}` edits a key in place: `scopes` only narrows (a scope the key
//! does not hold is 422 `scopes_not_narrowed`), `expires_at` only moves
//! earlier and stays in the future (422 `expiry_not_shortened`), `"enabled":
//! false` disables the key and `true` enables it again, `meta: null` /
//! `ip_allowlist: []` clear. The edit goes through
//! `KeyStore::update`, whose change feed makes every instance's cache drop
//! the key: a disabled key is refused from its next request, with the same
//! 401 as a key that does not exist (the audit log says `disabled`). A key
//! that is revoked, expired or replaced cannot be edited (409); a key-backed
//! caller cannot edit a key holding a scope it may not grant (403), as for
//! rotation.
//!
//! Refusals, in the error format of the `AuthLayer` in front: 415
//! `unsupported_media_type` for a create or rotate body not declared
//! `application/json` (or `+json`), 403 `cross_origin_request` for a change
//! that carries a cookie or names an origin, from anywhere but this host or
//! the origins of [`KeyManager::check_origin`] (both against CSRF; see the
//! `csrf` module); 400 for a body that is not JSON; 422 for an empty or too long name, a malformed or
//! unknown scope, a past expiry or too long a grace period, and, with a
//! [`KeyManager::max_key_lifetime`], 422 `expiry_required` or
//! `lifetime_exceeded` for a key without or beyond it, and with codes of
//! their own for bad policy fields (`meta_too_large`,
//! `invalid_ip_allowlist` naming the entry, `invalid_rate_limit`,
//! `invalid_credits`, `policy_not_enforced`, `field_not_settable`,
//! `null_not_allowed`) and edits (`scopes_not_narrowed`,
//! `expiry_not_shortened`, `nothing_to_change`); 403 for a scope
//! beyond the owner's [`KeyOwner::grantable_scopes`]; 404 for a key that does
//! not exist *or belongs to someone else*; 409 `conflict` for rotating a
//! revoked, expired or already rotated key; 503 when the store is down.
//! Every answer carries `Cache-Control: no-store`.
//!
//! Lifecycle rules when the owner is identified by an API key
//! ([`KeyOwner::acting_key`]):
//!
//! * one rule of authority: a key acts only on keys no broader than itself.
//!   Showing, reading the activity or usage of, editing, revoking and
//!   rotating a key holding a scope the calling key lacks, ending later,
//!   usable from addresses outside its allowlist, with a looser rate limit
//!   (burst or rate) or more credits is refused with 403 (the scope case
//!   with `forbidden`, the others with `policy_exceeds_caller`, naming the
//!   field); listings leave such keys out. A key's new keys obey the same
//!   bounds. Sessions (no acting key), the admin router and the command
//!   line are bounded by ownership only;
//! * a key makes (creates or rotates into) only keys that end no later than
//!   itself: a later or absent `expires_at` is refused with 422 naming the
//!   limit (refused, not clamped, so the client never gets a shorter-lived
//!   key than it asked for without noticing);
//! * a key replaced by rotation keeps working for the API during its grace
//!   period, but every key-management route refuses it with 403;
//! * every key records `created_by`, the key that made it (`null` from the
//!   command line or a session), shown in listings;
//! * a key acting on behalf of another user (`X-Subject-User`) may not create
//!   or rotate keys (403) unless [`KeyManager::allow_minting_as_subject`].

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
