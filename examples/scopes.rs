//! `cargo run --example scopes`: what a key may do (scopes) and what its
//! user may do to one resource (access levels).
//!
//! Two checks, in this order:
//! - the key's scopes, per route: `notes:read` to read, `notes:write` to edit
//!   (`RequireScopeLayer` on a group of routes, `Scoped<R>` in one handler);
//! - the user's access level on the note (Owner, Admin, Editor, Viewer), from
//!   the application's own grants (`GrantResolver`, used by `Access`).
//!
//! It prints three tokens: alice (read + write), bob (read + write, but only a
//! Viewer of alice's note) and a read-only key of alice's. Try:
//!
//! ```sh
//! curl -H "Authorization: Bearer $ALICE" http://127.0.0.1:3011/notes/n1
//! curl -X PUT -H "Authorization: Bearer $BOB" http://127.0.0.1:3011/notes/n1   # 403: Viewer
//! curl -X PUT -H "Authorization: Bearer $READ_ONLY" http://127.0.0.1:3011/notes/n1   # 403: scope
//! ```

use std::{collections::HashMap, net::SocketAddr};

use async_trait::async_trait;
use auth_axum::{
    Access, AuthRejection, GrantResolver, Grants, Match, RequireScopeLayer, ScopeRule, Scoped,
};
use auth_core::{store::open_store, AccessLevel, Keys, NewKey, Principal, ScopeSet, TokenPrefix};
use auth_ratelimit::{Quota, RateLimiter, RedisStore, Rule};
use auth_tower::{AuthLayer, ResolveError};
use axum::{extract::Path, routing::get, Extension, Router};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// The key store: a SQLite file (created if missing) or a postgres:// URL
    #[arg(long, default_value = "data/scopes.db")]
    db: String,
    /// Share the rate limits with other instances through this Redis
    #[arg(long)]
    redis: Option<String>,
    /// Where to listen
    #[arg(long, default_value = "127.0.0.1:3011")]
    addr: SocketAddr,
}

/// The scope a handler needs, checked by the `Scoped` extractor.
struct WriteNotes;
impl ScopeRule for WriteNotes {
    const SCOPES: &'static [&'static str] = &["notes:write"];
    const MATCH: Match = Match::All;
}

/// The application's grants: (user, note) -> level. A real service asks its database.
struct NoteGrants(HashMap<(&'static str, &'static str), AccessLevel>);

#[async_trait]
impl GrantResolver for NoteGrants {
    async fn level(
        &self,
        who: &Principal,
        note: &str,
    ) -> Result<Option<AccessLevel>, ResolveError> {
        Ok(self
            .0
            .iter()
            .find(|((u, n), _)| *u == who.user_id() && *n == note)
            .map(|(_, l)| *l))
    }
}

async fn read_note(access: Access, Path(id): Path<String>) -> Result<String, AuthRejection> {
    let level = access.require(&id, AccessLevel::Viewer).await?;
    Ok(format!("note {id}, read as {level}\n"))
}

async fn edit_note(
    Scoped(ctx, _): Scoped<WriteNotes>,
    access: Access,
    Path(id): Path<String>,
) -> Result<String, AuthRejection> {
    let level = access.require(&id, AccessLevel::Editor).await?;
    Ok(format!(
        "{} edited note {id} as {level}\n",
        ctx.effective_user()
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = open_store(&args.db).await?;
    // The issuer and the verifier, from one hasher (argon2id defaults) and
    // one prefix, so they cannot disagree.
    let Keys {
        issuer, verifier, ..
    } = Keys::builder(store.keys.clone(), TokenPrefix::new("sc_")?).build();

    let read_write = ScopeSet::parse(["notes:read", "notes:write"])?;
    for (name, user, scopes) in [
        ("ALICE", "alice", read_write.clone()),
        ("BOB", "bob", read_write),
        ("READ_ONLY", "alice", ScopeSet::parse(["notes:read"])?),
    ] {
        let key = issuer
            .issue(NewKey::new(Principal::user(user), "scopes example", scopes))
            .await?;
        println!("export {name}={}", key.token.expose_secret());
    }

    let grants = Grants::new(NoteGrants(HashMap::from([
        (("alice", "n1"), AccessLevel::Owner),
        (("bob", "n1"), AccessLevel::Viewer),
    ])));
    let mut limits = RateLimiter::builder().rule(Rule::per_user("default", Quota::per_minute(60)));
    if let Some(url) = &args.redis {
        limits = limits.redis(RedisStore::open(url)?.with_prefix("scopes"));
    }
    let limits = limits.build()?;

    let app = Router::new()
        .route("/notes/{id}", get(read_note).put(edit_note))
        // Every route here needs `notes:read`; `edit_note` also needs `notes:write`.
        .route_layer(RequireScopeLayer::one("notes:read"))
        .layer(Extension(grants))
        .layer(limits.layer())
        .layer(
            AuthLayer::builder(verifier)
                .audit(store.audit.clone())
                .build(),
        );

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
