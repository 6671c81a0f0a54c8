//! What only SQLite has: a file path that can be wrong, revocations by
//! another OS process on the file, expiry notices remembered in the file.
//! What every durable store does (a second instance on the same storage,
//! nothing usable as a token stored, audit overload, `open_store`) is in
//! `store_conformance.rs`.
#![cfg(feature = "sqlite")]

mod support;

use std::sync::Arc;

use auth_core::{
    clock::{FakeClock, WallClock},
    expiry_notice::{ExpiryNotifier, NoticeError},
    store::{KeyMetadata, SqliteKeyStore, StoreError},
    *,
};
use support::*;
use time::OffsetDateTime;

#[tokio::test]
async fn unusable_path_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be.
    let err = SqliteKeyStore::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

/// The backend's error is the store error's source, not only its text.
#[tokio::test]
async fn store_errors_keep_the_backend_error_as_source() {
    use std::error::Error;

    let dir = tempfile::tempdir().unwrap();
    // A file where a folder should be: the io error.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"not a folder").unwrap();
    let err = SqliteKeyStore::open(plain.join("keys.db"))
        .await
        .unwrap_err();
    let io = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>());
    assert!(io.is_some(), "{err:?}");

    // A file that is not a database: sqlx's error.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let err = SqliteKeyStore::open(&garbage).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let sqlx = err.source().and_then(|s| s.downcast_ref::<sqlx::Error>());
    assert!(sqlx.is_some(), "{err:?}");

    // A closed pool: sqlx's error again, through the issuer's error too.
    let store = Arc::new(
        SqliteKeyStore::open(dir.path().join("keys.db"))
            .await
            .unwrap(),
    );
    store.pool().close().await;
    let err = store.get(KeyId::random()).await.unwrap_err();
    let sqlx = err.source().and_then(|s| s.downcast_ref::<sqlx::Error>());
    assert!(matches!(sqlx, Some(sqlx::Error::PoolClosed)), "{err:?}");
    let err = issuer(store).issue(new_key("alice")).await.unwrap_err();
    assert!(matches!(err, IssueError::Unavailable(_)), "{err:?}");
    let sqlx = err.source().and_then(|s| s.downcast_ref::<sqlx::Error>());
    assert!(sqlx.is_some(), "{err:?}");
}

/// A new database holds key hashes and the audit log: readable by its owner
/// only, in folders only its owner may enter; existing modes are kept.
#[cfg(unix)]
#[tokio::test]
async fn a_new_database_and_its_new_folders_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("new/deeper/keys.db");
    // Opening migrates the schema: the file, its WAL and shared memory exist.
    let store = SqliteKeyStore::open(&path).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("new")), 0o700);
    assert_eq!(mode(&dir.path().join("new/deeper")), 0o700);
    for side in ["keys.db-wal", "keys.db-shm"] {
        let side = dir.path().join("new/deeper").join(side);
        if side.exists() {
            assert_eq!(mode(&side), 0o600, "{}", side.display());
        }
    }
    assert_eq!(mode(dir.path()), 0o755, "an existing folder keeps its mode");
    drop(store);
    // An existing file keeps its mode too.
    let shared = dir.path().join("shared.db");
    std::fs::write(&shared, b"").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
    SqliteKeyStore::open(&shared).await.unwrap();
    assert_eq!(mode(&shared), 0o640);
}

/// Set in the child process started by the test below: `<db path>|<key id>`.
const CHILD_REVOKE: &str = "AUTH_CORE_TEST_CHILD_REVOKE";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_by_a_separate_os_process_is_seen() {
    if let Ok(job) = std::env::var(CHILD_REVOKE) {
        // Child: the `revoke` command, in a process of its own.
        let (path, id) = job.split_once('|').unwrap();
        let store = SqliteKeyStore::open(path).await.unwrap();
        assert!(store
            .revoke(id.parse().unwrap(), OffsetDateTime::now_utc())
            .await
            .unwrap());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let server: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    let key = issuer(server.clone())
        .issue(new_key("alice"))
        .await
        .unwrap();
    let v = verifier(server.clone());
    v.verify(key.token.expose_secret()).await.unwrap();
    assert_eq!(v.cached_keys(), 1);

    let status = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "revocation_by_a_separate_os_process_is_seen",
            "--test-threads=1",
        ])
        .env(
            CHILD_REVOKE,
            format!("{}|{}", path.display(), key.record.id),
        )
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "the revoking process failed");

    let v = &v;
    let token = &key.token;
    eventually(
        "the server to refuse a key revoked by another process",
        move || async move {
            match v.verify(token.expose_secret()).await {
                Err(e) => {
                    assert_eq!(e.reason(), RejectReason::Revoked);
                    true
                }
                Ok(_) => false,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn an_expiry_notice_is_not_repeated_after_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let clock = Arc::new(FakeClock::new(OffsetDateTime::now_utc()));
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = {
        let count = count.clone();
        move |_key: KeyMetadata| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<(), NoticeError>(()) }
        }
    };

    let store: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    let key = new_key("alice").expires_at(clock.now() + time::Duration::days(3));
    issuer(store.clone())
        .clock(clock.clone())
        .issue(key)
        .await
        .unwrap();
    let notifier = ExpiryNotifier::new(store.clone(), listener.clone()).clock(clock.clone());
    assert_eq!(notifier.run_once().await.unwrap().delivered, 1);
    drop((notifier, store));

    let reopened: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    let notifier = ExpiryNotifier::new(reopened, listener).clock(clock);
    assert_eq!(notifier.run_once().await.unwrap().delivered, 0);
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
}
