//! Helpers of auth-core's test binaries; what other crates' tests use too
//! is in `keygate-test-support`, re-exported here.
#![allow(dead_code)]

#[allow(unused_imports)] // Each test binary uses part of it.
pub(crate) use keygate_test_support::{
    eventually,
    fixtures::*,
    stores::{Recorder, TestStore},
};

#[cfg(feature = "postgres")]
pub(crate) mod pg {
    use std::{str::FromStr, time::Duration};

    use auth_core::store::PostgresKeyStore;
    use rand::RngCore;
    use sqlx::{
        postgres::{PgConnectOptions, PgPool, PgPoolOptions},
        Connection, PgConnection,
    };

    pub(crate) use keygate_test_support::services::database_url;

    /// A schema of its own for one test, so tests run in parallel.
    pub(crate) struct TestSchema {
        pub url: String,
        pub name: String,
    }

    impl TestSchema {
        /// `None` (test skipped, or failed under CI) without DATABASE_URL; panics if PostgreSQL is unreachable.
        pub(crate) async fn new(test: &str) -> Option<Self> {
            let url = database_url(test)?;
            let name = format!("kgt_{:016x}", rand::rngs::OsRng.next_u64());
            let mut conn = PgConnection::connect(&url).await.unwrap_or_else(|e| {
                panic!("DATABASE_URL is set but PostgreSQL is unreachable: {e}")
            });
            sqlx::query(&format!("CREATE SCHEMA \"{name}\""))
                .execute(&mut conn)
                .await
                .unwrap();
            Some(Self { url, name })
        }

        pub(crate) fn options(&self) -> PgConnectOptions {
            PgConnectOptions::from_str(&self.url)
                .unwrap()
                .options([("search_path", &self.name)])
        }

        pub(crate) async fn store(&self) -> PostgresKeyStore {
            PostgresKeyStore::connect_with_schema(&self.url, &self.name)
                .await
                .unwrap()
        }

        /// A pool on this schema, tagged so the test can find its connections.
        pub(crate) fn pool(&self, options: PgConnectOptions, application_name: &str) -> PgPool {
            PgPoolOptions::new()
                .max_connections(5)
                .acquire_timeout(Duration::from_millis(500))
                .connect_lazy_with(
                    options
                        .options([("search_path", &self.name)])
                        .application_name(application_name),
                )
        }

        pub(crate) async fn connection(&self) -> PgConnection {
            PgConnection::connect_with(&self.options()).await.unwrap()
        }

        pub(crate) async fn drop_schema(self) {
            let mut conn = PgConnection::connect(&self.url).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", self.name))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}
