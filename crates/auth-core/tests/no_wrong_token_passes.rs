//! Property: no refusal path lets a wrong token through. Any
//! mutation of a valid token, presented to a verifier that has the key
//! cached and to one that does not, is refused; the original still passes.

use std::sync::{Arc, OnceLock};

use auth_core::token::BODY_LEN;
use auth_core::*;
use proptest::prelude::*;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

struct World {
    rt: tokio::runtime::Runtime,
    store: Arc<MemoryKeyStore>,
    hasher: SecretHasher,
    token: String,
    other: String,
    cached: Verifier,
}

fn prefixes() -> [TokenPrefix; 2] {
    [
        TokenPrefix::new("st_").unwrap(),
        TokenPrefix::new("sk_live_").unwrap(),
    ]
}

fn verifier(w: &World) -> Verifier {
    let [a, b] = prefixes();
    Verifier::builder(w.store.clone())
        .hasher(w.hasher.clone())
        .prefix(a)
        .prefix(b)
        .build()
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(MemoryKeyStore::new());
        let hasher = SecretHasher::for_tests();
        let issuer = KeyIssuer::new(store.clone(), hasher.clone(), prefixes()[0].clone());
        let (token, other) = rt.block_on(async {
            let new = || NewKey::new(Principal::user("u"), "k", ScopeSet::empty());
            let a = issuer.issue(new()).await.unwrap();
            let b = issuer.issue(new()).await.unwrap();
            (
                a.token.expose_secret().to_owned(),
                b.token.expose_secret().to_owned(),
            )
        });
        let mut w = World {
            rt,
            store,
            hasher,
            token,
            other,
            cached: Verifier::builder(Arc::new(MemoryKeyStore::new())).build(),
        };
        w.cached = verifier(&w);
        w.rt.block_on(async {
            w.cached.verify(&w.token).await.unwrap();
            w.cached.verify(&w.other).await.unwrap();
        });
        w
    })
}

/// `body` with a valid checksum appended: what any attacker can compute.
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

#[derive(Debug, Clone)]
enum Mutation {
    /// One byte replaced anywhere (checksum left as is).
    Replace(usize, u8),
    /// One base62 character replaced before the checksum, checksum recomputed.
    ReplaceAndFix(usize, u8),
    /// One byte inserted.
    Insert(usize, u8),
    /// One byte removed.
    Delete(usize),
    /// Another prefix, checksum recomputed.
    Reprefix(bool),
    /// The other key's secret under this key's id, checksum recomputed.
    BorrowSecret,
    /// Secret characters from `[from, to)` swapped for random ones, checksum recomputed.
    Resecret(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let any_byte = prop_oneof![any::<u8>(), (0..BASE62.len()).prop_map(|i| BASE62[i])];
    prop_oneof![
        (any::<usize>(), any_byte.clone()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<usize>(), 0..BASE62.len()).prop_map(|(i, c)| Mutation::ReplaceAndFix(i, BASE62[c])),
        (any::<usize>(), any_byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<bool>().prop_map(Mutation::Reprefix),
        Just(Mutation::BorrowSecret),
        (
            0usize..44,
            proptest::collection::vec(0..BASE62.len(), 1..44)
        )
            .prop_map(|(at, cs)| Mutation::Resecret(
                at,
                cs.into_iter().map(|c| BASE62[c]).collect()
            )),
    ]
}

/// The mutated token, as bytes (may not be UTF-8).
fn apply(m: &Mutation, token: &str, other: &str) -> Vec<u8> {
    let t = token.as_bytes();
    let body_start = token.len() - BODY_LEN; // after "st_"
    let crc_start = token.len() - 6;
    let mut v = t.to_vec();
    match m {
        Mutation::Replace(i, b) => {
            let i = i % v.len();
            v[i] = *b;
        }
        Mutation::ReplaceAndFix(i, c) => {
            let i = body_start + i % (crc_start - body_start);
            let mut s = token.as_bytes()[..crc_start].to_vec();
            s[i] = *c;
            return with_checksum(String::from_utf8(s).unwrap()).into_bytes();
        }
        Mutation::Insert(i, b) => v.insert(i % (v.len() + 1), *b),
        Mutation::Delete(i) => {
            let i = i % v.len();
            v.remove(i);
        }
        Mutation::Reprefix(live) => {
            let p = if *live { "sk_live_" } else { "sk_test_" };
            return with_checksum(format!("{p}{}", &token[body_start..crc_start])).into_bytes();
        }
        Mutation::BorrowSecret => {
            let id = &token[body_start..body_start + 11];
            let secret = &other[body_start + 11..crc_start];
            return with_checksum(format!("st_{id}{secret}")).into_bytes();
        }
        Mutation::Resecret(at, chars) => {
            let secret_start = body_start + 11;
            let mut s = token.as_bytes()[..crc_start].to_vec();
            for (k, c) in chars.iter().enumerate() {
                let i = secret_start + (at + k) % 44;
                s[i] = *c;
            }
            return with_checksum(String::from_utf8(s).unwrap()).into_bytes();
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_mutation_of_a_valid_token_is_accepted(m in mutation()) {
        let w = world();
        let bytes = apply(&m, &w.token, &w.other);
        // Only strings reach the verifier; a mutation equal to the original
        // (e.g. a character replaced by itself) is not a wrong token.
        let Ok(mutated) = String::from_utf8(bytes) else { return Ok(()) };
        prop_assume!(mutated != w.token && mutated != w.other);
        let fresh = verifier(w);
        let (cached, cold, sync) = w.rt.block_on(async {
            (
                w.cached.verify(&mutated).await,
                fresh.verify(&mutated).await,
                w.cached.verify_cached_bytes(mutated.as_bytes(), None),
            )
        });
        prop_assert!(cached.is_err(), "cached verifier accepted {:?}", m);
        prop_assert!(cold.is_err(), "uncached verifier accepted {:?}", m);
        prop_assert!(!matches!(sync, Some(Ok(_))), "hot path accepted {:?}", m);
        for e in [cached.unwrap_err(), cold.unwrap_err()] {
            prop_assert_eq!(e.code(), ErrorCode::Unauthorized);
        }
        // The real token still passes on both.
        let ok = w.rt.block_on(async {
            w.cached.verify(&w.token).await.is_ok() && fresh.verify(&w.token).await.is_ok()
        });
        prop_assert!(ok);
    }
}
