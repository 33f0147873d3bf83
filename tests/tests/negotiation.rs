//! RFC 6120 §4–§7 black-box: stream negotiation, STARTTLS, direct TLS, every
//! SASL mechanism, resource binding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::{RawClient, TestServer};
use rookery_xml::ns;
use tokio_rustls::rustls;

#[tokio::test]
async fn starttls_is_required_and_offered_first() {
    let s = TestServer::start().await;
    let mut c = RawClient::connect(s.addr()).await;
    let f = c.open("localhost").await;
    let st = f.child("starttls", ns::TLS).expect("starttls offered");
    assert!(st.child("required", ns::TLS).is_some());
    assert!(
        f.child("mechanisms", ns::SASL).is_none(),
        "no SASL before TLS"
    );
    // SASL before TLS is refused with encryption-required (RFC 6120 §6.5.4).
    assert_eq!(
        c.auth_plain("alice", "pw").await,
        Err("encryption-required".into())
    );
    let f = c.starttls("localhost").await;
    assert!(f.child("starttls", ns::TLS).is_none());
    let mechs = c.mechanisms();
    for m in [
        "SCRAM-SHA-512-PLUS",
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-512",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ] {
        assert!(mechs.contains(&m.to_owned()), "{m} missing from {mechs:?}");
    }
    // XEP-0440: tls-exporter is advertised.
    let cb = f
        .child("sasl-channel-binding", ns::SASL_CB)
        .expect("XEP-0440 element");
    assert_eq!(cb.first_child().unwrap().attr("type"), Some("tls-exporter"));
}

#[tokio::test]
async fn stanzas_before_tls_or_auth_are_refused() {
    let s = TestServer::start().await;
    let mut c = RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.send("<message to='bob@localhost'><body>x</body></message>")
        .await;
    assert_eq!(c.expect_stream_error().await, "not-authorized");

    let mut c = RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.starttls("localhost").await;
    c.send("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(c.expect_stream_error().await, "not-authorized");
}

#[tokio::test]
async fn every_sasl_mechanism_logs_in() {
    let s = TestServer::start().await;
    s.add_user("alice", "wonder land").await;
    for mech in [
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
        "SCRAM-SHA-512",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-512-PLUS",
        "PLAIN",
    ] {
        let mut c = RawClient::connect(s.addr()).await;
        c.open("localhost").await;
        c.starttls("localhost").await;
        if mech == "PLAIN" {
            c.auth_plain("alice", "wonder land").await.unwrap();
        } else {
            c.auth_scram(mech, "alice", "wonder land")
                .await
                .unwrap_or_else(|e| panic!("{mech}: {e}"));
        }
        let f = c.open("localhost").await;
        assert!(
            f.child("bind", ns::BIND).is_some(),
            "{mech}: bind offered after auth"
        );
        assert!(f.child("mechanisms", ns::SASL).is_none());
        let jid = c.bind(Some(mech)).await;
        assert_eq!(jid, format!("alice@localhost/{mech}"));
    }
}

#[tokio::test]
async fn plus_is_not_offered_on_tls12_and_downgrade_policy() {
    use rookery_e2e::scram::Binding;
    let s = TestServer::start().await;
    s.add_user("alice", "pw").await;
    let mut c = RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.starttls_with("localhost", &[&rustls::version::TLS12])
        .await;
    assert!(
        c.mechanisms().iter().all(|m| !m.ends_with("-PLUS")),
        "{:?}",
        c.mechanisms()
    );
    c.auth_scram("SCRAM-SHA-256", "alice", "pw").await.unwrap();

    // By default a client sending 'y' next to offered -PLUS mechanisms (as
    // slixmpp 1.8 does) is let in, like one sending 'n'.
    let mut c = RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.starttls("localhost").await;
    c.auth_scram_with("SCRAM-SHA-256", "alice", "pw", Binding::SupportedNotUsed)
        .await
        .unwrap();

    // With the strict policy, 'y' while -PLUS was offered is a downgrade
    // and fails (RFC 5802 §6); 'n' is fine.
    let s = TestServer::start_with(|c| c.c2s.reject_channel_binding_downgrade = true).await;
    s.add_user("alice", "pw").await;
    let mut c = RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.starttls("localhost").await;
    let downgraded = c
        .auth_scram_with("SCRAM-SHA-256", "alice", "pw", Binding::SupportedNotUsed)
        .await;
    assert_eq!(downgraded, Err("not-authorized".into()));
    c.auth_scram("SCRAM-SHA-256", "alice", "pw").await.unwrap();
}

#[tokio::test]
async fn direct_tls_xep0368() {
    let s = TestServer::start().await;
    s.add_user("bob", "pw").await;
    let mut c = RawClient::connect_direct_tls(s.tls_addr(), "localhost").await;
    let f = c.open("localhost").await;
    assert!(
        f.child("starttls", ns::TLS).is_none(),
        "no STARTTLS inside TLS"
    );
    c.auth_scram("SCRAM-SHA-256-PLUS", "bob", "pw")
        .await
        .unwrap();
    c.open("localhost").await;
    assert_eq!(c.bind(Some("direct")).await, "bob@localhost/direct");
}

#[tokio::test]
async fn wrong_password_five_times() {
    let s = TestServer::start().await;
    s.add_user("carol", "right").await;
    let mut c = RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.starttls("localhost").await;
    for i in 0..4 {
        let r = if i % 2 == 0 {
            c.auth_scram("SCRAM-SHA-256", "carol", "wrong").await
        } else {
            c.auth_plain("carol", "wrong").await
        };
        assert_eq!(r, Err("not-authorized".into()), "attempt {i}");
    }
    // An unknown user fails the same way (no account enumeration).
    assert_eq!(
        c.auth_plain("nobody", "x").await,
        Err("not-authorized".into())
    );
    // RFC 6120 §6.4.5: the retry limit (5) closes the stream.
    assert_eq!(c.expect_stream_error().await, "policy-violation");
    // Counted in the metrics.
    let m = s.http_get("/metrics").await;
    assert!(
        m.contains("rookery_auth_attempts_total{mechanism=\"PLAIN\",outcome=\"failure\"} 3"),
        "{m}"
    );
    // The right password still works from a new connection.
    let mut ok = s.login("carol", "right", "r").await;
    let pong = ok
        .iq("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(pong.attr("type"), Some("result"));
}

#[tokio::test]
async fn sasl_edge_cases() {
    let s = TestServer::start().await;
    s.add_user("dave", "pw").await;
    let mut c = RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.starttls("localhost").await;
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>")
        .await;
    let f = c.next().await;
    assert_eq!(f.first_child().unwrap().name(), "invalid-mechanism");
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!notbase64!!</auth>")
        .await;
    let f = c.next().await;
    assert_eq!(f.first_child().unwrap().name(), "incorrect-encoding");
    // No initial response: an empty challenge, then the response.
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'/>")
        .await;
    let ch = c.next().await;
    assert!(ch.is("challenge", ns::SASL), "{ch}");
    c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        .await;
    let f = c.next().await;
    assert_eq!(f.first_child().unwrap().name(), "aborted");
    // authzid other than the account itself.
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.encode("eve@localhost\0dave\0pw");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
    ))
    .await;
    let f = c.next().await;
    assert_eq!(f.first_child().unwrap().name(), "invalid-authzid", "{f}");
    let payload = base64::engine::general_purpose::STANDARD.encode("dave@localhost\0dave\0pw");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
    ))
    .await;
    assert!(c.next().await.is("success", ns::SASL));
}

#[tokio::test]
async fn bind_generated_resource_conflict_and_limit() {
    let s = TestServer::start_with(|c| c.session.max_resources = 2).await;
    s.add_user("erin", "pw").await;
    let mut c = RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.starttls("localhost").await;
    c.auth_scram("SCRAM-SHA-256", "erin", "pw").await.unwrap();
    let f = c.open("localhost").await;
    assert!(
        f.child("session", ns::SESSION)
            .unwrap()
            .child("optional", ns::SESSION)
            .is_some()
    );
    // Bad resourcepart (RFC 6120 §7.7.2.1), then a server-chosen one.
    c.send("<iq type='set' id='b0'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource> lead</resource></bind></iq>")
        .await;
    let e = c.next().await;
    assert_eq!(e.attr("type"), Some("error"));
    assert!(e.to_string().contains("bad-request"), "{e}");
    let jid = c.bind(None).await;
    assert!(
        jid.starts_with("erin@localhost/") && jid.len() > "erin@localhost/".len() + 8,
        "{jid}"
    );
    // Legacy session element is accepted.
    let r = c
        .iq("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));

    let mut phone = s.login("erin", "pw", "phone").await;
    // A third resource is over the limit (RFC 6120 §7.6.2.1).
    let mut third = RawClient::connect(s.addr()).await;
    third.open("localhost").await;
    third.starttls("localhost").await;
    third
        .auth_scram("SCRAM-SHA-256", "erin", "pw")
        .await
        .unwrap();
    third.open("localhost").await;
    third
        .send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>tablet</resource></bind></iq>")
        .await;
    let e = third.next().await;
    assert!(e.to_string().contains("resource-constraint"), "{e}");
    // Same resource again: the new session replaces the old (default policy).
    third
        .send("<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>")
        .await;
    let ok = third.next().await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    assert_eq!(phone.expect_stream_error().await, "conflict");
    let pong = third
        .iq("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(pong.attr("type"), Some("result"));
}

#[tokio::test]
async fn conflict_policy_reject() {
    let s = TestServer::start_with(|c| {
        c.session.resource_conflict = rookery_session::ConflictPolicy::Reject
    })
    .await;
    s.add_user("fay", "pw").await;
    let mut first = s.login("fay", "pw", "home").await;
    let mut c = RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.starttls("localhost").await;
    c.auth_scram("SCRAM-SHA-256", "fay", "pw").await.unwrap();
    c.open("localhost").await;
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>home</resource></bind></iq>")
        .await;
    let e = c.next().await;
    assert!(e.to_string().contains("<conflict"), "{e}");
    let pong = first
        .iq("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(pong.attr("type"), Some("result"));
}

#[tokio::test]
async fn stream_header_errors() {
    let s = TestServer::start().await;
    let cases = [
        (
            "<stream:stream to='example.net' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            "host-unknown",
        ),
        (
            "<stream:stream to='localhost' version='1.0' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
            "invalid-namespace",
        ),
        (
            "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='urn:wrong'>",
            "invalid-namespace",
        ),
        (
            "<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            "unsupported-version",
        ),
        (
            "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>",
            "unsupported-encoding",
        ),
        (
            "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><garbage",
            "not-well-formed",
        ),
    ];
    for (header, cond) in cases {
        let mut c = RawClient::connect(s.addr()).await;
        c.send(header).await;
        if cond == "not-well-formed" {
            c.send("<x>").await;
        }
        // The server sends its own header first, then the error (RFC 6120 §4.9.1.2).
        match c.next_event().await {
            Some(rookery_xml::StreamEvent::Open(h)) => {
                assert_eq!(h.attr("from"), Some("localhost"))
            }
            other => panic!("{cond}: expected a header, got {other:?}"),
        }
        assert_eq!(c.expect_stream_error().await, cond, "{header}");
    }
}

/// A renewed certificate (`[tls] reload_secs`) is served to new
/// connections without a restart; the stream that was up stays up (a
/// broken renewal is refused: rookery-cm's `tls` unit tests).
#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let s = TestServer::start_with(|c| c.tls.reload_secs = 1).await;
    let tls = s.config.server.data_dir.join("tls");
    let (cert, key) = (tls.join("localhost.crt"), tls.join("localhost.key"));
    let old = RawClient::connect_direct_tls(s.tls_addr(), "localhost").await;
    let first = old.peer_certificate().unwrap();
    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    // As a Secret volume or certbot does it: new files, then a rename.
    for (path, pem) in [
        (&key, renewed.signing_key.serialize_pem()),
        (&cert, renewed.cert.pem()),
    ] {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    let served = || async {
        RawClient::connect_direct_tls(s.tls_addr(), "localhost")
            .await
            .peer_certificate()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while served().await == first {
        assert!(std::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(served().await, renewed.cert.der().to_vec());
    // The stream that was up is untouched.
    let mut old = old;
    let f = old.open("localhost").await;
    assert!(f.child("mechanisms", ns::SASL).is_some());
}
