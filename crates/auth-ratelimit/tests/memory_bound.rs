//! A spray of a million distinct keys (random client addresses) never grows
//! the in-memory store past its cap, in keys or in bytes: the bytes are
//! counted by this binary's global allocator (so this file holds one test).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use auth_ratelimit::{clock::FakeClock, MemoryStore, Quota};

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn spray_of_a_million_keys_stays_bounded_in_keys_and_bytes() {
    const CAP: usize = 10_000;
    const KEYS: u64 = 1_000_000;
    let clock = FakeClock::new();
    let store = MemoryStore::<u64>::new().clock(clock.clone()).max_keys(CAP);
    let q = Quota::per_minute(10);
    for _ in 0..10 {
        assert!(store.check(&u64::MAX, &q, 1).is_allowed());
    }
    assert!(!store.check(&u64::MAX, &q, 1).is_allowed());
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut peak = 0;
    for k in 0..KEYS {
        // Time moves a little, as it would during a real spray.
        if k % 1000 == 0 {
            clock.advance(Duration::from_millis(1));
        }
        assert!(store.check(&k, &q, 1).is_allowed());
        peak = peak.max(store.len());
    }
    assert!(peak <= CAP, "peak {peak} over the cap");
    assert!(store.forced_evictions() > 900_000);
    // The heap is bounded by the cap, not by the spray: a store keeping
    // every key would hold at least 16 bytes (key and state) per key, 16 MB.
    let grown = PEAK.load(Ordering::Relaxed) - before;
    println!("peak heap growth {grown} bytes for {CAP} keys tracked at most");
    assert!(
        grown <= 200 * CAP,
        "{grown} bytes at the peak for a cap of {CAP} keys"
    );
    // The limited key survived: the least indebted buckets went first.
    assert!(!store.check(&u64::MAX, &q, 1).is_allowed());
}
