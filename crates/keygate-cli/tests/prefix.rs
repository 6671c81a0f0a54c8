//! `keys issue` uses the token prefix the service recorded in its store,
//! so the key it prints is one the service accepts; with no recorded
//! prefix it refuses to guess.

mod support;

use auth_core::{store::IssuingPrefix, KeyStore, Keys, SecretHasher, TokenPrefix};
use keygate_test_support::eventually;
use support::Database;

async fn recorded(store: &dyn KeyStore) -> Vec<String> {
    store
        .issuing_prefixes()
        .await
        .unwrap()
        .into_iter()
        .map(|p: IssuingPrefix| p.prefix)
        .collect()
}

async fn issues_with_the_services_prefix(d: &Database) {
    // No service has opened the store yet: no guess.
    let guess = d.run(&["keys", "issue", "--user", "alice", "--as", "ops"]);
    assert_eq!(guess.code, 2, "{}", guess.stderr);
    assert!(guess.stderr.contains("--prefix"), "{}", guess.stderr);
    assert!(guess.stdout.is_empty());

    // A service starts with its own prefix (not the old `sk_` default).
    let store = d.open().await;
    let service = Keys::builder(store.clone(), TokenPrefix::new("svc_live_").unwrap())
        .hasher(SecretHasher::default())
        .build();
    eventually("the service to record its prefix", || async {
        recorded(store.as_ref()).await == ["svc_live_"]
    })
    .await;

    let issued = d
        .run(&["keys", "issue", "--user", "alice", "--as", "ops"])
        .ok();
    let token = issued.stdout.trim_end();
    assert!(token.starts_with("svc_live_"), "{token}");
    let ctx = service
        .verifier
        .verify(token)
        .await
        .expect("the service accepts the key the command line issued");
    assert_eq!(ctx.effective_user(), "alice");

    // An explicit prefix the services do not issue is allowed, with a warning.
    let other = d
        .run(&[
            "keys", "issue", "--user", "bob", "--prefix", "sk_", "--as", "ops",
        ])
        .ok();
    assert!(other.stdout.starts_with("sk_"));
    assert!(
        other.stderr.contains("warning") && other.stderr.contains("svc_live_"),
        "{}",
        other.stderr
    );

    // Two services with two prefixes on one store: the operator chooses.
    store
        .record_issuing_prefix(
            &TokenPrefix::new("st_").unwrap(),
            time::OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    let both = d.run(&["keys", "issue", "--user", "carol", "--as", "ops"]);
    assert_eq!(both.code, 2, "{}", both.stderr);
    assert!(
        both.stderr.contains("svc_live_") && both.stderr.contains("st_"),
        "{}",
        both.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_with_the_prefix_a_service_recorded_in_sqlite() {
    let d = Database::sqlite();
    issues_with_the_services_prefix(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_with_the_prefix_a_service_recorded_in_postgres() {
    let Some(d) = Database::postgres("issues_with_the_prefix_a_service_recorded_in_postgres")
    else {
        return;
    };
    issues_with_the_services_prefix(&d).await;
    d.drop_schema().await;
}
