//! Our in-memory limiter side by side with governor's keyed limiter.
//!
//! Run: `cargo bench -p auth-ratelimit --bench ratelimit -- --warm-up-time 1 --measurement-time 3`
//!
//! * `check/1t/{ours,governor}/{1,10000,1000000}`: ns per check on one thread,
//!   keys pre-inserted, visited in a scattered order (`i × odd mod n`).
//! * `check/2t/...`: two std threads check concurrently (each its own half of
//!   the iterations, same key set, different starting points); the time is the
//!   wall time, so the figure is ns per check of the pair (perfect scaling
//!   halves the 1-thread figure).
//! * `layer/{bare,ours_hidden,governor,ours_headers,governor_headers}`: one
//!   GET through an axum `Router` (finalized with `with_state(())`) with
//!   `tower::ServiceExt::oneshot` on a current-thread runtime, with
//!   `ConnectInfo` set: the bare router, with our
//!   `RateLimitLayer` (per-IP rule; headers hidden, then legacy headers), and
//!   with `tower_governor`'s `GovernorLayer` (peer-IP key; plain, then
//!   `use_headers`). The quota is never exhausted, so every request passes.
//! * `bytes_per_key`: printed once at start, measured with a counting global
//!   allocator: live heap bytes after inserting 1,000,000 keys, divided by the
//!   key count: `u64` keys in both stores, then our layer's own key type
//!   (rule + IPv4 address) after 1,000,000 requests from distinct peers.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicIsize, Ordering},
        Arc, Barrier,
    },
    time::{Duration, Instant},
};

use auth_ratelimit::{headers::HeaderStyle, MemoryStore, Quota, RateLimiter as OurLimiter, Rule};
use axum::{body::Body, extract::ConnectInfo, routing::get, Router};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use http::Request;
use tower::ServiceExt;
use tower_governor::{governor::GovernorConfigBuilder, GovernorLayer};

// ---- allocation counting ---------------------------------------------------

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

// ---- the two limiters --------------------------------------------------------

const KEY_COUNTS: [u64; 3] = [1, 10_000, 1_000_000];

/// A quota no benchmark run can exhaust, so every check takes the allow path.
fn our_quota() -> Quota {
    Quota::per_second(1_000_000).with_burst(u32::MAX)
}

fn governor_quota() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::new(1_000_000).unwrap()).allow_burst(NonZeroU32::MAX)
}

trait Limiter: Send + Sync {
    fn check(&self, key: u64) -> bool;
}

struct Ours(MemoryStore<u64>, Quota);
impl Limiter for Ours {
    #[inline]
    fn check(&self, key: u64) -> bool {
        self.0.check(&key, &self.1, 1).is_allowed()
    }
}

struct Governor(DefaultKeyedRateLimiter<u64>);
impl Limiter for Governor {
    #[inline]
    fn check(&self, key: u64) -> bool {
        self.0.check_key(&key).is_ok()
    }
}

fn ours(n: u64) -> Ours {
    let l = Ours(MemoryStore::new().max_keys(2_000_000), our_quota());
    (0..n).for_each(|k| assert!(l.check(k)));
    l
}

fn governor(n: u64) -> Governor {
    let l = Governor(RateLimiter::keyed(governor_quota()));
    (0..n).for_each(|k| assert!(l.check(k)));
    l
}

/// The `i`-th key of a scattered walk over `n` keys.
#[inline]
fn key(i: u64, n: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n
}

fn run_1t(l: &dyn Limiter, n: u64, iters: u64, start: u64) -> Duration {
    let t = Instant::now();
    for i in start..start + iters {
        black_box(l.check(key(i, n)));
    }
    t.elapsed()
}

fn run_2t(l: &Arc<dyn Limiter>, n: u64, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(3));
    let half = iters / 2;
    let handles: Vec<_> = (0..2u64)
        .map(|t| {
            let l = l.clone();
            let b = barrier.clone();
            let count = if t == 0 { half } else { iters - half };
            std::thread::spawn(move || {
                b.wait();
                run_1t(&*l, n, count, t * 7_919_993);
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    t.elapsed()
}

fn bench_check(c: &mut Criterion) {
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("check/{threads}t"));
        for n in KEY_COUNTS {
            let limiters: [(&str, Arc<dyn Limiter>); 2] = [
                ("ours", Arc::new(ours(n))),
                ("governor", Arc::new(governor(n))),
            ];
            for (name, l) in limiters {
                group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                    let mut start = 0;
                    b.iter_custom(|iters| {
                        start += iters;
                        if threads == 1 {
                            run_1t(&*l, n, iters, start)
                        } else {
                            run_2t(&l, n, iters)
                        }
                    })
                });
            }
        }
        group.finish();
    }
}

// ---- the layer ---------------------------------------------------------------

fn our_layer_limiter(headers: HeaderStyle) -> OurLimiter {
    OurLimiter::builder()
        .rule(Rule::per_ip("ip", our_quota()))
        .headers(headers)
        .build()
        .unwrap()
}

fn routers() -> Vec<(&'static str, Router)> {
    let bare = || Router::new().route("/items", get(|| async { "ok" }));
    let governor_conf = || {
        GovernorConfigBuilder::default()
            .per_nanosecond(1)
            .burst_size(u32::MAX)
            .finish()
            .unwrap()
    };
    let governor_headers = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(u32::MAX)
        .use_headers()
        .finish()
        .unwrap();
    // `with_state(())` finalizes each router as serving it would.
    vec![
        ("bare", bare().with_state(())),
        (
            "ours_hidden",
            bare()
                .layer(our_layer_limiter(HeaderStyle::Hidden).layer())
                .with_state(()),
        ),
        (
            "governor",
            bare()
                .layer(GovernorLayer::new(governor_conf()))
                .with_state(()),
        ),
        (
            "ours_headers",
            bare()
                .layer(our_layer_limiter(HeaderStyle::Legacy).layer())
                .with_state(()),
        ),
        (
            "governor_headers",
            bare()
                .layer(GovernorLayer::new(governor_headers))
                .with_state(()),
        ),
    ]
}

fn request(peer: std::net::SocketAddr) -> Request<Body> {
    let mut req = Request::get("/items").body(Body::empty()).unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

fn bench_layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let peer: std::net::SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let mut group = c.benchmark_group("layer");
    for (name, router) in routers() {
        // Check the stack works (and warm the key) before timing it.
        let res = rt.block_on(router.clone().oneshot(request(peer))).unwrap();
        assert_eq!(res.status(), 200, "{name}");
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let router = router.clone();
                async move { black_box(router.oneshot(request(peer)).await.unwrap()) }
            })
        });
    }
    group.finish();
}

// ---- memory per key ------------------------------------------------------------

fn bytes_per_key() {
    const N: u64 = 1_000_000;
    let before = live();
    let o = ours(N);
    let ours_bytes = live() - before;
    drop(o);
    let before = live();
    let g = governor(N);
    let gov_bytes = live() - before;
    drop(g);

    // The layer's own keys: 1,000,000 requests from distinct IPv4 peers.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let limiter = OurLimiter::builder()
        .rule(Rule::per_ip("ip", Quota::per_hour(200)))
        .headers(HeaderStyle::Hidden)
        .build()
        .unwrap();
    let router = Router::new()
        .route("/items", get(|| async { "ok" }))
        .layer(limiter.layer());
    let before = live();
    rt.block_on(async {
        for i in 0..N as u32 {
            let peer = std::net::SocketAddr::from(((0x0A00_0000 + i).to_be_bytes(), 1));
            router.clone().oneshot(request(peer)).await.unwrap();
        }
    });
    let layer_bytes = live() - before;
    assert_eq!(limiter.memory().len(), N as usize);
    println!(
        "bytes_per_key ({N} keys): ours {:.1}, governor {:.1} (u64 keys); ours, layer per-IP key {:.1}",
        ours_bytes as f64 / N as f64,
        gov_bytes as f64 / N as f64,
        layer_bytes as f64 / N as f64,
    );
}

fn all(c: &mut Criterion) {
    bytes_per_key();
    bench_check(c);
    bench_layer(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
