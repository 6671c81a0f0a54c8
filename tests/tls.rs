//! TLS for real: a second PostgreSQL started by the test with `ssl=on` and a
//! certificate from a CA the test makes, and `redis-server --tls-port`.
//! The right CA is accepted (URL `sslrootcert`, `PostgresOptions::ca_file`,
//! `RedisStore::open_with_ca`); a wrong CA is refused. Skipped, with the
//! reason printed, when the binaries are missing (failed under `CI=true`).
#![cfg(all(feature = "postgres", feature = "redis", feature = "tls"))]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use auth_core::{
    store::PostgresKeyStore, store::PostgresOptions, KeyIssuer, NewKey, Principal, ScopeSet,
    SecretHasher, TokenPrefix,
};
use auth_ratelimit::{Bucket, Quota, RateLimitStore, RedisStore};
use keygate_test_support::services::skip;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.self_signed(&key).unwrap(), key)
}

fn pki() -> Pki {
    let (ca_cert, ca_key) = ca("keygate test CA");
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Another CA, which signed nothing the servers present.
fn wrong_ca_pem() -> String {
    ca("someone else's CA").0.pem()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Waits (bounded) until `port` accepts connections.
fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root
/// (initdb and postgres refuse to run as root).
fn pg_tool(tool: &str, args: &[&str]) -> Command {
    let path = format!("{PG_BIN}/{tool}");
    let root = is_root();
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(&path)
    };
    cmd.args(args);
    cmd
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL cluster in a temporary directory, stopped on drop.
struct TestPostgres {
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TestPostgres {
    fn start(pki: &Pki) -> Result<Self, String> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            return Err(format!("{PG_BIN}/initdb not installed"));
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres", dir.path().to_str().unwrap()])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err("cannot hand the data directory to the postgres user".into());
            }
        }
        let init = pg_tool(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-N",
            ],
        )
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
        if !init.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&init.stderr)
            ));
        }
        write(&data.join("server.crt"), &pki.cert_pem, 0o644);
        write(&data.join("server.key"), &pki.key_pem, 0o600);
        if is_root() {
            for f in ["server.crt", "server.key"] {
                Command::new("chown")
                    .args(["postgres:postgres", data.join(f).to_str().unwrap()])
                    .status()
                    .unwrap();
            }
        }
        let port = free_port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
             -c fsync=off -c shared_buffers=16MB",
            dir.path().display()
        );
        let log = dir.path().join("postgres.log");
        let started = pg_tool(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        )
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("pg_ctl: {e}"))?;
        if !started.status.success() {
            return Err(format!(
                "pg_ctl start failed: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        wait_for_port(port, "the TLS PostgreSQL");
        Ok(Self {
            data,
            port,
            _dir: dir,
        })
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = pg_tool(
            "pg_ctl",
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_with_the_right_ca_only() {
    let pki = pki();
    let pg = match TestPostgres::start(&pki) {
        Ok(pg) => pg,
        Err(why) => return skip("postgres_over_tls_with_the_right_ca_only", &why),
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    let wrong_file = dir.path().join("wrong-ca.pem");
    write(&ca_file, &pki.ca_pem, 0o644);
    write(&wrong_file, &wrong_ca_pem(), 0o644);
    let base = format!("postgres://postgres@localhost:{}/postgres", pg.port);

    // sslmode and sslrootcert in the URL are honoured.
    let url = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    );
    let store = std::sync::Arc::new(PostgresKeyStore::connect(&url).await.expect("TLS connect"));
    let in_tls: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(in_tls, "the session is encrypted");
    let issuer = KeyIssuer::new(
        store.clone(),
        SecretHasher::for_tests(),
        TokenPrefix::new("st_").unwrap(),
    );
    issuer
        .issue(NewKey::new(
            Principal::user("alice"),
            "tls",
            ScopeSet::empty(),
        ))
        .await
        .expect("a key stored over TLS");

    // The CA-file option: verify-full unless the URL says otherwise.
    let opts = PostgresOptions::new()
        .ca_file(&ca_file)
        .acquire_timeout(Duration::from_secs(2));
    let via_option = PostgresKeyStore::connect_with(&base, &opts)
        .await
        .expect("TLS connect with ca_file");
    assert_eq!(
        issuer.list("alice").await.unwrap().len(),
        via_option_list(&via_option).await
    );

    // A wrong CA is refused.
    let wrong = PostgresKeyStore::connect_with(
        &base,
        &PostgresOptions::new()
            .ca_file(&wrong_file)
            .acquire_timeout(Duration::from_secs(2)),
    )
    .await;
    assert!(
        wrong.is_err(),
        "a server certificate from another CA is refused"
    );
    let wrong_url = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        wrong_file.display()
    );
    let wrong = PostgresKeyStore::connect_with(
        &wrong_url,
        &PostgresOptions::new().acquire_timeout(Duration::from_secs(2)),
    )
    .await;
    assert!(wrong.is_err());
}

async fn via_option_list(store: &PostgresKeyStore) -> usize {
    use auth_core::KeyStore;
    store.list_by_owner("alice").await.unwrap().len()
}

/// `redis-server` with only a TLS port, killed on drop.
struct TestRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TestRedis {
    fn start(pki: &Pki) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = (
            dir.path().join("redis.crt"),
            dir.path().join("redis.key"),
            dir.path().join("ca.pem"),
        );
        write(&cert, &pki.cert_pem, 0o644);
        write(&key, &pki.key_pem, 0o600);
        write(&ca, &pki.ca_pem, 0o644);
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-key-file",
                key.to_str().unwrap(),
                "--tls-ca-cert-file",
                ca.to_str().unwrap(),
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.path().to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        let mut redis = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(format!(
                    "redis-server exited ({status}): no TLS support built in?"
                ));
            }
            if Instant::now() > deadline {
                return Err("redis-server did not open its TLS port".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_the_right_ca_only() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip(
            "redis_over_tls_with_the_right_ca_only",
            "redis-server not installed",
        );
    }
    let pki = pki();
    let redis = match TestRedis::start(&pki) {
        Ok(r) => r,
        Err(why) => return skip("redis_over_tls_with_the_right_ca_only", &why),
    };
    let url = format!("rediss://localhost:{}/", redis.port);
    let quota = Quota::per_minute(5);
    let check = |store: RedisStore| async move {
        store
            .check_all(&[Bucket::new("tls", "k", quota, 1)])
            .await
            .map(|d| d[0])
    };

    let store = RedisStore::open_with_ca(&url, pki.ca_pem.as_bytes())
        .unwrap()
        .with_prefix("keygate_tls_test")
        .with_timeout(Duration::from_secs(2));
    let d = check(store).await.expect("a check over TLS");
    assert!(d.is_allowed());

    let wrong = RedisStore::open_with_ca(&url, wrong_ca_pem().as_bytes())
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    assert!(
        check(wrong).await.is_err(),
        "a server certificate from another CA is refused"
    );
    // Plain `rediss://` trusts only public CAs (webpki roots): refused too.
    let public_only = RedisStore::open(&url)
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    assert!(check(public_only).await.is_err());
}
