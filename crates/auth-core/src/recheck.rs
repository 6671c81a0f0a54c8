//! Re-reading a long-lived connection's credential after a resync, shared
//! by the verifier's key watches and the JWT authority's secret watches.

use std::time::Duration;

use rand::{rngs::OsRng, RngCore};

/// Connections re-checked after a resync wait a random delay below this,
/// so a resync does not send every open connection to the store at once.
pub(crate) const RECHECK_SPREAD: Duration = Duration::from_secs(3);
/// Attempts at a re-check after a resync before failing closed.
const RECHECK_ATTEMPTS: u32 = 3;

fn jitter(max: Duration) -> Duration {
    let nanos = max.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(OsRng.next_u64() % nanos.max(1))
}

/// Reads the state of a long-lived connection's credential. After a resync
/// the read waits a random delay below [`RECHECK_SPREAD`] first, and a
/// failed read is retried (spread out again) a few times before the error
/// is returned (and the connection ends, failing closed): a store blip
/// becomes neither a thundering herd nor a mass disconnect.
pub(crate) async fn recheck<T, E, F, Fut>(after_resync: bool, mut read: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    if !after_resync {
        return read().await;
    }
    let mut attempt = 1;
    loop {
        tokio::time::sleep(jitter(RECHECK_SPREAD * attempt)).await;
        match read().await {
            Err(_) if attempt < RECHECK_ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}
