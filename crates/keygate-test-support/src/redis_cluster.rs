//! A local Redis Cluster for tests: three masters, no replicas, started
//! from `redis-server` and `redis-cli` on free ports in a temporary
//! directory, and stopped (processes killed, directory removed) on drop.
//!
//! Without the programs the test is skipped, or fails under `CI=true` (see
//! [`services`]).
//!
//! ```no_run
//! use keygate_test_support::redis_cluster::RedisCluster;
//!
//! let Some(cluster) = RedisCluster::start("my_test") else {
//!     return; // skipped, and said so
//! };
//! let url = cluster.url(); // redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
//! # let _ = url;
//! ```

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::services;

/// How long a node may take to answer, and the cluster to agree.
const DEADLINE: Duration = Duration::from_secs(20);

/// Three cluster-enabled `redis-server` processes joined into one cluster.
#[derive(Debug)]
pub struct RedisCluster {
    ports: [u16; 3],
    children: Vec<Child>,
    // Dropped after the processes are killed (`Drop` runs first).
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts one and waits until every node reports `cluster_state:ok`;
    /// `None` after [`services::skip`] without `redis-server` or
    /// `redis-cli`. Panics if the cluster does not form.
    #[track_caller]
    pub fn start(test: &str) -> Option<Self> {
        let [server, cli] = services::programs(
            test,
            ["redis-server", "redis-cli"],
            "apt-get install redis-server",
        )?;
        // A port found free may be taken before the server binds it: then
        // the server exits, and the cluster is started again elsewhere.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&server, &cli) {
                Ok(cluster) => return Some(cluster),
                Err(e) => last = e,
            }
        }
        panic!("{test}: no Redis Cluster: {last}");
    }

    fn try_start(server: &Path, cli: &Path) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("keygate-redis-cluster-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let ports = free_ports()?;
        let mut cluster = Self {
            ports,
            children: Vec::with_capacity(3),
            dir,
        };
        for port in ports {
            let p = port.to_string();
            let child = Command::new(server)
                .args(["--port", &p, "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{p}.conf")])
                .args(["--appendonly", "no", "--save", ""])
                .arg("--dir")
                .arg(cluster.dir.path())
                .arg("--logfile")
                .arg(cluster.dir.path().join(format!("{p}.log")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("redis-server: {e}"))?;
            cluster.children.push(child);
        }
        for port in ports {
            wait_for(
                &mut cluster.children,
                &format!("node {port} to answer"),
                || run_cli(cli, port, &["PING"]).is_some_and(|o| o.trim() == "PONG"),
            )?;
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&created.stdout)
            ));
        }
        for port in ports {
            let what = format!("node {port} to report cluster_state:ok");
            wait_for(&mut cluster.children, &what, || {
                run_cli(cli, port, &["CLUSTER", "INFO"]).is_some_and(|o| {
                    o.contains("cluster_state:ok") && o.contains("cluster_known_nodes:3")
                })
            })?;
        }
        Ok(cluster)
    }

    /// The nodes' ports.
    pub fn ports(&self) -> [u16; 3] {
        self.ports
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Each node's own URL, `redis://127.0.0.1:P`.
    pub fn node_urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `ready` until it holds; an error naming `what` after the deadline,
/// or as soon as one of `servers` has exited.
fn wait_for(servers: &mut [Child], what: &str, ready: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if ready() {
            return Ok(());
        }
        for server in servers.iter_mut() {
            if let Ok(Some(status)) = server.try_wait() {
                return Err(format!(
                    "a redis-server exited ({status}) waiting for {what}"
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `redis-cli -p port args...`: its output if it succeeded.
fn run_cli(cli: &Path, port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Three ports free now whose cluster bus ports (`+10000`) are free too.
fn free_ports() -> Result<[u16; 3], String> {
    let mut ports = Vec::with_capacity(3);
    let mut held = Vec::new();
    for _ in 0..200 {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        let Ok(bus_listener) = TcpListener::bind(("127.0.0.1", bus)) else {
            continue;
        };
        if ports.contains(&port) || ports.iter().any(|p| p + 10_000 == port) {
            continue;
        }
        ports.push(port);
        // Held until all three are chosen, so none is chosen twice.
        held.push((listener, bus_listener));
        if ports.len() == 3 {
            return Ok([ports[0], ports[1], ports[2]]);
        }
    }
    Err("no free ports".into())
}
