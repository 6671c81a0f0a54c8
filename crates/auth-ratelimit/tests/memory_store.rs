//! What only the in-memory store has: OS threads on one bucket, bounded
//! memory, sweeping. What every store does is in `stores.rs`.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use auth_ratelimit::{FakeClock, MemoryStore, Quota};

#[test]
fn many_threads_one_key_admit_exactly_the_quota() {
    let store = Arc::new(MemoryStore::<&str>::new().clock(FakeClock::new()));
    let q = Quota::per_hour(1000);
    let admitted = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (store, admitted) = (store.clone(), admitted.clone());
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    if store.check(&"shared", &q, 1).is_allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), 1000);
}

/// A million distinct keys (a spray of random IPs) never grow the store past
/// its cap, and a key that is being limited is not forgotten.
#[test]
fn spray_of_a_million_keys_stays_bounded() {
    const CAP: usize = 10_000;
    let clock = FakeClock::new();
    let store = MemoryStore::<u64>::new().clock(clock.clone()).max_keys(CAP);
    let q = Quota::per_minute(10);
    for _ in 0..10 {
        assert!(store.check(&u64::MAX, &q, 1).is_allowed());
    }
    assert!(!store.check(&u64::MAX, &q, 1).is_allowed());
    let mut peak = 0;
    for k in 0..1_000_000u64 {
        // Time moves a little, as it would during a real spray.
        if k % 1000 == 0 {
            clock.advance(Duration::from_millis(1));
        }
        assert!(store.check(&k, &q, 1).is_allowed());
        peak = peak.max(store.len());
    }
    assert!(peak <= CAP, "peak {peak} over the cap");
    assert!(store.forced_evictions() > 900_000);
    // The table's allocation is bounded by the cap too, not by the spray.
    assert!(
        store.allocated_slots() <= 4 * CAP,
        "{} slots",
        store.allocated_slots()
    );
    // The limited key survived: the least indebted buckets went first.
    assert!(!store.check(&u64::MAX, &q, 1).is_allowed());
}

#[test]
fn full_buckets_are_swept_and_sweeping_loses_nothing() {
    let clock = FakeClock::new();
    let store = MemoryStore::<u32>::new().clock(clock.clone());
    let q = Quota::per_second(10);
    for k in 0..1000 {
        store.check(&k, &q, 1);
    }
    for _ in 0..9 {
        store.check(&5000, &q, 1);
    }
    assert_eq!(store.len(), 1001);
    clock.advance(Duration::from_millis(100));
    // Keys 0..1000 are full again (1 token, 100 ms); 5000 is not.
    assert_eq!(store.sweep(), 1000);
    assert_eq!(store.len(), 1);
    assert_eq!(store.check(&5000, &q, 1).remaining(), 1);
    assert_eq!(
        store.check(&1, &q, 1).remaining(),
        9,
        "a swept key starts full"
    );
}
