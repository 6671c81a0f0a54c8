//! Verifier costs: parse, cached verify (vs. the floor of any cached check),
//! cold argon2 verify, and the cost of rejecting bad tokens.
//!
//! `cargo bench -p auth-core --bench verify -- --warm-up-time 1 --measurement-time 3`

use std::{hint::black_box, sync::Arc};

use auth_core::*;
use auth_core::{
    hash::HashParams, store::KeyRecord, token::mint_token, token::ParsedToken, token::SecretCheck,
};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use dashmap::DashMap;
use futures_util::FutureExt;
use time::OffsetDateTime;

/// Keys for a cache: one argon2 hash shared by every record (same secret,
/// different ids) so building a million of them stays quick.
async fn populate(n: usize, hasher: &SecretHasher) -> (Arc<MemoryKeyStore>, Vec<String>) {
    let store = Arc::new(MemoryKeyStore::new());
    let prefix = TokenPrefix::new("st_").unwrap();
    let (_, seed) = mint_token(&prefix);
    let seed = seed.expose_secret().to_owned();
    let secret = *ParsedToken::parse(&seed).unwrap().secret();
    let hash = hasher.hash(&secret).await.unwrap();
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let id = KeyId::random();
        // Same secret under a new id: re-encode through the public format.
        let token = reencode(&seed, id);
        let mut record = KeyRecord::new(
            id,
            Principal::user(format!("user{}", id.as_u64() % 1000)),
            "bench",
            ScopeSet::parse(["read:entities"]).unwrap(),
            OffsetDateTime::now_utc(),
            format!("st_…{}", &token[token.len() - 4..]),
            hash.clone(),
        );
        record.check = Some(SecretCheck::compute(id, "st_", &secret));
        store.insert(&record).await.unwrap();
        tokens.push(token);
    }
    (store, tokens)
}

fn reencode(seed: &str, id: KeyId) -> String {
    let mut s = format!("st_{id}{}", &seed[3 + 11..seed.len() - 6]);
    let crc = crc32fast::hash(s.as_bytes());
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut d = [0u8; 6];
    let mut v = crc as u64;
    for x in d.iter_mut().rev() {
        *x = A[(v % 62) as usize];
        v /= 62;
    }
    s.push_str(std::str::from_utf8(&d).unwrap());
    s
}

fn cheap_hasher() -> SecretHasher {
    SecretHasher::new(HashParams::new(8, 1, 1)).unwrap()
}

fn bench_parse(c: &mut Criterion) {
    let (_, token) = mint_token(&TokenPrefix::new("sk_live_").unwrap());
    let t = token.expose_secret().to_owned();
    c.bench_function("parse", |b| {
        b.iter(|| ParsedToken::parse(black_box(&t)).map(|p| p.key_id()))
    });
}

fn bench_cached(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("cached_verify");
    for n in [10_000usize, 1_000_000] {
        let hasher = cheap_hasher();
        let (store, tokens) = rt.block_on(populate(n, &hasher));
        let verifier = Verifier::builder(store)
            .hasher(hasher)
            .cache_capacity(n + 1)
            .build();
        rt.block_on(async {
            for chunk in tokens.chunks(256) {
                let futs = chunk.iter().map(|t| verifier.verify(t));
                for r in futures_util::future::join_all(futs).await {
                    r.unwrap();
                }
            }
        });
        assert_eq!(verifier.cached_keys(), n);

        // The floor of any cached check, on the same keys: checksum, the
        // keyed hash the verifier uses, constant-time compare, one map read.
        let sip = siphasher::sip128::SipHasher13::new_with_key(&[7u8; 16]);
        let digest = |t: &str| {
            let mut h = sip;
            std::hash::Hasher::write(&mut h, t.as_bytes());
            siphasher::sip128::Hasher128::finish128(&h).as_bytes()
        };
        let floor: DashMap<u64, [u8; 16]> = DashMap::new();
        for t in &tokens {
            let id = ParsedToken::parse(t).unwrap().key_id().as_u64();
            floor.insert(id, digest(t));
        }
        let ids: Vec<u64> = tokens
            .iter()
            .map(|t| ParsedToken::parse(t).unwrap().key_id().as_u64())
            .collect();

        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("ours", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 7919) % tokens.len();
                let r = verifier
                    .verify(black_box(&tokens[i]))
                    .now_or_never()
                    .unwrap();
                black_box(r.is_ok())
            })
        });
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("floor", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 7919) % tokens.len();
                let t = black_box(&tokens[i]);
                let crc_ok = crc32fast::hash(&t.as_bytes()[..t.len() - 6]) != 0;
                let d = digest(t);
                let ok = floor
                    .get(&ids[i])
                    .is_some_and(|e| constant_time_eq::constant_time_eq_16(&e, &d));
                black_box(crc_ok && ok)
            })
        });
        drop(verifier);
    }
    group.finish();
}

fn bench_cold(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let hasher = SecretHasher::default();
    let (store, tokens) = rt.block_on(populate(1, &hasher));
    let mut group = c.benchmark_group("cold_verify");
    group.sample_size(20);
    group.bench_function("argon2id_default_params", |b| {
        b.iter_batched(
            || {
                Verifier::builder(store.clone())
                    .hasher(hasher.clone())
                    .build()
            },
            |v| rt.block_on(v.verify(&tokens[0])).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn bench_reject(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let hasher = SecretHasher::default();
    let (store, tokens) = rt.block_on(populate(1000, &hasher));
    let verifier = Verifier::builder(store).hasher(hasher).build();
    rt.block_on(verifier.verify(&tokens[0])).unwrap();
    let mut group = c.benchmark_group("reject");

    let (_, unknown) = mint_token(&TokenPrefix::new("st_").unwrap());
    let unknown = unknown.expose_secret().to_owned();
    group.bench_function("unknown_id_first_seen", |b| {
        b.iter_batched(
            || reencode(&unknown, KeyId::random()),
            |t| rt.block_on(verifier.verify(&t)).unwrap_err(),
            BatchSize::SmallInput,
        )
    });
    let _ = rt.block_on(verifier.verify(&unknown));
    group.bench_function("unknown_id_repeated", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&unknown))
                .now_or_never()
                .unwrap()
                .unwrap_err()
        })
    });

    let (_, other) = mint_token(&TokenPrefix::new("st_").unwrap());
    let other = other.expose_secret().to_owned();
    let id0 = ParsedToken::parse(&tokens[0]).unwrap().key_id();
    let wrong_cached = reencode(&other, id0);
    group.bench_function("wrong_secret_cached_key", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&wrong_cached))
                .now_or_never()
                .unwrap()
                .unwrap_err()
        })
    });
    let id1 = ParsedToken::parse(&tokens[1]).unwrap().key_id();
    let wrong_uncached = reencode(&other, id1);
    // First attempt costs one argon2 run; later ones are remembered or throttled.
    let _ = rt.block_on(verifier.verify(&wrong_uncached));
    group.bench_function("wrong_secret_uncached_key_repeated", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&wrong_uncached))
                .now_or_never()
                .unwrap()
                .unwrap_err()
        })
    });
    group.bench_function("bad_checksum", |b| {
        let mut t = tokens[2].clone();
        t.pop();
        t.push('0');
        b.iter(|| {
            verifier
                .verify(black_box(&t))
                .now_or_never()
                .unwrap()
                .unwrap_err()
        })
    });
    group.finish();
}

/// A cached JWT against a cached API key, same run.
#[cfg(feature = "jwt")]
fn bench_jwt(c: &mut Criterion) {
    use auth_core::jwt::{JwtAuthority, MasterKey, MemoryUserSecrets};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let jwt = JwtAuthority::new(
        Arc::new(MemoryUserSecrets::new()),
        MasterKey::generate(),
        "bench",
    );
    let hasher = cheap_hasher();
    let (store, tokens) = rt.block_on(populate(1, &hasher));
    let verifier = Verifier::builder(store)
        .hasher(hasher)
        .jwt(jwt.clone())
        .build();
    let token = rt.block_on(jwt.token_for("user-1")).unwrap();
    rt.block_on(verifier.verify(&token)).unwrap();
    rt.block_on(verifier.verify(&tokens[0])).unwrap();
    let mut group = c.benchmark_group("cached_credential");
    group.bench_function("jwt", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&token))
                .now_or_never()
                .unwrap()
                .unwrap()
        })
    });
    group.bench_function("api_key", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&tokens[0]))
                .now_or_never()
                .unwrap()
                .unwrap()
        })
    });
    group.finish();
}

#[cfg(not(feature = "jwt"))]
fn bench_jwt(_: &mut Criterion) {}

criterion_group!(
    benches,
    bench_parse,
    bench_cached,
    bench_cold,
    bench_reject,
    bench_jwt
);
criterion_main!(benches);
