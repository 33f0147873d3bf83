//! A local cluster of real processes for the cluster tests: a Redis server
//! and `rookery serve --role …` nodes on loopback, sharing one data
//! directory (as `deploy/local-cluster.sh` runs them).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::WAIT;

/// A free loopback port (bound and released; good enough on loopback).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Redis server of the test's own, without persistence.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts `redis-server` on a free port; fails the test if it is missing.
    pub fn start(dir: &Path) -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: dir.to_owned(),
        };
        r.restart();
        r
    }

    /// Starts it again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install -y redis-server)");
        self.child = Some(child);
        wait_for_port(self.port);
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < WAIT, "nothing listening on {port}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One `rookery` process.
pub struct Node {
    pub name: String,
    pub role: &'static str,
    child: Option<Child>,
    pub c2s: Option<u16>,
    pub grpc: u16,
    pub http: u16,
    pub config: PathBuf,
    log: PathBuf,
}

impl Node {
    /// True while its process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A cluster: Redis, session nodes and cms.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub redis: Redis,
    pub nodes: Vec<Node>,
    bin: PathBuf,
    /// Extra TOML appended to every node's `[cluster]` section.
    extra: String,
}

impl Cluster {
    /// Starts Redis, `sessions` session nodes (`session1`, …) and `cms`
    /// connection managers (`cm1`, …). `extra` is appended to the
    /// `[cluster]` section of every node (e.g. `retry_for_ms = 1000`), and
    /// `redis_extra` to `[cluster.redis]`.
    pub fn start(
        bin: &Path,
        sessions: usize,
        cms: usize,
        extra: &str,
        redis_extra: &str,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let redis = Redis::start(dir.path());
        let mut c = Cluster {
            dir,
            redis,
            nodes: Vec::new(),
            bin: bin.to_owned(),
            extra: format!("{extra}\n[cluster.redis]\n{redis_extra}\n"),
        };
        for i in 1..=sessions {
            c.add_node(&format!("session{i}"), "session");
        }
        for i in 1..=cms {
            c.add_node(&format!("cm{i}"), "cm");
        }
        c
    }

    /// Starts one more node (e.g. a session node joining under load).
    pub fn add_node(&mut self, name: &str, role: &'static str) {
        let c2s = (role != "session").then(free_port);
        let (grpc, http) = (free_port(), free_port());
        let data = self.dir.path().join("data");
        let listen = c2s
            .map(|p| format!("[\"127.0.0.1:{p}\"]"))
            .unwrap_or_else(|| "[]".into());
        let config = self.dir.path().join(format!("{name}.toml"));
        let redis_url = self.redis.url();
        let extra = self.extra.replace(
            "[cluster.redis]\n",
            &format!(
                "[cluster.redis]\nurls = [\"{redis_url}\"]\nheartbeat_ms = 200\nttl_ms = 1000\n"
            ),
        );
        std::fs::write(
            &config,
            format!(
                "[server]\ndata_dir = \"{}\"\n[c2s]\nlisten = {listen}\ndirect_tls_listen = []\n\
                 auth_failure_delay_ms = 10\nauth_failure_max_delay_ms = 50\n\
                 [http]\nlisten = [\"127.0.0.1:{http}\"]\n[log]\nlevel = \"info,rookery_rpc=debug\"\n\
                 [cluster]\nnode = \"{name}\"\ngrpc_listen = \"127.0.0.1:{grpc}\"\n{extra}",
                data.display()
            ),
        )
        .unwrap();
        let mut node = Node {
            name: name.to_owned(),
            role,
            child: None,
            c2s,
            grpc,
            http,
            config,
            log: self.dir.path().join(format!("{name}.log")),
        };
        self.spawn(&mut node);
        self.nodes.push(node);
    }

    fn spawn(&self, node: &mut Node) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&node.config)
            .args(["serve", "--role", node.role])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
        // Its HTTP listener comes up last: the node is running.
        wait_for_port(node.http);
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    /// The STARTTLS address of cm `name`.
    pub fn cm_addr(&self, name: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.node(name).c2s.unwrap()))
    }

    /// Kills node `name` with SIGKILL.
    pub fn kill(&mut self, name: &str) {
        let n = self.nodes.iter_mut().find(|n| n.name == name).unwrap();
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `name` again (after [`Cluster::kill`]).
    pub fn restart(&mut self, name: &str) {
        let i = self.nodes.iter().position(|n| n.name == name).unwrap();
        let mut n = self.nodes.remove(i);
        self.spawn(&mut n);
        self.nodes.insert(i, n);
    }

    /// Creates an account in the shared store.
    pub async fn add_user(&self, user: &str, password: &str) {
        let mut config = rookery::config::Config::default();
        config.server.data_dir = self.dir.path().join("data");
        let store = rookery::server::open_store(&config).unwrap();
        rookery::admin::add(&config, &store, user, password)
            .await
            .unwrap();
    }

    /// A metric's value summed over the running session nodes.
    pub async fn session_metric(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for n in self
            .nodes
            .iter()
            .filter(|n| n.role == "session" && n.is_running())
        {
            sum += metric(n.http, name).await.unwrap_or(0.0);
        }
        sum
    }

    /// The sum of every sample of the running session nodes whose line
    /// starts with `prefix` (a name with the start of its labels).
    pub async fn session_metric_sum(&self, prefix: &str) -> f64 {
        let mut sum = 0.0;
        for n in self
            .nodes
            .iter()
            .filter(|n| n.role == "session" && n.is_running())
        {
            sum += metric_sum(n.http, prefix).await;
        }
        sum
    }

    /// Waits until the running session nodes own every shard between them
    /// and each owns some: they all see the same membership.
    pub async fn wait_settled(&self) {
        let running = self
            .nodes
            .iter()
            .filter(|n| n.role == "session" && n.is_running())
            .count();
        let start = Instant::now();
        loop {
            let mut owned = Vec::new();
            for n in self
                .nodes
                .iter()
                .filter(|n| n.role == "session" && n.is_running())
            {
                owned.push(metric(n.http, "rookery_shards_owned").await.unwrap_or(0.0));
            }
            if owned.len() == running
                && owned.iter().all(|o| *o > 0.0)
                && owned.iter().sum::<f64>() == f64::from(rookery_cluster::DEFAULT_SHARDS)
            {
                return;
            }
            assert!(start.elapsed() < WAIT, "shards not settled: {owned:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of every node's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!("--- {} ---\n{}\n", n.name, tail.join("\n")));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The sum of every sample on a node whose line starts with `prefix`.
pub async fn metric_sum(http: u16, prefix: &str) -> f64 {
    metrics_text(http)
        .await
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics_text(http: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", http)).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body
}

/// Reads one metric from a node's `/metrics`.
pub async fn metric(http: u16, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
