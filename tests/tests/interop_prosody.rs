//! Federation with Prosody (Debian's `prosody` 0.12): a Rookery user and a
//! Prosody user subscribe to each other's presence (RFC 6121 §3, both
//! ways), see each other come and go, and exchange messages across servers,
//! once authenticated with
//! Server Dialback (`s2s_secure_auth = false`, certificates nobody trusts)
//! and once with certificates both sides trust (`s2s_secure_auth = true`,
//! SASL EXTERNAL in both directions; Rookery refuses dialback).
//!
//! Name resolution without DNS: the domains are `rookery.localhost` and
//! `prosody.localhost`. Rookery reaches Prosody through its `[s2s.peers]`
//! table. Prosody resolves names with libunbound, whose built-in
//! `localhost.` zone answers every `*.localhost` name with the loopback
//! address and has no SRV records, so Prosody falls back to
//! `rookery.localhost:5269`: Rookery listens on 127.0.0.1:5269 here, and the
//! test fails if that port is taken. Both runs are in this one test so that
//! they never hold the port at the same time.
//!
//! Prosody refuses to run as root: when the test runs as root (CI), Prosody
//! runs as the `prosody` user the Debian package creates (`runuser`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rookery_e2e::cluster::free_port;
use rookery_e2e::{RawClient, TestServer, roster_state, subscribe};
use rookery_xml::ns;

const PROSODY: &str = "/usr/bin/prosody";
const PROSODYCTL: &str = "/usr/bin/prosodyctl";
const ROOKERY: &str = "rookery.localhost";
const PROSODY_DOMAIN: &str = "prosody.localhost";

/// Kills Prosody (and waits for it) when the test ends, pass or fail.
struct Prosody {
    child: Child,
    log: PathBuf,
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prosody {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a Prosody program, as the `prosody` user when we are root.
fn prosody_command(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "prosody", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

/// A CA and a leaf for each domain, signed by it.
fn certificates(dir: &Path) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Rookery test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    for domain in [ROOKERY, PROSODY_DOMAIN] {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, domain);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{domain}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{domain}.key")), key.serialize_pem()).unwrap();
    }
}

async fn start_prosody(dir: &Path, c2s: u16, s2s: u16, secure: bool) -> Prosody {
    let d = dir.display();
    let cafile = if secure {
        format!("; cafile = \"{d}/ca.pem\"")
    } else {
        String::new()
    };
    let config = format!(
        r#"pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ debug = "{d}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ {s2s} }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "presence"; "saslauth"; "tls"; "dialback"; "disco"; "ping" }}
authentication = "internal_hashed"
s2s_secure_auth = {secure}
s2s_require_encryption = true
c2s_require_encryption = true
ssl = {{ certificate = "{d}/{PROSODY_DOMAIN}.crt"; key = "{d}/{PROSODY_DOMAIN}.key"{cafile} }}
VirtualHost "{PROSODY_DOMAIN}"
"#
    );
    let cfg = dir.join("prosody.cfg.lua");
    std::fs::write(&cfg, config).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "prosody:prosody"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown to the prosody user");
    }
    let cfg_arg = cfg.to_str().unwrap();
    let out = prosody_command(PROSODYCTL)
        .args(["--config", cfg_arg, "register", "pat", PROSODY_DOMAIN, "pw"])
        .stdin(Stdio::null())
        .output()
        .expect("prosodyctl (apt-get install prosody)");
    assert!(
        out.status.success(),
        "prosodyctl register: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = prosody_command(PROSODY)
        .args(["--config", cfg_arg, "-F"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prosody");
    let p = Prosody {
        child,
        log: dir.join("prosody.log"),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", c2s))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "prosody did not start: {}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p
}

async fn prosody_login(c2s: u16) -> RawClient {
    let mut c = RawClient::connect(format!("127.0.0.1:{c2s}").parse().unwrap()).await;
    c.open(PROSODY_DOMAIN).await;
    c.starttls(PROSODY_DOMAIN).await;
    c.auth_scram("SCRAM-SHA-1", "pat", "pw").await.unwrap();
    c.open(PROSODY_DOMAIN).await;
    c.bind(Some("desk")).await;
    c
}

async fn run(secure: bool) {
    let dir = tempfile::tempdir().unwrap();
    // Prosody (not root) walks into it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    certificates(dir.path());
    let (c2s, s2s) = (free_port(), free_port());
    let prosody = start_prosody(dir.path(), c2s, s2s, secure).await;
    let cert_dir = dir.path().to_owned();
    let rookery = TestServer::start_with(move |c| {
        c.server.domain = ROOKERY.into();
        c.tls.cert = Some(cert_dir.join(format!("{ROOKERY}.crt")));
        c.tls.key = Some(cert_dir.join(format!("{ROOKERY}.key")));
        c.s2s.enabled = true;
        c.s2s.listen = vec!["127.0.0.1:5269".parse().unwrap()];
        let mut peer = rookery_s2s::PeerConfig {
            address: format!("127.0.0.1:{s2s}"),
            ..Default::default()
        };
        if secure {
            peer.ca = Some(cert_dir.join("ca.pem"));
            c.s2s.require_valid_certificates = true;
        }
        c.s2s.peers.insert(PROSODY_DOMAIN.into(), peer);
    })
    .await;
    rookery.add_user("alice", "pw").await;
    let mut alice = rookery.online("alice", "laptop").await;
    let mut pat = prosody_login(c2s).await;
    pat.iq("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    pat.send("<presence/>").await;

    // RFC 6121 §3.1 both ways: Rookery asks Prosody, then Prosody asks
    // Rookery; each sees the other's presence after approving.
    let handshakes = async {
        subscribe(
            &mut alice,
            "alice@rookery.localhost",
            &mut pat,
            "pat@prosody.localhost/desk",
        )
        .await;
        subscribe(
            &mut pat,
            "pat@prosody.localhost",
            &mut alice,
            "alice@rookery.localhost/laptop",
        )
        .await;
    };
    tokio::time::timeout(Duration::from_secs(30), handshakes)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "subscriptions did not complete; prosody's log:\n{}",
                prosody.log()
            )
        });
    assert_eq!(
        roster_state(&mut alice, "pat@prosody.localhost").await,
        Some(("both".into(), None))
    );
    assert_eq!(
        roster_state(&mut pat, "alice@rookery.localhost").await,
        Some(("both".into(), None))
    );
    // §4.4: a presence change crosses both ways.
    pat.send("<presence><show>dnd</show></presence>").await;
    let (p, _) = alice
        .until(|e| e.name() == "presence" && e.child("show", ns::CLIENT).is_some())
        .await;
    assert_eq!(p.attr("from"), Some("pat@prosody.localhost/desk"), "{p}");
    assert_eq!(p.child("show", ns::CLIENT).unwrap().text(), "dnd");
    alice.send("<presence><show>away</show></presence>").await;
    let (p, _) = pat
        .until(|e| {
            e.name() == "presence"
                && e.attr("from") == Some("alice@rookery.localhost/laptop")
                && e.child("show", ns::CLIENT).is_some()
        })
        .await;
    assert_eq!(p.child("show", ns::CLIENT).unwrap().text(), "away", "{p}");

    alice
        .send("<message to='pat@prosody.localhost/desk' type='chat' id='r1'><body>from rookery</body></message>")
        .await;
    let m = tokio::time::timeout(Duration::from_secs(20), pat.next_message())
        .await
        .unwrap_or_else(|_| panic!("no message at prosody; its log:\n{}", prosody.log()));
    assert_eq!(m.attr("from"), Some("alice@rookery.localhost/laptop"));
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "from rookery");

    pat.send("<message to='alice@rookery.localhost/laptop' type='chat' id='p1'><body>from prosody</body></message>")
        .await;
    let m = tokio::time::timeout(Duration::from_secs(20), alice.next_message())
        .await
        .unwrap_or_else(|_| panic!("no message at rookery; prosody's log:\n{}", prosody.log()));
    assert_eq!(m.attr("from"), Some("pat@prosody.localhost/desk"));
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "from prosody");

    // With `secure`, Rookery refuses dialback in both directions
    // (`require_valid_certificates`), so both streams were authenticated
    // with certificates (SASL EXTERNAL).
    if std::env::var_os("ROOKERY_SHOW_PROSODY_LOG").is_some() {
        eprintln!(
            "---- prosody log (secure: {secure}) ----\n{}",
            prosody.log()
        );
    }
    drop(prosody);
}

#[tokio::test]
async fn federation_with_prosody() {
    assert!(
        Path::new(PROSODY).exists(),
        "{PROSODY} is missing: apt-get install prosody (tests/run-all.sh does)"
    );
    run(false).await;
    run(true).await;
}
