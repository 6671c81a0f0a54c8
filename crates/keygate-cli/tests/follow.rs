//! `audit --follow` prints every event once, even when two instances
//! commit their PostgreSQL batches out of id order: the batch holding the
//! lower ids commits last, after the follower has printed the higher ones.

mod support;

use std::{
    process::Stdio,
    str::FromStr,
    sync::{Arc, Mutex},
};

use keygate_test_support::eventually;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    Executor, PgPool, Postgres,
};
use support::Database;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Inserts a batch of two events with `path` in one statement, as the
/// audit writer does, and returns their ids.
async fn batch<'e>(db: impl Executor<'e, Database = Postgres>, path: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "INSERT INTO audit_events (at, outcome, method, path) \
         SELECT now(), 'success', 'GET', $1 FROM generate_series(1, 2) RETURNING id",
    )
    .bind(path)
    .fetch_all(db)
    .await
    .unwrap()
}

fn count(lines: &Mutex<Vec<String>>, path: &str) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"] == path)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_batches_committed_out_of_id_order() {
    let Some(d) = Database::postgres("follow_prints_batches_committed_out_of_id_order") else {
        return;
    };
    let schema = d.schema.clone().unwrap();
    let _store = d.open().await;
    let pool: PgPool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(
            PgConnectOptions::from_str(&d.db)
                .unwrap()
                .options([("search_path", schema.as_str())]),
        )
        .await
        .unwrap();
    batch(&pool, "/before").await;

    let mut cmd = support::command(&d.db);
    cmd.args(["--json", "audit", "--follow", "--schema", &schema])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    while let Some(line) = stderr.next_line().await.unwrap() {
        if line.contains("following new events") {
            break;
        }
    }
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let printed = lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            printed.lock().unwrap().push(line);
        }
    });
    eventually("the follower to print the events already there", || async {
        count(&lines, "/before") == 2
    })
    .await;

    // Instance A takes ids and holds its batch open; instance B takes the
    // next ids and commits first.
    let mut a = pool.begin().await.unwrap();
    let first = batch(&mut *a, "/first").await;
    let second = batch(&pool, "/second").await;
    assert!(
        first.iter().max() < second.iter().min(),
        "{first:?} {second:?}"
    );
    eventually(
        "the follower to print the batch committed first",
        || async { count(&lines, "/second") == 2 },
    )
    .await;
    // One more read after that one, so that a follower that forgot the
    // open batch would have moved past its ids by now.
    batch(&pool, "/between").await;
    eventually("the follower to print a batch committed next", || async {
        count(&lines, "/between") == 2
    })
    .await;
    a.commit().await.unwrap();
    eventually(
        "the follower to print the batch with the lower ids, committed last",
        || async { count(&lines, "/first") == 2 },
    )
    .await;

    // It goes on, and printed nothing twice.
    batch(&pool, "/third").await;
    eventually("the follower to print a later batch", || async {
        count(&lines, "/third") == 2
    })
    .await;
    for path in ["/before", "/first", "/second", "/between", "/third"] {
        assert_eq!(
            count(&lines, path),
            2,
            "{path}: {:?}",
            lines.lock().unwrap()
        );
    }

    child.kill().await.unwrap();
    pool.close().await;
    d.drop_schema().await;
}
