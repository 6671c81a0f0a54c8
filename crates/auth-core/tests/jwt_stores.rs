//! JWT secrets in the durable stores: sealed at rest, kept across reopening,
//! and a regeneration on one instance drops the other instances' cached
//! tokens of that user (and only that user) through the key-change feed:
//! SQLite's change log between processes on one file, PostgreSQL's
//! `LISTEN/NOTIFY` between instances on one database (`DATABASE_URL`).
#![cfg(feature = "jwt")]

mod support;

use auth_core::{store::ChangeFeed, store::KeyChange, store::SqliteKeyStore, store::StoreError};
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use async_trait::async_trait;
use auth_core::{
    jwt::{JwtAuthority, MasterKey, SealedSecret, UserSecretStore},
    *,
};
use support::*;

const MASTER: [u8; 32] = [42; 32];

/// Delegates to a store and counts reads: proves the cached path does none.
#[derive(Debug)]
struct CountingSecrets<S> {
    inner: Arc<S>,
    gets: AtomicUsize,
}

impl<S> CountingSecrets<S> {
    fn new(inner: Arc<S>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            gets: AtomicUsize::new(0),
        })
    }

    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<S: UserSecretStore> UserSecretStore for CountingSecrets<S> {
    async fn get_secret(&self, user_id: &str) -> Result<Option<SealedSecret>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_secret(user_id).await
    }
    async fn replace_secret(&self, user_id: &str, secret: &[u8]) -> Result<i64, StoreError> {
        self.inner.replace_secret(user_id, secret).await
    }
    async fn insert_secret_if_absent(
        &self,
        user_id: &str,
        secret: &[u8],
    ) -> Result<bool, StoreError> {
        self.inner.insert_secret_if_absent(user_id, secret).await
    }
    fn secret_changes(&self) -> &ChangeFeed {
        self.inner.secret_changes()
    }
}

fn authority(store: Arc<dyn UserSecretStore>) -> JwtAuthority {
    JwtAuthority::new(store, MasterKey::from_bytes(&MASTER), "syncello")
}

/// Instance A regenerates `user`'s secret; instance B (which had verified
/// both tokens, so caches them) must refuse the old token once the change
/// arrives, without ever reading the store for the bystander's token.
async fn regeneration_reaches_the_other_instance<S>(a: Arc<S>, b: Arc<S>, tag: &str)
where
    S: UserSecretStore + KeyStore,
{
    let (user, bystander) = (format!("{tag}-user"), format!("{tag}-bystander"));
    let on_a = authority(a.clone());
    let b_reads = CountingSecrets::new(b.clone());
    let on_b = authority(b_reads.clone());
    let feed_b = Recorder::subscribe(&*b);

    let old = on_a.token_for(&user).await.unwrap();
    let other = on_a.token_for(&bystander).await.unwrap();
    // Making a user's first secret is announced too: let B hear both
    // before it caches anything, so that what follows is steady state.
    eventually("B to hear of the new secrets", || async {
        let seen = feed_b.seen();
        seen.contains(&KeyChange::UserSecret(user.clone()))
            && seen.contains(&KeyChange::UserSecret(bystander.clone()))
    })
    .await;
    let heard = feed_b.seen().len();
    assert_eq!(on_b.verify(&old).await.unwrap().effective_user(), user);
    on_b.verify(&other).await.unwrap();
    assert!(
        b_reads.gets() >= 2,
        "the first verification reads each user"
    );
    // B's verifier hears the creations on its own listener, possibly after
    // the recorder did, and then drops what it cached: wait until one whole
    // round of verifications reads nothing.
    eventually("B's cache to settle", || async {
        let before = b_reads.gets();
        on_b.verify(&old).await.unwrap();
        on_b.verify(&other).await.unwrap();
        b_reads.gets() == before
    })
    .await;
    let reads = b_reads.gets();
    // The hot path: no read per request after the first.
    for _ in 0..10 {
        on_b.verify(&old).await.unwrap();
        on_b.verify(&other).await.unwrap();
    }
    assert_eq!(b_reads.gets(), reads);

    let new = on_a.regenerate(&user).await.unwrap();
    eventually("the regeneration to reach instance B", || async {
        on_b.verify(&old).await.is_err()
    })
    .await;
    assert_eq!(
        on_b.verify(&old).await.unwrap_err().reason(),
        RejectReason::WrongSecret
    );
    assert_eq!(on_b.verify(&new).await.unwrap().effective_user(), user);
    assert!(
        feed_b.seen()[heard..].contains(&KeyChange::UserSecret(user.clone())),
        "B heard which user changed: {:?}",
        feed_b.seen()
    );
    assert!(
        !feed_b.seen().contains(&KeyChange::All),
        "a regeneration drops one user's tokens, not every cache: {:?}",
        feed_b.seen()
    );
    // The bystander's token is still served from B's cache.
    let before = b_reads.gets();
    on_b.verify(&other).await.unwrap();
    assert_eq!(b_reads.gets(), before);
    assert_eq!(
        a.get_secret(&user).await.unwrap().unwrap().generation,
        2,
        "regeneration bumps the generation"
    );
}

/// Concurrent replacements of one user's secret, from two instances: each
/// gets its own generation, counted by the database in the write.
async fn concurrent_replacements_get_distinct_generations<S>(a: Arc<S>, b: Arc<S>, user: &str)
where
    S: UserSecretStore,
{
    let first = a.replace_secret(user, &[0; 72]).await.unwrap();
    let writes = (0..12u8).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let user = user.to_owned();
        tokio::spawn(async move { store.replace_secret(&user, &[i; 72]).await.unwrap() })
    });
    let mut generations: Vec<i64> = futures_util::future::join_all(writes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    generations.sort_unstable();
    assert_eq!(generations, (first + 1..=first + 12).collect::<Vec<_>>());
    let stored = a.get_secret(user).await.unwrap().unwrap().generation;
    assert_eq!(stored, first + 12);
    // A first secret is generation 1 whichever way it is made.
    assert!(a
        .insert_secret_if_absent(&format!("{user}-new"), &[1; 72])
        .await
        .unwrap());
    assert!(!b
        .insert_secret_if_absent(&format!("{user}-new"), &[2; 72])
        .await
        .unwrap());
    let made = b.get_secret(&format!("{user}-new")).await.unwrap().unwrap();
    assert_eq!((made.generation, made.sealed), (1, vec![1; 72]));
}

/// The stored value opens only with the master key and for its own user,
/// and holds nonce, 32 bytes of ciphertext and the tag: never the secret.
fn assert_sealed(sealed: &[u8], user: &str) {
    assert_eq!(sealed.len(), 24 + 32 + 16);
    assert!(MasterKey::from_bytes(&MASTER).open(user, sealed).is_ok());
    assert!(MasterKey::from_bytes(&MASTER)
        .open("someone-else", sealed)
        .is_err());
    assert!(MasterKey::from_bytes(&[1; 32]).open(user, sealed).is_err());
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use sqlx::Row;

    use super::*;

    #[tokio::test]
    async fn secrets_are_sealed_at_rest_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let store = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
        let token = authority(store.clone()).token_for("alice").await.unwrap();
        let row =
            sqlx::query("SELECT sealed, generation FROM user_secrets WHERE user_id = 'alice'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_sealed(&row.get::<Vec<u8>, _>("sealed"), "alice");
        assert_eq!(row.get::<i64, _>("generation"), 1);
        drop(store);

        let reopened = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
        let ctx = authority(reopened.clone()).verify(&token).await.unwrap();
        assert_eq!(ctx.effective_user(), "alice");
        assert_eq!(ctx.credential(), CredentialKind::Jwt);
        // Another master key cannot open the secret: refused as unavailable, never a pass.
        let stranger = JwtAuthority::new(reopened, MasterKey::from_bytes(&[1; 32]), "syncello");
        assert_eq!(
            stranger.verify(&token).await.unwrap_err().code(),
            ErrorCode::Unavailable
        );
    }

    #[tokio::test]
    async fn regeneration_reaches_another_process_on_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let a = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
        let b = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
        regeneration_reaches_the_other_instance(a, b, "sqlite").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_replacements_get_distinct_generations_on_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let a = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
        let b = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
        concurrent_replacements_get_distinct_generations(a, b, "sqlite").await;
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use sqlx::Row;
    use support::pg::TestSchema;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn regeneration_reaches_the_other_instance_and_secrets_are_sealed() {
        let Some(schema) =
            TestSchema::new("regeneration_reaches_the_other_instance_and_secrets_are_sealed").await
        else {
            return;
        };
        let a = Arc::new(schema.store().await);
        let b = Arc::new(schema.store().await);
        regeneration_reaches_the_other_instance(a.clone(), b.clone(), "pg").await;

        let row =
            sqlx::query("SELECT sealed, generation FROM user_secrets WHERE user_id = 'pg-user'")
                .fetch_one(a.pool())
                .await
                .unwrap();
        assert_sealed(&row.get::<Vec<u8>, _>("sealed"), "pg-user");
        assert_eq!(row.get::<i64, _>("generation"), 2);
        drop((a, b));
        schema.drop_schema().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_replacements_get_distinct_generations_on_one_database() {
        let Some(schema) =
            TestSchema::new("concurrent_replacements_get_distinct_generations").await
        else {
            return;
        };
        let a = Arc::new(schema.store().await);
        let b = Arc::new(schema.store().await);
        concurrent_replacements_get_distinct_generations(a.clone(), b.clone(), "pg").await;
        drop((a, b));
        schema.drop_schema().await;
    }
}
