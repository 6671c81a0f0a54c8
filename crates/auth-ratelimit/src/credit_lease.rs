//! Credits leased from the key store in batches and spent locally (see the
//! [`credits`](crate::credits) module for the design and its bound).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use auth_core::{policy::CreditSpend, policy::Credits, KeyId, KeyStore};
use time::OffsetDateTime;

use crate::{store::StoreFuture, StoreError};

/// A lease is at most this share of what the store had left when it was
/// taken (1/16), so a few instances never hold most of a key's credits.
const LEASE_SHARE: u64 = 16;

/// The largest lease, in credits.
pub(crate) const MAX_LEASE: u64 = 64;

/// Credits this instance took from the store and has not spent yet.
#[derive(Debug)]
struct Lease {
    left: u64,
    /// When the oldest credits of the lease were taken: credits set or
    /// refilled after this make the lease stale.
    taken_at: OffsetDateTime,
    /// What the store had left after the last take.
    stored: u64,
    last_use: Instant,
}

impl Lease {
    /// A lease whose credits belong to a period that is over, or to a count
    /// that was replaced since (the verifier's `credits` are the current
    /// record's).
    fn is_stale(&self, credits: &Credits, now: OffsetDateTime) -> bool {
        if credits.refilled_at > self.taken_at {
            return true;
        }
        credits
            .refill
            .is_some_and(|r| r.every.period_start(now) > r.every.period_start(self.taken_at))
    }
}

/// One key's lease, locked while a take from the store is in flight so that
/// concurrent requests of one instance take one lease, not one each.
type Slot = Arc<tokio::sync::Mutex<Option<Lease>>>;

#[derive(Clone)]
pub(crate) struct CreditLeases {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    slots: Mutex<HashMap<KeyId, Slot>>,
    /// Leases unused this long go back to the store.
    idle: Duration,
    task_started: AtomicBool,
}

impl CreditLeases {
    pub(crate) fn new(store: Arc<dyn KeyStore>, idle: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                slots: Mutex::new(HashMap::new()),
                idle,
                task_started: AtomicBool::new(false),
            }),
        }
    }

    fn slot(&self, id: KeyId) -> Slot {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(id).or_default().clone()
    }

    /// Spends one credit of key `id`, whose current record carries
    /// `credits`: from the lease at once, else after taking a new lease.
    pub(crate) fn spend(
        &self,
        id: KeyId,
        credits: Credits,
        now: OffsetDateTime,
    ) -> StoreFuture<CreditSpend> {
        self.start_task();
        let slot = self.slot(id);
        if let Ok(mut lease) = slot.try_lock() {
            if let Some(spent) = spend_leased(&mut lease, &credits, now) {
                return StoreFuture::ready(Ok(spent));
            }
        }
        let store = self.inner.store.clone();
        StoreFuture::pending(async move {
            let mut lease = slot.lock().await;
            // Another request may have taken a lease meanwhile.
            if let Some(spent) = spend_leased(&mut lease, &credits, now) {
                return Ok(spent);
            }
            let stored = lease
                .as_ref()
                .map_or_else(|| credits.at(now).remaining, |l| l.stored);
            let size = (stored / LEASE_SHARE).clamp(1, MAX_LEASE);
            let mut took = take(&*store, id, size, now).await?;
            if took == CreditSpend::Exhausted && size > 1 {
                took = take(&*store, id, 1, now).await?;
                return Ok(match took {
                    CreditSpend::Spent { remaining } => {
                        *lease = Some(Lease {
                            left: 0,
                            taken_at: now,
                            stored: remaining,
                            last_use: Instant::now(),
                        });
                        CreditSpend::Spent { remaining }
                    }
                    other => other,
                });
            }
            Ok(match took {
                CreditSpend::Spent { remaining } => {
                    *lease = Some(Lease {
                        left: size - 1,
                        taken_at: now,
                        stored: remaining,
                        last_use: Instant::now(),
                    });
                    CreditSpend::Spent {
                        remaining: remaining + size - 1,
                    }
                }
                CreditSpend::Exhausted => {
                    // Nothing left: the next lease is taken one at a time.
                    *lease = Some(Lease {
                        left: 0,
                        taken_at: now,
                        stored: 0,
                        last_use: Instant::now(),
                    });
                    CreditSpend::Exhausted
                }
                CreditSpend::Unlimited => CreditSpend::Unlimited,
            })
        })
    }

    fn start_task(&self) {
        if !self.inner.task_started.load(Ordering::Relaxed)
            && !self.inner.task_started.swap(true, Ordering::AcqRel)
        {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(give_back_loop(Arc::downgrade(&self.inner)));
            }
        }
    }

    /// Gives every unspent lease back to the store now (e.g. at shutdown).
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        give_back(&self.inner, Duration::ZERO).await
    }

    /// Credits held in this instance's leases (for tests and metrics).
    pub(crate) fn leased(&self) -> u64 {
        let slots: Vec<Slot> = {
            let slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.values().cloned().collect()
        };
        slots
            .iter()
            .filter_map(|s| s.try_lock().ok().and_then(|l| l.as_ref().map(|l| l.left)))
            .sum()
    }
}

/// One credit from the lease, if it holds one that is still good (a stale
/// lease is dropped: its credits are not handed out).
fn spend_leased(
    lease: &mut Option<Lease>,
    credits: &Credits,
    now: OffsetDateTime,
) -> Option<CreditSpend> {
    let l = lease.as_mut()?;
    if l.is_stale(credits, now) {
        *lease = None;
        return None;
    }
    if l.left == 0 {
        return None;
    }
    l.left -= 1;
    l.last_use = Instant::now();
    Some(CreditSpend::Spent {
        remaining: l.stored + l.left,
    })
}

async fn take(
    store: &dyn KeyStore,
    id: KeyId,
    amount: u64,
    now: OffsetDateTime,
) -> Result<CreditSpend, StoreError> {
    store
        .take_credits(id, amount, now)
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))
}

/// Every idle interval, until the ledger is dropped: unused leases go back.
async fn give_back_loop(inner: Weak<Inner>) {
    loop {
        let Some(every) = inner.upgrade().map(|i| i.idle) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(err) = give_back(&inner, inner.idle).await {
            tracing::warn!(error = %err, "giving unused credits back to the key store failed; retrying");
        }
    }
}

/// Gives back the leases unused for `idle` or longer, and forgets keys with
/// nothing leased.
async fn give_back(inner: &Inner, idle: Duration) -> Result<(), StoreError> {
    let slots: Vec<(KeyId, Slot)> = {
        let slots = inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.iter().map(|(id, s)| (*id, s.clone())).collect()
    };
    let mut result = Ok(());
    for (id, slot) in slots {
        let Ok(mut lease) = slot.try_lock() else {
            continue; // a take is in flight: in use
        };
        let Some(l) = lease.as_mut() else { continue };
        if l.last_use.elapsed() < idle {
            continue;
        }
        if l.left > 0 {
            match inner.store.return_credits(id, l.left, l.taken_at).await {
                // Not added back (set or refilled since): spent, never twice.
                Ok(_) | Err(auth_core::store::StoreError::NotFound) => {}
                Err(e) => {
                    result = Err(StoreError::Backend(e.to_string()));
                    continue;
                }
            }
        }
        *lease = None;
        drop(lease);
        let mut slots = inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        // Only if no request holds the slot now.
        if slots.get(&id).is_some_and(|s| Arc::strong_count(s) == 2) {
            slots.remove(&id);
        }
    }
    result
}
