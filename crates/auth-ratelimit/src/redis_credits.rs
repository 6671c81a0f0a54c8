//! Credits counted in Redis and written back to the key store in batches
//! (see the [`credits`](crate::credits) module for the design).

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    time::Duration,
};

use auth_core::{store::KeyStore, CreditSpend, Credits, KeyId};
use redis::Script;
use time::OffsetDateTime;

use crate::{RedisStore, StoreError};

/// Counters of keys idle this long are dropped (then started again from the
/// store's count).
const IDLE_TTL_SECS: u64 = 30 * 86_400;

/// Lua numbers are doubles: counts above this are kept as this.
const MAX_EXACT: u64 = 1 << 53;

/// Spends one credit of one key. KEYS[1]: the key's counter (a hash of
/// `remaining` and `period`, the Unix second of the last refill). ARGV: the
/// stored remaining and refill second (used when there is no counter yet),
/// the refill amount (-1: never refilled), the start of the current period
/// (Unix second), the idle TTL. Returns spent (1 or 0), remaining, period.
const SPEND: &str = r"
local h = redis.call('HMGET', KEYS[1], 'remaining', 'period')
local remaining = tonumber(h[1])
local period = tonumber(h[2])
if remaining == nil or period == nil then
  remaining = tonumber(ARGV[1])
  period = tonumber(ARGV[2])
end
local amount = tonumber(ARGV[3])
local current = tonumber(ARGV[4])
if amount >= 0 and current > period then
  remaining = amount
  period = current
end
local spent = 0
if remaining > 0 then
  remaining = remaining - 1
  spent = 1
end
redis.call('HSET', KEYS[1], 'remaining', string.format('%.0f', remaining),
  'period', string.format('%.0f', period))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {spent, remaining, period}
";

fn spend_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(SPEND))
}

#[derive(Clone)]
pub(crate) struct RedisCredits {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisStore,
    store: Arc<dyn KeyStore>,
    /// Keys spent since the last write-back.
    dirty: Mutex<HashSet<KeyId>>,
    write_back: Duration,
    task_started: AtomicBool,
}

type Spending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<CreditSpend, StoreError>> + Send>>;

impl RedisCredits {
    pub(crate) fn new(redis: RedisStore, store: Arc<dyn KeyStore>, write_back: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                store,
                dirty: Mutex::new(HashSet::new()),
                write_back,
                task_started: AtomicBool::new(false),
            }),
        }
    }

    fn counter_key(redis: &RedisStore, id: KeyId) -> String {
        format!("{}:credits:{id}", redis.prefix())
    }

    pub(crate) fn spend(&self, id: KeyId, credits: Credits, now: OffsetDateTime) -> Spending {
        let this = self.clone();
        Box::pin(async move {
            let inner = &*this.inner;
            let redis = &inner.redis;
            let key = Self::counter_key(redis, id);
            let (amount, current) = match credits.refill {
                Some(r) => (
                    i64::try_from(r.amount.min(MAX_EXACT)).unwrap_or(i64::MAX),
                    r.every.period_start(now).unix_timestamp(),
                ),
                None => (-1, i64::MIN),
            };
            let mut invocation = spend_script().prepare_invoke();
            invocation
                .key(key)
                .arg(credits.remaining.min(MAX_EXACT))
                .arg(credits.refilled_at.unix_timestamp())
                .arg(amount)
                .arg(current)
                .arg(IDLE_TTL_SECS);
            let reply: Vec<i64> = redis.run_script(&invocation).await?;
            let [spent, remaining, _period] = reply[..] else {
                return Err(StoreError::Backend(format!(
                    "unexpected script reply of {} items",
                    reply.len()
                )));
            };
            this.mark(id);
            Ok(if spent == 1 {
                CreditSpend::Spent {
                    remaining: u64::try_from(remaining).unwrap_or(0),
                }
            } else {
                CreditSpend::Exhausted
            })
        })
    }

    /// Notes `id` for the next write-back, starting the write-back task on
    /// the first spend.
    fn mark(&self, id: KeyId) {
        let inner = &self.inner;
        inner
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
        if !inner.task_started.swap(true, Ordering::AcqRel) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(write_back_loop(Arc::downgrade(inner)));
            }
        }
    }

    /// Writes the counts of the keys spent since the last write-back.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        flush(&self.inner).await
    }
}

/// Every write-back interval, until the ledger is dropped.
async fn write_back_loop(inner: Weak<Inner>) {
    loop {
        let Some(every) = inner.upgrade().map(|i| i.write_back) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(err) = flush(&inner).await {
            tracing::warn!(error = %err, "writing credit counts back to the key store failed; retrying");
        }
    }
}

async fn flush(inner: &Inner) -> Result<(), StoreError> {
    let dirty = std::mem::take(&mut *inner.dirty.lock().unwrap_or_else(|e| e.into_inner()));
    let mut failed = Vec::new();
    let mut result = Ok(());
    for id in dirty {
        match write_back(inner, id).await {
            Ok(()) => {}
            Err(err) => {
                failed.push(id);
                result = Err(err);
            }
        }
    }
    if !failed.is_empty() {
        // Kept for the next write-back, unless spent again meanwhile.
        let mut dirty = inner.dirty.lock().unwrap_or_else(|e| e.into_inner());
        dirty.extend(failed);
    }
    result
}

/// Copies key `id`'s count to the store, only ever lowering it and
/// publishing nothing: a `KeyChange` per key per interval would drop every
/// instance's cached key (a store read and argon2 on its next request).
async fn write_back(inner: &Inner, id: KeyId) -> Result<(), StoreError> {
    let key = RedisCredits::counter_key(&inner.redis, id);
    let mut cmd = redis::cmd("HGET");
    cmd.arg(key).arg("remaining");
    let remaining: Option<u64> = inner.redis.run_cmd(&cmd).await?;
    let Some(remaining) = remaining else {
        return Ok(()); // expired meanwhile: the store's count stands
    };
    match inner.store.lower_credits(id, remaining).await {
        Ok(()) | Err(auth_core::store::StoreError::NotFound) => Ok(()),
        Err(e) => Err(StoreError::Backend(e.to_string())),
    }
}
