//! Interop with slixmpp (Python), a client library nobody here wrote.
//!
//! Runs `tests/interop/slixmpp_chat.py` with Debian's `/usr/bin/python3` and
//! `python3-slixmpp` against an in-process server, once per SASL mechanism.
//! A missing slixmpp is a test failure, never a silent pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rookery_e2e::TestServer;

const PYTHON: &str = "/usr/bin/python3";
/// The script has its own 30 s hard timeout; this is the backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(45);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/slixmpp_chat.py")
}

/// Runs `cmd` to completion without blocking the runtime, killing it after
/// [`SCRIPT_TIMEOUT`]. Output goes through temporary files, so a chatty
/// child cannot fill a pipe and stall. (tokio's `process` feature is not
/// enabled in the workspace.)
async fn output(mut cmd: Command) -> Output {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // A blocking thread waits for the child; the test waits for that thread
    // (no polling), and kills the child if it overstays.
    let pid = child.id();
    let waiter = tokio::task::spawn_blocking(move || child.wait().unwrap());
    let status = match tokio::time::timeout(SCRIPT_TIMEOUT, waiter).await {
        Ok(st) => st.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{cmd:?} still running after {SCRIPT_TIMEOUT:?}; killed");
        }
    };
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut v = Vec::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    Output {
        status,
        stdout: read(out),
        stderr: read(err),
    }
}

/// Fails the test unless `/usr/bin/python3` can import slixmpp.
async fn require_slixmpp() {
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "{PYTHON} not found; install python3-slixmpp (apt-get install -y python3-slixmpp)"
    );
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-c", "import slixmpp; print(slixmpp.__version__)"]);
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "{PYTHON} cannot import slixmpp; install it with `apt-get install -y python3-slixmpp`\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("slixmpp {}", String::from_utf8_lossy(&out.stdout).trim());
}

/// Runs the script against `s` as alice/bob with `extra` arguments.
async fn script_output(s: &TestServer, password: &str, extra: &[&str]) -> Output {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script())
        .args(["--port", &s.addr().port().to_string()])
        .args(["--user1", "alice", "--user2", "bob", "--password", password])
        .args(extra);
    if std::env::var_os("SLIXMPP_VERBOSE").is_some() {
        cmd.arg("--verbose");
    }
    output(cmd).await
}

/// Runs the script and asserts success, printing its output on failure.
async fn run_script(s: &TestServer, extra: &[&str]) {
    let started = Instant::now();
    let out = script_output(s, "pass", extra).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{extra:?}: slixmpp_chat.py failed ({}) after {:?}\n--- stdout\n{stdout}--- stderr\n{stderr}\
         (rerun with SLIXMPP_VERBOSE=1 for the XML)",
        out.status,
        started.elapsed()
    );
    eprintln!("{extra:?}: ok in {:?}\n{stdout}", started.elapsed());
}

async fn server() -> TestServer {
    require_slixmpp().await;
    let s = TestServer::start().await;
    s.add_user("alice", "pass").await;
    s.add_user("bob", "pass").await;
    s.add_user("carol", "pass").await;
    s
}

#[tokio::test]
async fn slixmpp_chat_ping_disco() {
    let s = server().await;
    for mech in ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"] {
        run_script(&s, &["--mech", mech]).await;
    }
}

#[tokio::test]
async fn slixmpp_wrong_password_fails() {
    // The script must not report success when login fails, and the failure
    // must be the server's not-authorized.
    let s = server().await;
    let out = script_output(&s, "wrong", &["--mech", "SCRAM-SHA-256"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("SASL authentication failed")
            && stderr.contains("SCRAM-SHA-256: <not-authorized/>"),
        "stderr: {stderr}"
    );
}

/// Stock slixmpp 1.8.3 (no workaround): a non-PLUS SCRAM sends the gs2 flag
/// `y` although the server offered -PLUS (XEP-0440 says `n`), and left to
/// itself ("auto") it first tries SCRAM-*-PLUS with tls-unique, which TLS 1.3
/// does not have. The default `c2s.reject_channel_binding_downgrade = false`
/// lets it in; see docs/decisions/0003-sasl.md.
#[tokio::test]
async fn slixmpp_stock_channel_binding() {
    let s = server().await;
    let mut failed = Vec::new();
    for mech in ["SCRAM-SHA-256", "SCRAM-SHA-1", "auto"] {
        let out = script_output(&s, "pass", &["--mech", mech, "--stock-cb"]).await;
        eprintln!(
            "{mech} (stock): {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            failed.push(mech);
        }
    }
    assert!(failed.is_empty(), "stock slixmpp failed with {failed:?}");
}

/// Runs one of the interop scripts against a fresh server and asserts that
/// it succeeded and printed every marker.
async fn run_interop_script(name: &str, markers: &[&str]) {
    let s = server().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(name);
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script)
        .args(["--port", &s.addr().port().to_string(), "--password", "pass"]);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed ({})\n--- stdout\n{stdout}--- stderr\n{stderr}",
        out.status
    );
    for m in markers {
        assert!(stdout.contains(m), "{name}: missing {m:?} in\n{stdout}");
    }
}

/// RFC 6121 and XEP-0280 with stock slixmpp: a subscription handshake
/// (slixmpp auto-accepts and subscribes back), presence both ways, and
/// carbons between two resources (tests/interop/slixmpp_im.py).
#[tokio::test]
async fn slixmpp_subscriptions_presence_carbons() {
    run_interop_script(
        "slixmpp_im.py",
        &["subscriptions: both/both", "received carbon", "sent carbon"],
    )
    .await;
}

/// XEP-0313 paging both ways and XEP-0198 resumption after a cut socket,
/// with stock slixmpp (tests/interop/slixmpp_mam_sm.py).
#[tokio::test]
async fn slixmpp_mam_paging_and_sm_resume() {
    run_interop_script(
        "slixmpp_mam_sm.py",
        &["all 15", "stream resumed", "arrived after resumption"],
    )
    .await;
}

/// XEP-0045 with slixmpp's xep_0045 plugin: three users join a room, chat,
/// one is kicked; XEP-0313 with its xep_0359/xep_0313 plugins: the live
/// copies carry the room's stanza-id, and the kicked user pages through the
/// room's archive (tests/interop/slixmpp_muc.py).
#[tokio::test]
async fn slixmpp_muc_join_chat_kick() {
    run_interop_script(
        "slixmpp_muc.py",
        &[
            "alice created the room",
            "bob and carol joined",
            "the room advertises urn:xmpp:mam:2",
            "everyone got both messages in order, with the same stanza-ids",
            "kick: carol got 110+307",
            "archive: carol paged through both messages, ids as live",
            "OK",
        ],
    )
    .await;
}

/// XEP-0163 with slixmpp's xep_0060/xep_0163/xep_0115/xep_0223/xep_0084/
/// xep_0048 plugins: OMEMO device lists and bundles published with
/// publish-options and received by a subscribed contact whose caps the
/// server verified, private bookmarks, native bookmarks read as private
/// XML, an avatar copied to the vCard (tests/interop/slixmpp_pep.py).
#[tokio::test]
async fn slixmpp_pep_omemo_bookmarks_avatar() {
    run_interop_script(
        "slixmpp_pep.py",
        &[
            "account disco: pubsub/pep",
            "device list: bob got the event",
            "bundle: bob got the event and fetched it",
            "legacy axolotl nodes",
            "publish-options mismatch: conflict",
            "xep_0223: stored, read back, refused to bob",
            "(#compat)",
            "avatar: bob got the metadata, the vCard has the photo",
            "OK",
        ],
    )
    .await;
}

/// XEP-0357 with stock slixmpp: one client enables push, another acts as
/// the app server and receives the notification once the first is gone
/// (tests/interop/slixmpp_push.py).
#[tokio::test]
async fn slixmpp_push_notification() {
    run_interop_script(
        "slixmpp_push.py",
        &[
            "account advertises urn:xmpp:push:0",
            "notification received with the summary and the publish options",
            "offline message delivered after login",
            "push disabled",
        ],
    )
    .await;
}
