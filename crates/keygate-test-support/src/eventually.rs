use std::{future::Future, time::Duration};

/// How long [`eventually`] waits before failing the test.
const DEADLINE: Duration = Duration::from_secs(10);

/// Waits until `cond` holds, polling it; fails the test, naming `what`, if
/// it does not within 10 s.
///
/// For effects that happen in the background (a notification from another
/// instance, a process starting): the test waits exactly as long as needed
/// and the deadline only bounds a failure.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
