//! Per-request cost of whole middleware stacks on a finalized axum router,
//! ours and the peers' (tower-http bearer, tower_governor) in the same run.
//!
//! Plain bearer only compares a header; `AuthLayer` also hands the handler
//! an identity, a request extension. So the peers are measured both ways:
//! as they come, and with a user id inserted the way a tower-http user
//! would (`ValidateRequestHeaderLayer::custom`), the same job as ours.
//!
//! A third reference is the floor of any cached key check that keeps no
//! token in memory (`DigestFloor`): the header, a keyed digest of the token,
//! one lock-free map read by the key id, a constant-time compare, the
//! identity inserted; nothing else (no expiry, revocation sync, last use,
//! metrics, spans, audit, subject header, sensitive marking).
//!
//! Over HTTP with wrk: `benches/wrk.sh` (serves each stack with `serve=`).
//!
//! `cargo bench -p keygate-benches --bench stacks` (optional args:
//! `rounds=201 iters=10000 threads=1,2`, `only=<name substring>` to profile a
//! subset, `connect_info=1` to give every request the `ConnectInfo` extension
//! that `into_make_service_with_connect_info`
//! adds, as a server using client addresses runs; `metrics=prometheus` to
//! install a Prometheus recorder first, so that every metric is recorded, as
//! in a service that exports them: without a recorder each is a no-op)
//!
//! Shape, as `axum::serve` runs a router:
//! * each stack is `Router::with_state(())` (finalized: layers applied once);
//! * one request is `ready().await` then `call(req).await`, the request built
//!   inside the loop for every stack alike (its cost is in the "bare" row);
//! * stacks are interleaved round by round (rotating the start), so drift on
//!   a shared machine hits every stack alike; "ns/request" is the median over
//!   the rounds, and a stack's added cost is the median over the rounds of
//!   its time minus the bare router's in the same round (paired, so a slow
//!   round cancels), with the quartiles of those differences to show the
//!   noise;
//! * with `threads=2`, two OS threads, each with its own current-thread
//!   runtime and clone of the stack, send the same token at once: the figure
//!   is wall time over all requests (per-request throughput cost), which
//!   shows contention on shared cache lines (the key's cache entry, the
//!   user's bucket).

use std::{
    hash::Hasher,
    hint::black_box,
    sync::{Arc, Barrier},
    time::Instant,
};

use auth_core::{
    audit::MemoryAuditLog, KeyIssuer, MemoryKeyStore, NewKey, Principal, ScopeSet, SecretHasher,
    TokenPrefix, Verifier,
};
use auth_ratelimit::{headers::HeaderStyle, Quota, RateLimiter, Rule};
use auth_tower::AuthLayer;
use axum::{
    body::Body,
    http::{header, HeaderValue, Request, Response, StatusCode},
    routing::get,
    Router,
};
use siphasher::sip128::{Hasher128, SipHasher13};
use subtle::ConstantTimeEq;
use tower::{Service, ServiceExt};
use tower_governor::{
    governor::GovernorConfigBuilder, key_extractor::KeyExtractor, GovernorError, GovernorLayer,
};
use tower_http::validate_request::{ValidateRequest, ValidateRequestHeaderLayer};

/// tower_governor keyed by the presented bearer token (what a user of
/// governor would do to limit per API key).
#[derive(Clone)]
struct BearerKey;

impl KeyExtractor for BearerKey {
    type Key = String;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// The peer doing the same job as `AuthLayer`: tower-http's bearer check
/// that also hands the handler an identity (a request extension), as a user
/// of tower-http writes it with `ValidateRequestHeaderLayer::custom`.
#[derive(Clone)]
struct BearerIdentity {
    expected: HeaderValue,
    user: Arc<str>,
}

/// What `BearerIdentity` puts in the request.
#[derive(Clone)]
struct UserId(#[allow(dead_code)] Arc<str>);

impl<B> ValidateRequest<B> for BearerIdentity {
    type ResponseBody = Body;

    fn validate(&mut self, req: &mut Request<B>) -> Result<(), Response<Body>> {
        if req.headers().get(header::AUTHORIZATION) != Some(&self.expected) {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::UNAUTHORIZED;
            return Err(res);
        }
        req.extensions_mut().insert(UserId(self.user.clone()));
        Ok(())
    }
}

/// The floor of a cached API-key check that keeps no token in memory,
/// written with the same parts `AuthLayer`'s cache uses (SipHash-1-3 under a
/// random key, `papaya`, `subtle`), as a tower-http custom validator: what
/// is left when every feature beyond the check itself is removed.
#[derive(Clone)]
struct DigestFloor {
    key: SipHasher13,
    keys: Arc<FloorKeys>,
}

/// Key id field (packed) to the token's digest and its user.
type FloorKeys = papaya::HashMap<(u64, u32), ((u64, u64), Arc<str>), foldhash::fast::RandomState>;

/// Where the key id field sits in a `st_` token.
const ID_FIELD: std::ops::Range<usize> = 3..14;

impl DigestFloor {
    fn new(token: &str) -> Self {
        let key = SipHasher13::new_with_key(&rand::random::<[u8; 16]>());
        let floor = Self {
            key,
            keys: Arc::default(),
        };
        let id = Self::slot(&token.as_bytes()[ID_FIELD]).unwrap();
        let digest = floor.digest(token.as_bytes());
        floor.keys.pin().insert(id, (digest, Arc::from("alice")));
        // A real check: the token passes, the same token with one secret
        // character changed does not.
        let mut altered = token.as_bytes().to_vec();
        altered[20] = if altered[20] == b'a' { b'b' } else { b'a' };
        assert!(floor.check(token.as_bytes()).is_some());
        assert!(floor.check(&altered).is_none());
        floor
    }

    fn slot(field: &[u8]) -> Option<(u64, u32)> {
        let head = u64::from_le_bytes(field.get(..8)?.try_into().ok()?);
        let mut tail = [0; 4];
        tail[..3].copy_from_slice(field.get(8..11)?);
        Some((head, u32::from_le_bytes(tail)))
    }

    fn digest(&self, token: &[u8]) -> (u64, u64) {
        let mut h = self.key;
        h.write(token);
        let d = h.finish128();
        (d.h1, d.h2)
    }

    fn check(&self, token: &[u8]) -> Option<Arc<str>> {
        let slot = Self::slot(token.get(ID_FIELD)?)?;
        let digest = self.digest(token);
        let keys = self.keys.pin();
        let (stored, user) = keys.get(&slot)?;
        let equal = stored.0.ct_eq(&digest.0) & stored.1.ct_eq(&digest.1);
        bool::from(equal).then(|| user.clone())
    }
}

impl<B> ValidateRequest<B> for DigestFloor {
    type ResponseBody = Body;

    fn validate(&mut self, req: &mut Request<B>) -> Result<(), Response<Body>> {
        let token = req.headers().get(header::AUTHORIZATION);
        let user = token
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .and_then(|t| self.check(t));
        let Some(user) = user else {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::UNAUTHORIZED;
            return Err(res);
        };
        req.extensions_mut().insert(UserId(user));
        Ok(())
    }
}

fn arg(name: &str, default: &str) -> String {
    std::env::args()
        .find_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_owned))
        .unwrap_or_else(|| default.to_owned())
}

fn stacks(verifier: &Verifier, token: &str) -> Vec<(&'static str, Router)> {
    let router = || Router::new().route("/", get(|| async { "ok" }));
    #[allow(deprecated)] // tower-http calls it "too basic"; it is the peer users compare with.
    let bearer = || ValidateRequestHeaderLayer::bearer(token);
    let user_id = || {
        ValidateRequestHeaderLayer::custom(BearerIdentity {
            expected: HeaderValue::try_from(format!("Bearer {token}")).unwrap(),
            user: Arc::from("alice"),
        })
    };
    let governor = || {
        GovernorLayer::new(
            GovernorConfigBuilder::default()
                .per_nanosecond(1)
                .burst_size(u32::MAX)
                .key_extractor(BearerKey)
                .finish()
                .unwrap(),
        )
    };
    let limiter = || {
        RateLimiter::builder()
            .rule(Rule::per_user(
                "default",
                Quota::per_second(1_000_000_000).with_burst(u32::MAX),
            ))
            .headers(HeaderStyle::Hidden)
            .build()
            .unwrap()
    };
    vec![
        ("bare router", router()),
        (
            "empty layer (identity)",
            router().layer(tower::util::MapRequestLayer::new(|r: Request<Body>| r)),
        ),
        ("tower-http bearer", router().layer(bearer())),
        ("bearer + user id insert", router().layer(user_id())),
        ("tower_governor by key", router().layer(governor())),
        (
            "bearer + tower_governor",
            router().layer(governor()).layer(bearer()),
        ),
        (
            "bearer + user id + tower_governor",
            router().layer(governor()).layer(user_id()),
        ),
        (
            "floor: keyed digest + map read + identity",
            router().layer(ValidateRequestHeaderLayer::custom(DigestFloor::new(token))),
        ),
        (
            "AuthLayer, cached key",
            router().layer(AuthLayer::new(verifier.clone())),
        ),
        (
            "AuthLayer, cached key, audit sink",
            router().layer(
                AuthLayer::builder(verifier.clone())
                    // Full after the first thousand requests: from then
                    // on every event replaces the oldest, as in a long run.
                    .audit(Arc::new(MemoryAuditLog::new(1_000)))
                    .build(),
            ),
        ),
        (
            "AuthLayer + RateLimitLayer per user",
            router()
                .layer(limiter().layer())
                .layer(AuthLayer::new(verifier.clone())),
        ),
    ]
    .into_iter()
    .map(|(name, r)| (name, r.with_state(())))
    .collect()
}

fn request(authorization: &str, connect_info: bool) -> Request<Body> {
    let mut req = Request::get("/")
        .header("authorization", authorization)
        .body(Body::empty())
        .unwrap();
    if connect_info {
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
    }
    req
}

/// Whether requests carry `ConnectInfo` (`connect_info=1`).
fn connect_info() -> bool {
    arg("connect_info", "0") == "1"
}

/// ns per request for `iters` requests through `app` on this thread.
/// Never inlined, so a profiler can count just this loop
/// (`valgrind --tool=callgrind --toggle-collect=stacks::run`).
#[inline(never)]
fn run(rt: &tokio::runtime::Runtime, app: &mut Router, authorization: &str, iters: u64) -> f64 {
    let connect_info = connect_info();
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let res = ServiceExt::<Request<Body>>::ready(&mut *app)
                .await
                .unwrap()
                .call(request(authorization, connect_info))
                .await
                .unwrap();
            black_box(res);
        }
        start.elapsed().as_nanos() as f64 / iters as f64
    })
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Wall ns per request with `threads` threads sending at once.
fn run_parallel(app: &Router, authorization: &str, iters: u64, threads: usize) -> f64 {
    if threads == 1 {
        return run(&current_thread(), &mut app.clone(), authorization, iters);
    }
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (mut app, auth, barrier) = (app.clone(), authorization.to_owned(), barrier.clone());
            std::thread::spawn(move || {
                let rt = current_thread();
                barrier.wait();
                run(&rt, &mut app, &auth, iters);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed().as_nanos() as f64 / (iters as f64 * threads as f64)
}

/// First quartile, median, third quartile.
fn quartiles(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: usize| v[(v.len() - 1) * q / 4];
    [at(1), at(2), at(3)]
}

fn main() {
    let rounds: usize = arg("rounds", "201").parse().unwrap();
    let iters: u64 = arg("iters", "10000").parse().unwrap();
    let thread_counts: Vec<usize> = arg("threads", "1,2")
        .split(',')
        .map(|t| t.parse().unwrap())
        .collect();

    if arg("metrics", "") == "prometheus" {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install the Prometheus recorder");
    }
    let rt = current_thread();
    let (verifier, token) = rt.block_on(async {
        let store = Arc::new(MemoryKeyStore::new());
        let hasher = SecretHasher::for_tests();
        let prefix = TokenPrefix::new("st_").unwrap();
        let issuer = KeyIssuer::new(store.clone(), hasher.clone(), prefix);
        let verifier = Verifier::builder(store).hasher(hasher).build();
        let key = issuer
            .issue(NewKey::new(
                Principal::user("alice"),
                "bench",
                ScopeSet::parse(["read"]).unwrap(),
            ))
            .await
            .unwrap();
        let token = key.token.expose_secret().to_owned();
        verifier.verify(&token).await.unwrap(); // cached from here on
        (verifier, token)
    });
    let authorization = format!("Bearer {token}");
    let mut stacks = stacks(&verifier, &token);
    // `serve=<exact name>` serves that stack over HTTP on `addr=` with two
    // tokio workers, for `benches/wrk.sh`, and writes the token to `token_file=`.
    let serve = arg("serve", "");
    if !serve.is_empty() {
        let (_, app) = stacks
            .into_iter()
            .find(|(name, _)| *name == serve)
            .expect("serve= names one of the stacks");
        std::fs::write(arg("token_file", "stacks.token"), &token).unwrap();
        let addr = arg("addr", "127.0.0.1:3900");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        return;
    }
    // `only=<substring>` keeps matching stacks (and the bare router), for profiling.
    let only = arg("only", "");
    // `stack=<exact name>` keeps just that one (the bare router too).
    let exact = arg("stack", "");
    stacks.retain(|(name, _)| {
        *name == "bare router"
            || (name.contains(only.as_str()) && (exact.is_empty() || *name == exact))
    });
    for (name, app) in &mut stacks {
        let res = rt.block_on(async {
            ServiceExt::<Request<Body>>::ready(app)
                .await
                .unwrap()
                .call(request(&authorization, connect_info()))
                .await
                .unwrap()
        });
        assert_eq!(res.status(), 200, "{name} must let the request through");
    }

    for &threads in &thread_counts {
        let mut samples = vec![Vec::with_capacity(rounds); stacks.len()];
        for round in 0..rounds {
            for k in 0..stacks.len() {
                let i = (k + round) % stacks.len();
                samples[i].push(run_parallel(&stacks[i].1, &authorization, iters, threads));
            }
        }
        let medians: Vec<f64> = samples.iter().map(|s| quartiles(s.clone())[1]).collect();
        // Per round: each stack's time minus the bare router's in that round.
        let added: Vec<[f64; 3]> = samples
            .iter()
            .map(|s| quartiles(s.iter().zip(&samples[0]).map(|(x, b)| x - b).collect()))
            .collect();
        let peer = |name: &str| {
            let i = stacks.iter().position(|(n, _)| *n == name);
            i.map_or(f64::NAN, |i| added[i][1])
        };
        let (bearer, both) = (peer("tower-http bearer"), peer("bearer + tower_governor"));
        // The same job as ours: the check plus an identity for the handler.
        let (user_id, user_id_gov) = (
            peer("bearer + user id insert"),
            peer("bearer + user id + tower_governor"),
        );
        println!("\n{threads} thread(s), {rounds} rounds x {iters} requests (ns/request)");
        println!(
            "| stack | median | added over bare (paired median) | quartiles of added \
             | / bearer's added | / bearer+governor's added \
             | / bearer+user id's added | / bearer+user id+governor's added |"
        );
        println!("|---|---:|---:|---|---:|---:|---:|---:|");
        for ((name, _), (m, [q1, a, q3])) in stacks.iter().zip(medians.iter().zip(&added)) {
            println!(
                "| {name} | {m:.0} | {a:+.0} | {q1:+.0} .. {q3:+.0} | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
                a / bearer,
                a / both,
                a / user_id,
                a / user_id_gov
            );
        }
    }
}
