//! SQLite-specific behaviour: durability across reopen, no usable secret in
//! the file, revocations and rotations made by another process (the cache is
//! not bypassed to see them), audit overload and durability, `open_store`.
#![cfg(feature = "sqlite")]

mod support;

use std::{sync::Arc, time::Duration};

use auth_core::{store::open_store, *};
use sqlx::Row;
use support::*;
use time::OffsetDateTime;

#[tokio::test]
async fn issued_key_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/keys.db");
    let store: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    let key = issuer(store.clone()).issue(new_key("alice")).await.unwrap();
    drop(store);

    let reopened: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    // Times are kept to the microsecond.
    let micros = |t: OffsetDateTime| t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap();
    let expected = KeyRecord {
        created_at: micros(key.record.created_at),
        ..key.record.clone()
    };
    assert_eq!(
        reopened.list_by_owner("alice").await.unwrap(),
        vec![expected]
    );
    let ctx = verifier(reopened.clone())
        .verify(key.token.expose_secret())
        .await
        .unwrap();
    assert_eq!(ctx.key_id(), Some(key.record.id));
}

#[tokio::test]
async fn nothing_in_the_file_can_be_used_as_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let store = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    let audit = store.audit_log();
    let keys: Arc<dyn KeyStore> = store.clone();
    let key = issuer(keys.clone()).issue(new_key("alice")).await.unwrap();
    let rotated = issuer(keys.clone())
        .rotate(key.record.id, Duration::from_secs(60))
        .await
        .unwrap();
    let v = verifier(keys.clone());
    v.verify(rotated.token.expose_secret()).await.unwrap();
    v.flush_usage().await;
    audit.record(audit_event(
        Some(rotated.record.id),
        Some("alice"),
        OffsetDateTime::now_utc(),
    ));
    audit.flush().await.unwrap();

    // Every table, every column, as text.
    let mut dump = String::new();
    let tables: Vec<String> = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.contains(&"api_keys".to_owned()) && tables.contains(&"audit_events".to_owned()));
    for t in &tables {
        let cols: Vec<String> = sqlx::query(&format!("SELECT name FROM pragma_table_info('{t}')"))
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let concat = cols
            .iter()
            .map(|c| format!("coalesce(CAST(\"{c}\" AS TEXT), '')"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        for row in sqlx::query(&format!("SELECT {concat} FROM \"{t}\""))
            .fetch_all(store.pool())
            .await
            .unwrap()
        {
            let bytes: Vec<u8> = row.get(0);
            dump.push_str(&String::from_utf8_lossy(&bytes));
            dump.push('\n');
        }
    }
    // Closing checkpoints the WAL into the file, which is then read raw
    // (free pages included).
    store.pool().close().await;
    drop((audit, keys, v, store));
    let mut raw = Vec::new();
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", path.display())) {
            raw.extend(bytes);
        }
    }
    let secrets: Vec<[u8; 32]> = [&key, &rotated]
        .iter()
        .map(|k| {
            *ParsedToken::parse(k.token.expose_secret())
                .unwrap()
                .secret()
        })
        .collect();
    for s in &secrets {
        assert!(
            !raw.windows(32).any(|w| w == s),
            "raw secret bytes in the file"
        );
    }
    let raw = String::from_utf8_lossy(&raw);

    for issued in [&key, &rotated] {
        let token = issued.token.expose_secret();
        // The search is real: the public id is there.
        assert!(dump.contains(&issued.record.id.to_string()));
        assert!(raw.contains(&issued.record.id.to_string()));
        for haystack in [&dump, &*raw] {
            assert!(!haystack.contains(token));
            assert!(!haystack.contains(secret_text(token)));
        }
    }
}

#[tokio::test]
async fn edits_through_another_store_on_the_file_reach_this_ones_feed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let server: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    let cli: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    let v = verifier(server.clone());
    let key = issuer(cli.clone()).issue(new_key("alice")).await.unwrap();
    v.verify(key.token.expose_secret()).await.unwrap();
    let heard = Recorder::subscribe(&*server);
    let disable = KeyUpdate {
        disabled_at: Some(Some(OffsetDateTime::now_utc())),
        ..KeyUpdate::default()
    };
    cli.update(key.record.id, &disable).await.unwrap();
    eventually("the server to hear of the edit", || async {
        heard.seen().contains(&KeyChange::Updated(key.record.id))
    })
    .await;
    let err = v.verify(key.token.expose_secret()).await.unwrap_err();
    assert_eq!(err.reason(), RejectReason::Disabled);
    assert!(server.changes().is_in_sync());
}

#[tokio::test]
async fn changes_through_another_store_on_the_file_are_seen_without_reading_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    // Two stores on one file, each with its own connections and feed, as
    // the running server and an admin command would have (the test below
    // does it with a real second process).
    let server = CountingStore::new(Arc::new(SqliteKeyStore::open(&path).await.unwrap()));
    let cli: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    let v = verifier(server.clone());
    let issue = issuer(cli.clone());
    let revoked = issue.issue(new_key("alice")).await.unwrap();
    let rotated = issue.issue(new_key("alice")).await.unwrap();
    for k in [&revoked, &rotated] {
        v.verify(k.token.expose_secret()).await.unwrap();
    }
    let reads = server.gets();
    for k in [&revoked, &rotated] {
        v.verify(k.token.expose_secret()).await.unwrap();
    }
    assert_eq!(server.gets(), reads, "cache hits must not read the store");

    assert!(issue.revoke(revoked.record.id).await.unwrap());
    let replacement = issue
        .rotate(rotated.record.id, Duration::ZERO)
        .await
        .unwrap();
    for k in [&revoked, &rotated] {
        let v = &v;
        eventually(
            "the server to refuse a key changed by another process",
            move || async move {
                match v.verify(k.token.expose_secret()).await {
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
    v.verify(replacement.token.expose_secret()).await.unwrap();
    assert!(server.changes().is_in_sync());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_overload_drops_and_counts_and_flush_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteKeyStore::open(dir.path().join("keys.db"))
        .await
        .unwrap();
    let audit = store.audit_log_with(&store::AuditBatching::new().queue_capacity(8).max_batch(4));
    // Hold the write lock: the writer is stuck on its first batch.
    let mut blocker = store.pool().begin().await.unwrap();
    sqlx::query("DELETE FROM audit_events")
        .execute(&mut *blocker)
        .await
        .unwrap();

    for i in 0..100 {
        audit.record(audit_event(
            None,
            Some("alice"),
            OffsetDateTime::now_utc() + time::Duration::seconds(i),
        ));
    }
    let dropped = audit.dropped_events();
    assert!(dropped >= 100 - 8 - 4, "dropped {dropped}");

    blocker.commit().await.unwrap();
    audit.flush().await.unwrap();
    let written: i64 = sqlx::query("SELECT count(*) FROM audit_events")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(written as u64 + audit.dropped_events(), 100);
    assert!(written > 0);
}

#[tokio::test]
async fn audit_events_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let key = KeyId::random();
    {
        let store = SqliteKeyStore::open(&path).await.unwrap();
        let audit = store.audit_log();
        audit.record(audit_event(
            Some(key),
            Some("alice"),
            OffsetDateTime::now_utc(),
        ));
        audit.flush().await.unwrap();
    }
    let audit = SqliteKeyStore::open(&path).await.unwrap().audit_log();
    let page = audit
        .query(&AuditQuery {
            key_id: Some(key),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].actor.as_deref(), Some("alice"));
}

#[tokio::test]
async fn open_store_picks_the_backend_from_the_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo/keys.db");
    let opened = open_store(path.to_str().unwrap()).await.unwrap();
    assert_eq!(opened.backend(), "sqlite");
    let key = issuer(opened.keys.clone())
        .issue(new_key("alice"))
        .await
        .unwrap();
    opened.audit.record(audit_event(
        Some(key.record.id),
        Some("alice"),
        OffsetDateTime::now_utc(),
    ));
    opened.audit.flush().await.unwrap();
    assert_eq!(opened.dropped_audit_events(), 0);
    drop(opened);

    let again = open_store(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    verifier(again.keys.clone())
        .verify(key.token.expose_secret())
        .await
        .unwrap();
    let page = again
        .audit
        .query(&AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);

    assert_eq!(open_store("memory:").await.unwrap().backend(), "memory");
}

#[tokio::test]
async fn unusable_path_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be.
    let err = SqliteKeyStore::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
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
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
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
