//! Test support (feature `test-util`): a real `redis-server` on a free
//! loopback port in a temporary directory, killed on drop, and a
//! three-master Redis Cluster. Readiness is read from the server's own log
//! ("Ready to accept connections", "Cluster state changed: ok"), not polled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a server may take to say it is ready.
const READY: Duration = Duration::from_secs(15);

/// A free port `p` (and, for cluster nodes, `p + 10000` for the cluster bus).
fn free_port(with_bus: bool) -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !with_bus || (p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok()) {
            return p;
        }
    }
}

/// One `redis-server` process without persistence.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    log: Option<Receiver<String>>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free port; panics if `redis-server` is missing.
    pub fn start() -> RedisServer {
        Self::start_with(&[], false)
    }

    fn start_with(extra: &[&str], with_bus: bool) -> RedisServer {
        let mut s = RedisServer {
            child: None,
            log: None,
            port: 0,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        // A port taken between the probe and the bind makes the server exit
        // at once; then another port is tried.
        for _ in 0..5 {
            s.port = free_port(with_bus);
            if s.spawn() {
                return s;
            }
        }
        panic!("could not start redis-server");
    }

    /// Spawns the server on `self.port`; true once it said it is ready.
    fn spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--logfile", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        self.log = Some(rx);
        if self.wait_log("Ready to accept connections", READY) {
            true
        } else {
            self.kill();
            false
        }
    }

    /// Waits until the server logs a line containing `what`; false if it
    /// exited or `within` passed first.
    pub fn wait_log(&self, what: &str, within: Duration) -> bool {
        let Some(log) = &self.log else { return false };
        let until = Instant::now() + within;
        loop {
            match log.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains(what) => return true,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL: no save, no goodbye).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.log = None;
    }

    /// Starts the server again on the same port, with an empty dataset.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "could not restart redis-server on {}",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters, no replicas.
#[derive(Debug)]
pub struct RedisCluster {
    /// Its nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes and joins them with `redis-cli --cluster create`;
    /// returns once every node logged that the cluster state is ok.
    pub fn start() -> RedisCluster {
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_with(&extra, true))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            assert!(
                n.wait_log("Cluster state changed: ok", READY),
                "node {} never reached cluster state ok",
                n.port
            );
        }
        RedisCluster { nodes }
    }
}
