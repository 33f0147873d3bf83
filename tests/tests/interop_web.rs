//! Interop of the web transports with client libraries nobody here wrote:
//! @xmpp/client 0.14 over WebSocket (RFC 7395) and strophe.js 5 over BOSH
//! (XEP-0124/XEP-0206), both in Node, each chatting with a TCP client.
//!
//! The packages are pinned in `tests/interop/node/package.json` (and its
//! lock file); `tests/run-all.sh` runs `npm ci` there. Without `node` the
//! tests skip with a message; with node but without the packages they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rookery_e2e::{RawClient, TestServer};
use rookery_xml::ns;

/// The scripts have their own 20 s timeout; this is the backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(40);

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/node")
}

/// `node`, or `None` (the test then skips, saying so).
fn node() -> Option<&'static str> {
    let ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: node is not installed (Node >= 20.10 runs these interop tests)");
        return None;
    }
    assert!(
        dir().join("node_modules/@xmpp/client").exists()
            && dir().join("node_modules/strophe.js").exists(),
        "the npm packages are missing: run `npm ci` in {}",
        dir().display()
    );
    Some("node")
}

/// Starts a script; the test then plays the TCP side.
fn spawn(node: &str, script: &str, args: &[String], out: &Path) -> std::process::Child {
    let log = std::fs::File::create(out).unwrap();
    Command::new(node)
        .arg(dir().join(script))
        .args(args)
        .current_dir(dir())
        // The test server's certificate is self-signed.
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
        .env("NODE_NO_WARNINGS", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"))
}

/// Waits for the script without blocking the runtime; kills it if it
/// overstays.
async fn finish(child: std::process::Child, out: &Path) -> (Output, String) {
    let pid = child.id();
    let waiter = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    let output = match tokio::time::timeout(SCRIPT_TIMEOUT, waiter).await {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!(
                "still running after {SCRIPT_TIMEOUT:?}; killed\n{}",
                std::fs::read_to_string(out).unwrap_or_default()
            );
        }
    };
    let log = std::fs::read_to_string(out).unwrap_or_default();
    (output, log)
}

/// The TCP side (bob, online before the script starts): bob gets the script's message and answers its sender.
async fn chat(mut bob: RawClient, child: std::process::Child, out: &Path, from: &str) {
    // Under the raw client's own 10 s limit, so that a failure shows the log.
    let m = tokio::time::timeout(Duration::from_secs(9), bob.next_message())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no message from the script\n{}",
                std::fs::read_to_string(out).unwrap_or_default()
            )
        });
    let sender = m.attr("from").unwrap().to_owned();
    assert!(sender.starts_with(from), "{sender}");
    assert!(
        m.child("body", ns::CLIENT)
            .unwrap()
            .text()
            .starts_with("hello from")
    );
    bob.send(&format!(
        "<message to='{sender}' type='chat'><body>hello back over tcp</body></message>"
    ))
    .await;
    let (output, log) = finish(child, out).await;
    assert!(output.status.success(), "{}\n{log}", output.status);
    assert!(log.contains("received: hello back over tcp"), "{log}");
    eprintln!("{log}");
}

async fn server() -> TestServer {
    let s = TestServer::start().await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    s
}

#[tokio::test]
async fn xmpp_js_over_websocket_chats_with_tcp() {
    let Some(node) = node() else { return };
    let s = server().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("xmppjs.log");
    let url = format!("wss://localhost:{}/xmpp-websocket", s.web_tls_addr().port());
    let args = [url, "alice".into(), "pw".into(), "bob@localhost/tcp".into()];
    let bob = s.online("bob", "tcp").await;
    let child = spawn(node, "xmpp_client_ws.mjs", &args, &out);
    chat(bob, child, &out, "alice@localhost/xmppjs").await;
}

#[tokio::test]
async fn strophe_over_bosh_chats_with_tcp() {
    let Some(node) = node() else { return };
    let s = server().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("strophe.log");
    let url = format!("https://localhost:{}/http-bind", s.web_tls_addr().port());
    let args = [
        url,
        "alice@localhost".into(),
        "pw".into(),
        "bob@localhost/tcp".into(),
    ];
    let bob = s.online("bob", "tcp").await;
    let child = spawn(node, "strophe_bosh.mjs", &args, &out);
    chat(bob, child, &out, "alice@localhost/strophe").await;
}
