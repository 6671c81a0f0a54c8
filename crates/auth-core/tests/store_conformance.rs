//! The key-store conformance suite (`keygate_test_support::conformance`,
//! shared with other `KeyStore` implementations), run against every store
//! and audit log here: memory, SQLite (feature `sqlite`) and PostgreSQL
//! (feature `postgres`, with `DATABASE_URL`; each test in a schema of its
//! own).
//!
//! The durable stores also run [`durable`]: what a second instance on the
//! same file or database sees, and what is (not) written down. What only
//! one backend has (other OS processes on a file, lost connections) is in
//! `sqlite.rs` and `postgres.rs`.

mod support;

use std::{sync::Arc, time::Duration};

#[cfg(feature = "postgres")]
use auth_core::store::{PostgresAuditLog, PostgresKeyStore};
#[cfg(feature = "sqlite")]
use auth_core::store::{SqliteAuditLog, SqliteKeyStore};
use auth_core::{
    audit::{AuditLog, AuditQuery, MemoryAuditLog},
    store::{KeyChange, KeyUpdate},
    token::ParsedToken,
    *,
};
use keygate_test_support::conformance::StoreUnderTest;
use support::*;
use time::OffsetDateTime;

/// A store and audit log under test, and the storage behind them.
struct Backend {
    keys: Arc<dyn KeyStore>,
    audit: Arc<dyn AuditLog>,
    storage: Storage,
}

enum Storage {
    Memory,
    #[cfg(feature = "sqlite")]
    Sqlite {
        store: Arc<SqliteKeyStore>,
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    },
    #[cfg(feature = "postgres")]
    Postgres {
        store: Arc<PostgresKeyStore>,
        schema: pg::TestSchema,
    },
}

impl Backend {
    async fn finish(self) {
        let Backend {
            keys,
            audit,
            storage,
        } = self;
        drop((keys, audit));
        match storage {
            #[cfg(feature = "postgres")]
            Storage::Postgres { store, schema } => {
                drop(store);
                schema.drop_schema().await
            }
            _ => {}
        }
    }
}

async fn memory(_test: &str) -> Option<Backend> {
    Some(Backend {
        keys: Arc::new(MemoryKeyStore::new()),
        audit: Arc::new(MemoryAuditLog::default()),
        storage: Storage::Memory,
    })
}

#[cfg(feature = "sqlite")]
async fn sqlite(_test: &str) -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    // Missing directories are made.
    let path = dir.path().join("nested/dir/keys.db");
    let store = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    Some(Backend {
        audit: Arc::new(store.audit_log()),
        keys: store.clone(),
        storage: Storage::Sqlite {
            store,
            path,
            _dir: dir,
        },
    })
}

#[cfg(feature = "postgres")]
async fn postgres(test: &str) -> Option<Backend> {
    let schema = pg::TestSchema::new(test).await?;
    let store = Arc::new(schema.store().await);
    Some(Backend {
        audit: Arc::new(store.audit_log()),
        keys: store.clone(),
        storage: Storage::Postgres { store, schema },
    })
}

/// What the durable cases need to reach behind the store.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod storage {
    use super::*;

    /// An audit log with small batches, and its count of dropped events.
    pub(crate) enum BatchedAudit {
        #[cfg(feature = "sqlite")]
        Sqlite(SqliteAuditLog),
        #[cfg(feature = "postgres")]
        Postgres(PostgresAuditLog),
    }

    impl BatchedAudit {
        pub(crate) fn log(&self) -> &dyn AuditLog {
            match self {
                #[cfg(feature = "sqlite")]
                Self::Sqlite(a) => a,
                #[cfg(feature = "postgres")]
                Self::Postgres(a) => a,
            }
        }

        pub(crate) fn dropped(&self) -> u64 {
            match self {
                #[cfg(feature = "sqlite")]
                Self::Sqlite(a) => a.dropped_events(),
                #[cfg(feature = "postgres")]
                Self::Postgres(a) => a.dropped_events(),
            }
        }
    }

    /// A transaction holding the audit table: inserts wait until released.
    pub(crate) enum HeldAuditWrites {
        #[cfg(feature = "sqlite")]
        Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
        #[cfg(feature = "postgres")]
        Postgres(sqlx::PgConnection),
    }

    impl HeldAuditWrites {
        pub(crate) async fn release(self) {
            match self {
                #[cfg(feature = "sqlite")]
                Self::Sqlite(tx) => tx.commit().await.unwrap(),
                #[cfg(feature = "postgres")]
                Self::Postgres(mut conn) => {
                    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
                }
            }
        }
    }

    impl Storage {
        /// A second instance on the same file or database: its own
        /// connections, cache and change feed, as another server (or an
        /// admin command) would have.
        pub(crate) async fn another_instance(&self) -> (Arc<dyn KeyStore>, Arc<dyn AuditLog>) {
            match self {
                #[cfg(feature = "sqlite")]
                Storage::Sqlite { path, .. } => {
                    let store = Arc::new(SqliteKeyStore::open(path).await.unwrap());
                    (store.clone(), Arc::new(store.audit_log()))
                }
                #[cfg(feature = "postgres")]
                Storage::Postgres { schema, .. } => {
                    let store = Arc::new(schema.store().await);
                    (store.clone(), Arc::new(store.audit_log()))
                }
                Storage::Memory => unreachable!("memory is not a durable store"),
            }
        }

        /// The spellings `open_store` takes for this storage.
        pub(crate) fn locations(&self) -> Vec<String> {
            match self {
                #[cfg(feature = "sqlite")]
                Storage::Sqlite { path, .. } => vec![
                    path.display().to_string(),
                    format!("sqlite:{}", path.display()),
                ],
                #[cfg(feature = "postgres")]
                Storage::Postgres { schema, .. } => {
                    // The schema travels in the URL, as an operator would pass it.
                    let sep = if schema.url.contains('?') { '&' } else { '?' };
                    vec![format!(
                        "{}{sep}options=-c%20search_path%3D{}",
                        schema.url, schema.name
                    )]
                }
                Storage::Memory => unreachable!("memory is not a durable store"),
            }
        }

        /// `open_store`'s name for this backend.
        pub(crate) fn name(&self) -> &'static str {
            match self {
                #[cfg(feature = "sqlite")]
                Storage::Sqlite { .. } => "sqlite",
                #[cfg(feature = "postgres")]
                Storage::Postgres { .. } => "postgres",
                Storage::Memory => "memory",
            }
        }

        /// Every row of every table as text, and the raw bytes of the
        /// storage's files (none for PostgreSQL, whose files are not ours).
        pub(crate) async fn dump(&self) -> (String, Vec<u8>) {
            use sqlx::Row;
            let mut text = String::new();
            match self {
                #[cfg(feature = "sqlite")]
                Storage::Sqlite { store, path, .. } => {
                    let tables: Vec<String> =
                        sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
                            .fetch_all(store.pool())
                            .await
                            .unwrap()
                            .iter()
                            .map(|r| r.get(0))
                            .collect();
                    assert!(tables.iter().any(|t| t == "api_keys"));
                    assert!(tables.iter().any(|t| t == "audit_events"));
                    for t in &tables {
                        let cols: Vec<String> =
                            sqlx::query(&format!("SELECT name FROM pragma_table_info('{t}')"))
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
                            text.push_str(&String::from_utf8_lossy(&bytes));
                            text.push('\n');
                        }
                    }
                    // The file and its write-ahead log, free pages included.
                    let mut raw = Vec::new();
                    for suffix in ["", "-wal"] {
                        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", path.display())) {
                            raw.extend(bytes);
                        }
                    }
                    (text, raw)
                }
                #[cfg(feature = "postgres")]
                Storage::Postgres { store, schema } => {
                    let tables: Vec<String> = sqlx::query(
                        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                    )
                    .bind(&schema.name)
                    .fetch_all(store.pool())
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                    assert!(tables.iter().any(|t| t == "api_keys"));
                    assert!(tables.iter().any(|t| t == "audit_events"));
                    for t in &tables {
                        let rows: Option<String> = sqlx::query(&format!(
                            "SELECT string_agg(t::text, E'\\n') FROM \"{t}\" t"
                        ))
                        .fetch_one(store.pool())
                        .await
                        .unwrap()
                        .get(0);
                        text.push_str(&rows.unwrap_or_default());
                        text.push('\n');
                    }
                    (text, Vec::new())
                }
                Storage::Memory => unreachable!("memory is not a durable store"),
            }
        }

        /// An audit log writing in batches of 4 through a queue of 8.
        pub(crate) fn small_batched_audit(&self) -> BatchedAudit {
            let batching = store::AuditBatching::new().queue_capacity(8).max_batch(4);
            match self {
                #[cfg(feature = "sqlite")]
                Storage::Sqlite { store, .. } => {
                    BatchedAudit::Sqlite(store.audit_log_with(&batching))
                }
                #[cfg(feature = "postgres")]
                Storage::Postgres { store, .. } => {
                    BatchedAudit::Postgres(store.audit_log_with(&batching))
                }
                Storage::Memory => unreachable!("memory is not a durable store"),
            }
        }

        /// Holds the audit table until [`HeldAuditWrites::release`].
        pub(crate) async fn hold_audit_writes(&self) -> HeldAuditWrites {
            match self {
                #[cfg(feature = "sqlite")]
                Storage::Sqlite { store, .. } => {
                    // SQLite has one writer: holding the write lock is enough.
                    let mut tx = store.pool().begin().await.unwrap();
                    sqlx::query("DELETE FROM audit_events")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    HeldAuditWrites::Sqlite(tx)
                }
                #[cfg(feature = "postgres")]
                Storage::Postgres { schema, .. } => {
                    let mut conn = schema.connection().await;
                    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                    sqlx::query("LOCK TABLE audit_events IN EXCLUSIVE MODE")
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    HeldAuditWrites::Postgres(conn)
                }
                Storage::Memory => unreachable!("memory is not a durable store"),
            }
        }

        /// Rows in the audit table.
        pub(crate) async fn audit_rows(&self) -> i64 {
            use sqlx::Row;
            let q = "SELECT count(*) FROM audit_events";
            match self {
                #[cfg(feature = "sqlite")]
                Storage::Sqlite { store, .. } => {
                    sqlx::query(q).fetch_one(store.pool()).await.unwrap().get(0)
                }
                #[cfg(feature = "postgres")]
                Storage::Postgres { store, .. } => {
                    sqlx::query(q).fetch_one(store.pool()).await.unwrap().get(0)
                }
                Storage::Memory => unreachable!("memory is not a durable store"),
            }
        }
    }
}

/// The shared cases take the store and log; dropping a PostgreSQL test's
/// schema is their teardown.
impl From<Backend> for StoreUnderTest {
    fn from(b: Backend) -> Self {
        let subject = StoreUnderTest::new(b.keys.clone(), b.audit.clone());
        subject.with_teardown(async move { b.finish().await })
    }
}

/// One test per durable case, for one backend.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! run {
    ($backend:ident, $cases:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let test = concat!(module_path!(), "::", stringify!($case));
                if let Some(b) = crate::$backend(test).await {
                    crate::$cases::$case(&b).await;
                    b.finish().await;
                }
            }
        )*
    };
}

/// The shared conformance cases for `$backend`; with `durable`, the
/// durable cases too.
macro_rules! suite {
    ($backend:ident $(, $durable:ident)?) => {
        mod $backend {
            keygate_test_support::key_store_conformance!(crate::$backend);
            $(
                mod $durable {
                    run!($backend, durable:
                        keys_and_audit_outlive_the_instance_that_wrote_them,
                        nothing_stored_can_be_used_as_a_token,
                        edits_reach_another_instance,
                        revocation_and_rotation_reach_another_instance_without_reads_per_request,
                        audit_overload_drops_and_counts_and_flush_keeps_the_rest,
                        open_store_finds_the_backend_from_its_location,
                    );
                }
            )?
        }
    };
}

suite!(memory);
#[cfg(feature = "sqlite")]
suite!(sqlite, durable);
#[cfg(feature = "postgres")]
suite!(postgres, durable);

/// What a store that outlives its process must also do: a second instance
/// on the same file or database sees every change, and nothing written
/// down can be used as a token.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod durable {
    use auth_core::store::open_store;

    use super::*;

    /// Refused with this reason, or not answered at all: never let through.
    fn refused_as(r: &Result<AuthContext, AuthError>, reason: RejectReason) -> bool {
        matches!(r, Err(e) if e.reason() == reason)
    }

    pub(crate) async fn keys_and_audit_outlive_the_instance_that_wrote_them(b: &Backend) {
        let key = issuer(b.keys.clone())
            .issue(new_key("alice"))
            .await
            .unwrap();
        b.audit.record(audit_event(
            Some(key.record.id),
            Some("alice"),
            OffsetDateTime::now_utc(),
        ));
        b.audit.flush().await.unwrap();

        // Nothing shared but the storage: no cache, no feed.
        let (keys, audit) = b.storage.another_instance().await;
        // Times are kept to the microsecond.
        let micros =
            |t: OffsetDateTime| t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap();
        let mut expected = key.record.clone();
        expected.created_at = micros(key.record.created_at);
        assert_eq!(keys.list_by_owner("alice").await.unwrap(), vec![expected]);
        let ctx = verifier(keys.clone())
            .verify(key.token.expose_secret())
            .await
            .unwrap();
        assert_eq!(ctx.key_id(), Some(key.record.id));
        let page = audit
            .query(&AuditQuery::default().key_id(key.record.id).limit(10))
            .await
            .unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].actor.as_deref(), Some("alice"));
    }

    pub(crate) async fn nothing_stored_can_be_used_as_a_token(b: &Backend) {
        let key = issuer(b.keys.clone())
            .issue(new_key("alice"))
            .await
            .unwrap();
        let rotated = issuer(b.keys.clone())
            .rotate(key.record.id, Duration::from_secs(60))
            .await
            .unwrap();
        let v = verifier(b.keys.clone());
        v.verify(rotated.token.expose_secret()).await.unwrap();
        v.flush_usage().await;
        b.audit.record(audit_event(
            Some(rotated.record.id),
            Some("alice"),
            OffsetDateTime::now_utc(),
        ));
        b.audit.flush().await.unwrap();

        let (text, raw) = b.storage.dump().await;
        let raw_text = String::from_utf8_lossy(&raw);
        for issued in [&key, &rotated] {
            let token = issued.token.expose_secret();
            let secret = *ParsedToken::parse(token).unwrap().secret();
            // The search is real: the public id is there.
            assert!(text.contains(&issued.record.id.to_string()));
            if !raw.is_empty() {
                assert!(raw_text.contains(&issued.record.id.to_string()));
            }
            for haystack in [&text, &*raw_text] {
                assert!(!haystack.contains(token));
                assert!(!haystack.contains(secret_text(token)));
            }
            assert!(
                !raw.windows(32).any(|w| w == secret),
                "raw secret bytes in the file"
            );
        }
    }

    pub(crate) async fn edits_reach_another_instance(b: &Backend) {
        let (other, _) = b.storage.another_instance().await;
        let v = verifier(other.clone());
        let key = issuer(b.keys.clone())
            .issue(new_key("alice"))
            .await
            .unwrap();
        v.verify(key.token.expose_secret()).await.unwrap();
        let heard = Recorder::subscribe(&*other);
        let disable = KeyUpdate::default().disabled_at(Some(OffsetDateTime::now_utc()));
        b.keys.update(key.record.id, &disable).await.unwrap();
        eventually("the other instance to hear of the edit", || async {
            heard.seen().contains(&KeyChange::Updated(key.record.id))
        })
        .await;
        assert!(refused_as(
            &v.verify(key.token.expose_secret()).await,
            RejectReason::Disabled
        ));
        // Only that key was dropped: no resync of every cache.
        assert!(!heard.seen().contains(&KeyChange::All));
        assert!(other.changes().is_in_sync());
        let enable = KeyUpdate::default().disabled_at(None);
        b.keys.update(key.record.id, &enable).await.unwrap();
        v.verify(key.token.expose_secret()).await.unwrap();
    }

    pub(crate) async fn revocation_and_rotation_reach_another_instance_without_reads_per_request(
        b: &Backend,
    ) {
        let (other, _) = b.storage.another_instance().await;
        let other = TestStore::new(other);
        let v = verifier(other.clone());
        let issue = issuer(b.keys.clone());
        let revoked = issue.issue(new_key("alice")).await.unwrap();
        let rotated = issue.issue(new_key("alice")).await.unwrap();
        for k in [&revoked, &rotated] {
            v.verify(k.token.expose_secret()).await.unwrap();
        }
        // PostgreSQL tells the other instance of each creation (`Updated`,
        // which drops the key from its cache) whenever the notification
        // arrives, possibly after the verifications above; the next use then
        // reads the store once (CI saw it). Once the caches have settled, a
        // round of hits must read nothing; hits that always read never pass.
        let (v, other, keys) = (&v, &other, [&revoked, &rotated]);
        eventually("a round of cache hits that reads nothing", || async move {
            let reads = other.gets();
            for k in keys {
                v.verify(k.token.expose_secret()).await.unwrap();
            }
            other.gets() == reads
        })
        .await;

        assert!(issue.revoke(revoked.record.id).await.unwrap());
        let replacement = issue
            .rotate(rotated.record.id, Duration::ZERO)
            .await
            .unwrap();
        for k in [&revoked, &rotated] {
            let v = &v;
            eventually(
                "the other instance to refuse a key changed by this one",
                move || async move {
                    let r = v.verify(k.token.expose_secret()).await;
                    assert!(r.is_ok() || refused_as(&r, RejectReason::Revoked), "{r:?}");
                    r.is_err()
                },
            )
            .await;
        }
        v.verify(replacement.token.expose_secret()).await.unwrap();
        assert!(other.changes().is_in_sync());
    }

    pub(crate) async fn audit_overload_drops_and_counts_and_flush_keeps_the_rest(b: &Backend) {
        let audit = b.storage.small_batched_audit();
        // The writer gets stuck on its first batch.
        let held = b.storage.hold_audit_writes().await;
        for i in 0..100 {
            audit.log().record(audit_event(
                None,
                Some("alice"),
                OffsetDateTime::now_utc() + time::Duration::seconds(i),
            ));
        }
        let dropped = audit.dropped();
        assert!(dropped >= 100 - 8 - 4, "dropped {dropped}");

        held.release().await;
        audit.log().flush().await.unwrap();
        let written = b.storage.audit_rows().await;
        assert!(written > 0);
        assert_eq!(written as u64 + audit.dropped(), 100);
    }

    pub(crate) async fn open_store_finds_the_backend_from_its_location(b: &Backend) {
        let locations = b.storage.locations();
        let opened = open_store(&locations[0]).await.unwrap();
        assert_eq!(opened.backend(), b.storage.name());
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

        // Every spelling opens the same storage as the backend under test.
        for location in &locations {
            let again = open_store(location).await.unwrap();
            verifier(again.keys.clone())
                .verify(key.token.expose_secret())
                .await
                .unwrap();
            let page = again
                .audit
                .query(&AuditQuery::default().key_id(key.record.id).limit(10))
                .await
                .unwrap();
            assert_eq!(page.events.len(), 1, "{location}");
        }
        assert!(b.keys.get(key.record.id).await.unwrap().is_some());
    }
}
