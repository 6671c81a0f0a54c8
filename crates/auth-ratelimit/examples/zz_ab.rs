// temporary A/B harness (removed before hand-off)
use std::{hint::black_box, time::Instant};
use auth_ratelimit::{HeaderStyle, Quota, RateLimiter, Rule};
use axum::{body::Body, extract::ConnectInfo, routing::get, Router};
use http::Request;
use tower::ServiceExt;
use tower_governor::{governor::GovernorConfigBuilder, GovernorLayer};

fn main() {
    if std::env::var("MICRO").is_ok() {
        let q = Quota::per_second(1_000_000).with_burst(u32::MAX);
        let lim = RateLimiter::builder().rule(Rule::per_ip("ip", q)).headers(HeaderStyle::Hidden).build().unwrap();
        let gl = governor::RateLimiter::keyed(governor::Quota::per_second(std::num::NonZeroU32::new(1_000_000).unwrap()).allow_burst(std::num::NonZeroU32::MAX));
        let peer: std::net::SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let mut r = Request::get("/items").body(()).unwrap(); r.extensions_mut().insert(ConnectInfo(peer));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for _ in 0..5 {
            let n = 2_000_000;
            let t = Instant::now();
            for _ in 0..n { black_box(lim.zz_eval(black_box(&r))); }
            let a = t.elapsed().as_nanos() as f64 / n as f64;
            let t = Instant::now();
            for _ in 0..n {
                let ip = black_box(&r).extensions().get::<ConnectInfo<std::net::SocketAddr>>().unwrap().0.ip();
                black_box(gl.check_key(&ip).is_ok());
            }
            let b = t.elapsed().as_nanos() as f64 / n as f64;
            let t = Instant::now();
            for _ in 0..n { black_box(rt.block_on(async { 1 })); }
            let c = t.elapsed().as_nanos() as f64 / n as f64;
            println!("ours check() {a:.1} ns (block_on alone {c:.1}), governor extract+check_key {b:.1} ns");
        }
        return;
    }
    let q = Quota::per_second(1_000_000).with_burst(u32::MAX);
    let lim = |h| RateLimiter::builder().rule(Rule::per_ip("ip", q)).headers(h).build().unwrap();
    let bare = || Router::new().route("/items", get(|| async { "ok" }));
    let gconf = || GovernorConfigBuilder::default().per_nanosecond(1).burst_size(u32::MAX).finish().unwrap();
    let gh = GovernorConfigBuilder::default().per_nanosecond(1).burst_size(u32::MAX).use_headers().finish().unwrap();
    let routers: Vec<(&str, Router)> = vec![
        ("bare", bare().with_state(())),
        ("ours_hidden", bare().layer(lim(HeaderStyle::Hidden).layer()).with_state(())),
        ("governor", bare().layer(GovernorLayer::new(gconf())).with_state(())),
        ("ours_headers", bare().layer(lim(HeaderStyle::Legacy).layer()).with_state(())),
        ("governor_headers", bare().layer(GovernorLayer::new(gh)).with_state(())),
    ];
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let peer: std::net::SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let req = || { let mut r = Request::get("/items").body(Body::empty()).unwrap(); r.extensions_mut().insert(ConnectInfo(peer)); r };
    let only = std::env::var("ONLY").ok();
    let routers: Vec<_> = routers.into_iter().filter(|(n, _)| only.as_deref().map_or(true, |o| o == *n)).collect();
    let mut best = vec![f64::MAX; routers.len()];
    for _round in 0..30 {
        for (i, (_, r)) in routers.iter().enumerate() {
            let n = 20_000;
            let t = Instant::now();
            rt.block_on(async { for _ in 0..n { black_box(r.clone().oneshot(req()).await.unwrap()); } });
            let ns = t.elapsed().as_nanos() as f64 / n as f64;
            if ns < best[i] { best[i] = ns; }
        }
    }
    for (i, (name, _)) in routers.iter().enumerate() { println!("{name:18} {:7.1} ns  (+{:.1})", best[i], best[i]-best[0]); }
}
#[allow(dead_code)]
pub fn micro() {}
