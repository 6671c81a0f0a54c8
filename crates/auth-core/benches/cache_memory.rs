//! Heap bytes per cached key: the verifier's cache after verifying N keys,
//! measured with a counting global allocator.
//!
//! `CACHE_MEMORY_N=1000000 cargo bench -p auth-core --bench cache_memory`
//!
//! Keys are issued into a `MemoryKeyStore` with the test hasher (cheap
//! argon2, so that a million keys take minutes, not hours), then each is
//! verified once with a verifier whose cache holds them all. The figure is
//! the growth of live heap bytes during the verifications, divided by N: the
//! cache entry (keyed digest, context, expiry, last-use bookkeeping) and its
//! share of the map, nothing of the store's records.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        atomic::{AtomicIsize, Ordering},
        Arc,
    },
};

use auth_core::{
    KeyIssuer, MemoryKeyStore, NewKey, Principal, ScopeSet, SecretHasher, TokenPrefix, Verifier,
};

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

fn main() {
    let n: usize = std::env::var("CACHE_MEMORY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(MemoryKeyStore::new());
        let hasher = SecretHasher::for_tests();
        let issuer = KeyIssuer::new(
            store.clone(),
            hasher.clone(),
            TokenPrefix::new("st_").unwrap(),
        );
        let scopes = ScopeSet::parse(["read", "write"]).unwrap();
        let mut tokens = Vec::with_capacity(n);
        for i in 0..n {
            let key = issuer
                .issue(NewKey::new(
                    Principal::user(format!("user-{i}")),
                    "bench",
                    scopes.clone(),
                ))
                .await
                .unwrap();
            tokens.push(key.token.expose_secret().to_owned());
        }
        let verifier = Verifier::builder(store)
            .hasher(hasher)
            .cache_capacity(n)
            .build();
        let before = LIVE.load(Ordering::Relaxed);
        for t in &tokens {
            verifier.verify(t).await.unwrap();
        }
        // Every key is now answered from the cache.
        for t in tokens.iter().step_by((n / 1000).max(1)) {
            assert!(verifier
                .verify_cached_bytes(t.as_bytes(), None)
                .is_some_and(|r| r.is_ok()));
        }
        let grown = LIVE.load(Ordering::Relaxed) - before;
        println!(
            "{n} cached keys: {grown} bytes of heap, {:.0} bytes per key",
            grown as f64 / n as f64
        );
    });
}
