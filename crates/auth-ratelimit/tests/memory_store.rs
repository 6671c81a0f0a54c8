//! What only the in-memory store has: OS threads on one bucket, and
//! sweeping (bounded memory is in `memory_bound.rs`). What every store does
//! is in `stores.rs`.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use auth_ratelimit::{clock::FakeClock, MemoryStore, Quota};

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

/// A sweep drops buckets that are full while other threads take from them:
/// no token taken in that instant may be lost (the bucket would come back
/// full, and admit one request too many). Every key allows exactly two.
#[test]
fn sweeping_while_checking_admits_exactly_the_quota() {
    const KEYS: u32 = 20_000;
    let clock = FakeClock::new();
    let store = Arc::new(MemoryStore::<u32>::new().clock(clock.clone()));
    let q = Quota::per_hour(2);
    for round in 0..20u32 {
        let keys = round * KEYS..(round + 1) * KEYS;
        // Every bucket exists and is full again: the sweep may drop any.
        for k in keys.clone() {
            store.check(&k, &q, 1);
        }
        clock.advance(Duration::from_secs(3600));
        let done = Arc::new(AtomicU32::new(0));
        let sweeper = {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                while done.load(Ordering::Acquire) < 2 {
                    store.sweep();
                }
            })
        };
        let checkers: Vec<_> = (0..2)
            .map(|t| {
                let (store, done, keys) = (store.clone(), done.clone(), keys.clone());
                std::thread::spawn(move || {
                    let mut admitted = 0u32;
                    // The two threads walk the keys in opposite orders.
                    let order: Vec<u32> = if t == 0 {
                        keys.collect()
                    } else {
                        keys.rev().collect()
                    };
                    for k in order {
                        for _ in 0..2 {
                            admitted += u32::from(store.check(&k, &q, 1).is_allowed());
                        }
                    }
                    done.fetch_add(1, Ordering::Release);
                    admitted
                })
            })
            .collect();
        let admitted: u32 = checkers.into_iter().map(|c| c.join().unwrap()).sum();
        sweeper.join().unwrap();
        assert_eq!(admitted, 2 * KEYS, "round {round}");
    }
}
