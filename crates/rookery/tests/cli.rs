//! The `rookery` binary as an operator runs it: user administration, bulk
//! import, `serve` with a config file, SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn rookery(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rookery"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn write_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("rookery.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndomain = 'example.test'\ndata_dir = '{}'\n\n[c2s]\nlisten = ['127.0.0.1:0']\ndirect_tls_listen = ['127.0.0.1:0']\n\n[s2s]\nlisten = ['127.0.0.1:0']\n\n[http]\nlisten = ['127.0.0.1:0']\n\n[web]\ntls_listen = ['127.0.0.1:0']\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn user_commands() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let out = rookery(
        &cfg,
        &["user", "add", "alice@example.test", "--password", "pw1"],
    );
    assert!(out.status.success(), "{out:?}");
    let out = rookery(&cfg, &["user", "add", "Bob", "--password", "pw2"]);
    assert!(out.status.success(), "{out:?}");
    let out = rookery(&cfg, &["user", "add", "alice", "--password", "again"]);
    assert!(!out.status.success(), "duplicate must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = rookery(
        &cfg,
        &["user", "add", "carol@elsewhere.test", "--password", "x"],
    );
    assert!(!out.status.success(), "foreign domain must fail");
    let out = rookery(&cfg, &["user", "passwd", "alice", "--password", "pw3"]);
    assert!(out.status.success(), "{out:?}");
    let out = rookery(&cfg, &["user", "passwd", "nobody", "--password", "pw3"]);
    assert!(!out.status.success());
    let out = rookery(&cfg, &["user", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "alice@example.test\nbob@example.test\n"
    );
    let out = rookery(&cfg, &["user", "del", "bob@example.test"]);
    assert!(out.status.success());
    let out = rookery(&cfg, &["user", "list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alice@example.test\n");
    // Passwords are never stored: the store holds no trace of them.
    let db = std::fs::read(dir.path().join("data/rookery.db")).unwrap();
    for pw in ["pw1", "pw2", "pw3"] {
        assert!(
            !db.windows(pw.len()).any(|w| w == pw.as_bytes()),
            "{pw} found in the store"
        );
    }
}

#[test]
fn import_ten_thousand_users() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let list = dir.path().join("users.txt");
    let mut f = std::fs::File::create(&list).unwrap();
    writeln!(f, "# load-test accounts").unwrap();
    for i in 0..10_000 {
        writeln!(f, "user{i}@example.test pass{}", i % 4).unwrap();
    }
    drop(f);
    let out = rookery(&cfg, &["user", "import", list.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("imported 10000 accounts"), "{stdout}");
    println!("{stdout}");
    let out = rookery(&cfg, &["user", "list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 10_000);
    // A bad line is reported with its number and nothing is imported.
    std::fs::write(&list, "ok@example.test pw\nbroken-line\n").unwrap();
    let out = rookery(&cfg, &["user", "import", list.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
}

#[test]
fn serve_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the log on a thread so that a silent server fails the test
    // instead of hanging it.
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut c2s = None;
    let mut http = None;
    while c2s.is_none() || http.is_none() {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start");
        let addr = line
            .split("addr=")
            .nth(1)
            .map(|r| r.split_whitespace().next().unwrap().to_owned());
        if line.contains("role=\"c2s\"") && line.contains("starttls") {
            c2s = addr;
        } else if line.contains("role=\"http\"") {
            http = addr;
        }
    }
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let mut s = TcpStream::connect(c2s.unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"<stream:stream to='example.test' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>").unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 1024];
    while !got.contains("</stream:features>") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("from='example.test'"), "{got}");
    assert!(got.contains("<required/>"), "{got}");
    let mut h = TcpStream::connect(http.unwrap()).unwrap();
    h.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    h.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // The self-signed certificate was generated and kept.
    assert!(dir.path().join("data/tls/example.test.crt").exists());

    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    // The open stream is closed with <system-shutdown/>.
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    assert!(rest.contains("system-shutdown"), "{rest}");
    let (done, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = exited
        .recv_timeout(Duration::from_secs(20))
        .expect("did not exit after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Runs the binary like [`rookery`], failing the test (and killing the
/// process) if it has not exited within `limit`.
fn rookery_within(
    config: &std::path::Path,
    args: &[&str],
    limit: Duration,
) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match exited.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("rookery {args:?} still running after {limit:?}");
        }
    }
}

#[test]
fn store_migrate_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let out = rookery(&cfg, &["store", "migrate"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("migrates itself"), "{stdout}");
    assert!(dir.path().join("data/rookery.db").exists());
    // Running it again is harmless, and the store is usable.
    let out = rookery(&cfg, &["store", "migrate"]);
    assert!(out.status.success(), "{out:?}");
    let out = rookery(&cfg, &["user", "add", "alice", "--password", "pw"]);
    assert!(out.status.success(), "{out:?}");
}

/// With `backend = "scylla"` and no node reachable, `store migrate`, the
/// user commands and `serve` fail quickly, naming the node, instead of
/// hanging. (No ScyllaDB runs where the tests run; the conformance suite of
/// crates/rookery-scylla covers a real one when given.)
#[test]
fn scylla_backend_unreachable_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "\n[store]\nbackend = 'scylla'\n\n[store.scylla]\nnodes = ['127.0.0.1:1']\nkeyspace = 'rookery_test'\nrequest_timeout_ms = 1000\n",
    );
    std::fs::write(&cfg, text).unwrap();
    for args in [
        &["store", "migrate"][..],
        &["user", "list"][..],
        &["serve"][..],
    ] {
        let started = std::time::Instant::now();
        let out = rookery_within(&cfg, args, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert!(stderr.contains("ScyllaDB"), "{args:?}: {stderr}");
        assert!(stderr.contains("127.0.0.1:1"), "{args:?}: {stderr}");
    }
    // Nothing fell back to the embedded store.
    assert!(!dir.path().join("data/rookery.db").exists());
}

/// Cluster mode without a reachable Redis: `serve --role …` stops at once
/// with a message naming the Redis URL, instead of running without a
/// cluster or hanging.
#[test]
fn cluster_roles_without_redis_fail_fast() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[cluster]\nnode = 'n1'\ngrpc_listen = '127.0.0.1:0'\n[cluster.redis]\nurls = ['redis://127.0.0.1:1']\ntimeout_ms = 500\n",
    );
    std::fs::write(&config, text).unwrap();
    for role in ["cm", "session", "s2s", "all", "cm,session"] {
        let out = rookery_within(&config, &["serve", "--role", role], Duration::from_secs(15));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role}: {stderr}");
        assert!(
            stderr.contains("joining the cluster through Redis at redis://127.0.0.1:1"),
            "{role}: {stderr}"
        );
    }
    // An unknown role is a usage error.
    let out = rookery_within(
        &config,
        &["serve", "--role", "nonsense"],
        Duration::from_secs(15),
    );
    assert_eq!(out.status.code(), Some(2));
}
