//! A local cluster of real processes for the cluster tests: a Redis server
//! and `rookery serve --role …` nodes on loopback, sharing one data
//! directory (as `deploy/local-cluster.sh` runs them).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use rookery_cluster::testing::RedisServer;
use tokio::sync::watch;

use crate::WAIT;

/// A free loopback port below the kernel's ephemeral range (32768 and up
/// on Linux), so that no outgoing connection takes it as its source port
/// while a node is down between a stop and a restart on the same ports,
/// and never the same one twice in a process. Each test process starts at
/// its own place in 20000..32000, so that parallel tests rarely meet; a
/// port found bound is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = || {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(7919) ^ t) % SPAN
    };
    let _ = NEXT.compare_exchange(u32::MAX, seed(), Ordering::AcqRel, Ordering::Acquire);
    loop {
        let port = (LOW + NEXT.fetch_add(1, Ordering::AcqRel) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A node's log as it is written: the lines so far, and a counter that
/// every new line (of any node of the cluster) bumps, so that a test waits
/// for what it expects instead of sleeping.
#[derive(Default)]
pub struct Log {
    lines: Mutex<Vec<String>>,
}

impl Log {
    /// Lines so far (a mark for [`Cluster::wait_log`]).
    pub fn mark(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// True if a line after `since` contains `what`.
    pub fn contains_since(&self, what: &str, since: usize) -> bool {
        self.lines
            .lock()
            .is_ok_and(|l| l.iter().skip(since).any(|x| x.contains(what)))
    }

    fn tail(&self, n: usize) -> String {
        let l = self.lines.lock().unwrap();
        l[l.len().saturating_sub(n)..].join("\n")
    }
}

/// One `rookery` process.
pub struct Node {
    pub name: String,
    pub role: &'static str,
    child: Option<Child>,
    pub c2s: Option<u16>,
    /// The HTTPS port of the web transports (cms).
    pub web: Option<u16>,
    /// The server-to-server port (s2s nodes).
    pub s2s: Option<u16>,
    pub grpc: u16,
    pub http: u16,
    pub config: PathBuf,
    log_file: PathBuf,
    pub log: Arc<Log>,
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
    pub redis: RedisServer,
    pub nodes: Vec<Node>,
    /// Bumped at every log line of every node.
    lines: watch::Sender<u64>,
    bin: PathBuf,
    /// Extra TOML appended to every node's `[cluster]` section.
    extra: String,
    /// More TOML at the end of every node's file (other sections).
    tail: String,
    /// Environment variables of every node's process.
    env: Vec<(String, String)>,
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
        Cluster::start_with(bin, sessions, cms, extra, redis_extra, "", &[])
    }

    /// [`Cluster::start`], with `tail` (TOML sections, e.g. `[telemetry]`)
    /// at the end of every node's configuration file and `env` in every
    /// node's environment.
    pub fn start_with(
        bin: &Path,
        sessions: usize,
        cms: usize,
        extra: &str,
        redis_extra: &str,
        tail: &str,
        env: &[(&str, &str)],
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start();
        let mut c = Cluster {
            dir,
            redis,
            nodes: Vec::new(),
            lines: watch::Sender::new(0),
            bin: bin.to_owned(),
            extra: format!("{extra}\n[cluster.redis]\n{redis_extra}\n"),
            tail: tail.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
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
        let has = |r: &str| role.split(',').any(|x| x == r || x == "all");
        let c2s = has("cm").then(free_port);
        let web = has("cm").then(free_port);
        let web_listen = web
            .map(|p| format!("[\"127.0.0.1:{p}\"]"))
            .unwrap_or_else(|| "[]".into());
        let (grpc, http) = (free_port(), free_port());
        // s2s nodes: their own 5269 and the cluster's one dialback secret.
        let s2s = has("s2s").then(free_port);
        let s2s_section = match s2s {
            Some(p) => {
                let secret = self.dir.path().join("dialback-secret");
                if !secret.exists() {
                    std::fs::write(&secret, "a cluster-wide dialback secret\n").unwrap();
                }
                format!(
                    "[s2s]\nlisten = [\"127.0.0.1:{p}\"]\ndialback_secret_file = \"{}\"\n",
                    secret.display()
                )
            }
            None => "[s2s]\nenabled = false\n".to_owned(),
        };
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
                 [http]\nlisten = [\"127.0.0.1:{http}\"]\n[web]\ntls_listen = {web_listen}\n{s2s_section}[log]\nlevel = \"info,rookery_rpc=debug\"\n\
                 [cluster]\nnode = \"{name}\"\ngrpc_listen = \"127.0.0.1:{grpc}\"\n{extra}\n{}",
                data.display(),
                self.tail
            ),
        )
        .unwrap();
        let mut node = Node {
            name: name.to_owned(),
            role,
            child: None,
            c2s,
            web,
            s2s,
            grpc,
            http,
            config,
            log_file: self.dir.path().join(format!("{name}.log")),
            log: Arc::default(),
        };
        self.spawn(&mut node);
        self.nodes.push(node);
    }

    fn spawn(&self, node: &mut Node) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_file)
            .unwrap();
        let mut child = Command::new(&self.bin)
            .arg("--config")
            .arg(&node.config)
            .args(["serve", "--role", node.role])
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A thread copies the log to the file and to `node.log`, and says
        // when the HTTP listener (started last) is up.
        let stderr = child.stderr.take().unwrap();
        let (log, lines) = (node.log.clone(), self.lines.clone());
        let (ready, up) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if line.contains("listening role=\"http\"") {
                    let _ = ready.send(());
                }
                if let Ok(mut l) = log.lines.lock() {
                    l.push(line);
                }
                lines.send_modify(|n| *n += 1);
            }
        });
        node.child = Some(child);
        assert!(
            up.recv_timeout(WAIT).is_ok(),
            "{} did not start:\n{}",
            node.name,
            node.log.tail(80)
        );
    }

    /// Waits until node `name` logs a line containing `what` after `mark`
    /// (from [`Log::mark`]); fails the test after [`WAIT`].
    pub async fn wait_log(&self, name: &str, what: &str, mark: usize) {
        let log = self.node(name).log.clone();
        let mut lines = self.lines.subscribe();
        let found = tokio::time::timeout(WAIT, async {
            loop {
                lines.borrow_and_update();
                if log.contains_since(what, mark) {
                    return;
                }
                if lines.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(
            found.is_ok() && log.contains_since(what, mark),
            "{name} never logged {what:?}:\n{}",
            log.tail(20)
        );
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    /// The STARTTLS address of cm `name`.
    pub fn cm_addr(&self, name: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.node(name).c2s.unwrap()))
    }

    /// The HTTPS address of a cm's web transports (WebSocket, BOSH).
    pub fn web_addr(&self, name: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.node(name).web.unwrap()))
    }

    /// Kills node `name` with SIGKILL.
    pub fn kill(&mut self, name: &str) {
        let n = self.nodes.iter_mut().find(|n| n.name == name).unwrap();
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM to node `name` and waits for it to exit (failing the
    /// test after `within`); returns its exit status.
    pub async fn terminate(&mut self, name: &str, within: Duration) -> std::process::ExitStatus {
        self.sigterm(name);
        self.wait_exit(name, within).await
    }

    /// Sends SIGTERM to node `name`.
    pub fn sigterm(&self, name: &str) {
        let n = self.node(name);
        let pid = n.child.as_ref().expect("node not running").id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for node `name` to exit (failing the test after `within`,
    /// when it is killed); returns its exit status.
    pub async fn wait_exit(&mut self, name: &str, within: Duration) -> std::process::ExitStatus {
        let n = self.nodes.iter_mut().find(|n| n.name == name).unwrap();
        let mut child = n.child.take().expect("node not running");
        let pid = child.id().to_string();
        let waited =
            tokio::time::timeout(within, tokio::task::spawn_blocking(move || child.wait())).await;
        match waited {
            Ok(status) => status.unwrap().unwrap(),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("{name} did not exit within {within:?}:\n{}", n.log.tail(30));
            }
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
    /// and each owns some: they all see the same membership. Checked again
    /// whenever a node logs something (shard moves are logged).
    pub async fn wait_settled(&self) {
        let mut lines = self.lines.subscribe();
        let settled = tokio::time::timeout(WAIT, async {
            loop {
                lines.borrow_and_update();
                if self.settled().await {
                    return;
                }
                // Session nodes log every shard move once their metrics
                // show it.
                if lines.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(settled.is_ok(), "shards not settled\n{}", self.logs());
    }

    async fn settled(&self) -> bool {
        let mut owned = Vec::new();
        for n in self
            .nodes
            .iter()
            .filter(|n| n.role == "session" && n.is_running())
        {
            owned.push(metric(n.http, "rookery_shards_owned").await.unwrap_or(0.0));
        }
        !owned.is_empty()
            && owned.iter().all(|o| *o > 0.0)
            && owned.iter().sum::<f64>() == f64::from(rookery_cluster::DEFAULT_SHARDS)
    }

    /// The last lines of every node's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("--- {} ---\n{}\n", n.name, n.log.tail(40)));
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

/// The status line of `GET path` on a node's HTTP port, if it answers.
pub async fn http_status(http: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines().next().map(str::to_owned)
}

/// The session node, of `nodes`, that owns `user@localhost` (rendezvous
/// hashing over the default shard count, as the cluster computes it).
pub fn owner(user: &str, nodes: &[&str]) -> String {
    owner_of(&format!("{user}@localhost"), nodes)
}

/// The session node, of `nodes`, that owns the shard of the bare JID
/// `bare` (an account, or a MUC room).
pub fn owner_of(bare: &str, nodes: &[&str]) -> String {
    use rookery_cluster::{Member, Role, rendezvous, shard_of};
    let members: Vec<Member> = nodes
        .iter()
        .map(|n| Member {
            node: (*n).to_owned(),
            epoch: 1,
            roles: vec![Role::Session],
            grpc: String::new(),
        })
        .collect();
    let shard = shard_of(bare, rookery_cluster::DEFAULT_SHARDS);
    rendezvous(shard, &members).unwrap().node.clone()
}

/// A room `{prefix}{n}@conference.localhost` whose shard lives on `node`
/// (of session1 and session2); returns its localpart.
pub fn room_on(prefix: &str, node: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|r| {
            owner_of(
                &format!("{r}@conference.localhost"),
                &["session1", "session2"],
            ) == node
        })
        .unwrap()
}

/// The s2s node (of `nodes`) that keeps the streams to the remote `domain`,
/// as `View::s2s_node_for` chooses it.
pub fn s2s_node_for(domain: &str, nodes: &[&str]) -> String {
    use rookery_cluster::{Member, Role, rendezvous, shard_of};
    let members: Vec<Member> = nodes
        .iter()
        .map(|n| Member {
            node: (*n).to_owned(),
            epoch: 1,
            roles: vec![Role::S2s],
            grpc: String::new(),
        })
        .collect();
    let shard = shard_of(domain, rookery_cluster::DEFAULT_SHARDS);
    rendezvous(shard, &members).unwrap().node.clone()
}

/// A user `{prefix}{n}` whose account lives on `node` (of session1 and
/// session2).
pub fn user_on(prefix: &str, node: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|u| owner(u, &["session1", "session2"]) == node)
        .unwrap()
}
