//! Attack floods: what one refused request costs, per kind of
//! bad token, and the latency of valid traffic while a flood runs.
//!
//! In process, on a verifier that starts with nothing cached (as after a
//! restart) over the real `SqliteKeyStore`; each request is what `AuthLayer`
//! does with a token (`Verifier::verify_cached_bytes`, then `Verifier::verify` on a
//! miss). Not part of `cargo test`:
//!
//! ```text
//! cargo bench -p auth-core --features sqlite --bench floods
//! ```

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use auth_core::{
    store::SqliteKeyStore, token::mint_token, token::ParsedToken, KeyIssuer, NewKey, Principal,
    ScopeSet, SecretHasher, TokenPrefix, Verifier,
};

const PER_KIND: usize = 20_000;
const CLIENTS: usize = 8;
const VALID_REQUESTS: usize = 40_000;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn with_checksum(mut body: String) -> String {
    let mut v = crc32fast::hash(body.as_bytes()) as u64;
    let mut digits = [0u8; 6];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(v % 62) as usize];
        v /= 62;
    }
    body.push_str(std::str::from_utf8(&digits).unwrap());
    body
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteKeyStore::open(dir.path().join("keys.db"))
            .await
            .unwrap(),
    );
    let prefix = TokenPrefix::new("st_").unwrap();
    let issuer = KeyIssuer::new(store.clone(), SecretHasher::default(), prefix.clone());
    let mut valid = Vec::new();
    for i in 0..64 {
        let key = issuer
            .issue(NewKey::new(
                Principal::user(format!("user{i}")),
                "k",
                ScopeSet::parse(["read"]).unwrap(),
            ))
            .await
            .unwrap();
        valid.push(key.token.expose_secret().to_owned());
    }
    let verifier = Verifier::builder(store.clone())
        .hasher(SecretHasher::default())
        .prefix(prefix.clone())
        .build();
    let app = verifier.clone();

    // Bad tokens, made before timing.
    let victim = &valid[0];
    let victim_id = ParsedToken::parse(victim).unwrap().key_id();
    let uncached_victim = &valid[1];
    let uncached_id = ParsedToken::parse(uncached_victim).unwrap().key_id();
    let random_secret_for = |id: auth_core::KeyId| {
        let (_, t) = mint_token(&prefix);
        let t = t.expose_secret();
        with_checksum(format!("st_{id}{}", &t[3 + 11..t.len() - 6]))
    };
    let bad_checksum = |_| {
        let (_, t) = mint_token(&prefix);
        let mut t = t.expose_secret().to_owned();
        let last = t.pop().unwrap();
        t.push(if last == 'a' { 'b' } else { 'a' });
        t
    };
    let unknown_id = |_| mint_token(&prefix).1.expose_secret().to_owned();
    // The victim is cached (its owner used it); the other victim is not.
    ok(&app, victim).await;
    let kinds: Vec<(&str, Vec<String>)> = vec![
        (
            "invalid token (bad checksum)",
            (0..PER_KIND).map(bad_checksum).collect(),
        ),
        (
            "unknown key id (valid checksum)",
            (0..PER_KIND).map(unknown_id).collect(),
        ),
        (
            "wrong secret, real key id, not cached",
            (0..PER_KIND)
                .map(|_| random_secret_for(uncached_id))
                .collect(),
        ),
        (
            "wrong secret, real key id, cached",
            (0..PER_KIND)
                .map(|_| random_secret_for(victim_id))
                .collect(),
        ),
        ("valid token, cached", vec![victim.clone(); PER_KIND]),
    ];
    println!("cost per request, one client, {PER_KIND} requests each (SQLite store):");
    for (what, tokens) in &kinds {
        let expect = if what.starts_with("valid") { 200 } else { 401 };
        let t = Instant::now();
        for token in tokens {
            assert_eq!(status(&app, token).await, expect, "{what}");
        }
        let per = t.elapsed() / tokens.len() as u32;
        println!("  {what}: {:.2} µs", per.as_secs_f64() * 1e6);
    }
    // The uncached victim's owner is still served.
    ok(&app, uncached_victim).await;

    // Valid traffic (every key, warm) alone, then during each flood.
    for t in &valid {
        ok(&app, t).await;
    }
    let valid = Arc::new(valid);
    let idle = valid_traffic(&app, &valid, None).await;
    report("idle", &idle);
    // The last "flood" is of valid cached tokens: the same extra load,
    // legitimate, for reference.
    for (what, tokens) in &kinds {
        let during = valid_traffic(&app, &valid, Some(Arc::new(tokens.clone()))).await;
        report(&format!("during a flood of: {what}"), &during);
    }
    verifier.flush_usage().await;
}

/// What the auth layer does with a token, as an HTTP status.
async fn status(v: &Verifier, token: &str) -> u16 {
    let r = match v.verify_cached_bytes(token.as_bytes(), None) {
        Some(r) => r,
        None => v.verify(token).await,
    };
    match r {
        Ok(_) => 200,
        Err(e) => e.status().as_u16(),
    }
}

async fn ok(app: &Verifier, token: &str) {
    assert_eq!(status(app, token).await, 200);
}

/// `CLIENTS` valid clients send `VALID_REQUESTS` in all; with a flood,
/// `CLIENTS` more send bad tokens as fast as they can meanwhile.
async fn valid_traffic(
    app: &Verifier,
    valid: &Arc<Vec<String>>,
    flood: Option<Arc<Vec<String>>>,
) -> (Vec<Duration>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooders = Vec::new();
    if let Some(tokens) = flood {
        for c in 0..CLIENTS {
            let (app, tokens, stop) = (app.clone(), tokens.clone(), stop.clone());
            flooders.push(tokio::spawn(async move {
                let mut sent = 0;
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let s = status(&app, &tokens[i % tokens.len()]).await;
                    assert!(s == 401 || s == 200);
                    i += CLIENTS;
                    sent += 1;
                    // A server reads the next request from a socket: the
                    // task yields between requests, as here.
                    tokio::task::yield_now().await;
                }
                sent
            }));
        }
    }
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (app, valid) = (app.clone(), valid.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in 0..VALID_REQUESTS / CLIENTS {
                    let token = &valid[(c + i * CLIENTS) % valid.len()];
                    // From "the request is readable" to the answer: the
                    // task is woken (queued behind whatever else is
                    // runnable, the flood included), then authenticates.
                    let t = Instant::now();
                    tokio::task::yield_now().await;
                    assert_eq!(status(&app, token).await, 200);
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(c.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let mut flooded = 0;
    for f in flooders {
        flooded += f.await.unwrap();
    }
    (latencies, flooded)
}

fn report(what: &str, (latencies, flooded): &(Vec<Duration>, usize)) {
    let mut l = latencies.clone();
    l.sort();
    let pct = |p: f64| l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "  valid traffic {what}: p50 {:.1} µs, p99 {:.1} µs ({} flood requests meanwhile)",
        us(pct(0.5)),
        us(pct(0.99)),
        flooded
    );
}
