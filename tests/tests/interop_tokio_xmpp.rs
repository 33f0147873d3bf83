//! Interop with tokio-xmpp 6 (xmpp-rs), a client library nobody here wrote.
//!
//! tokio-xmpp's built-in STARTTLS connector cannot accept a self-signed
//! certificate and, on TLS 1.3, skips plain SCRAM; so these tests use the
//! custom `ServerConnector` from INTEROP.md §1: a fixed address, STARTTLS with
//! an accept-any-cert rustls config, and `ChannelBinding::None`, which makes
//! tokio-xmpp pick SCRAM-SHA-256.
//!
//! tokio-xmpp's `Client` retries failed connections forever and never reports
//! them, so every wait is wrapped in a timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rookery_e2e::TestServer;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::error::AuthError;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::parsers::sasl::DefinedCondition;
use tokio_xmpp::parsers::{ns, starttls};
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, PendingFeaturesRecv, StreamHeader, Timeouts, XmppStreamElement,
    initiate_stream,
};
use tokio_xmpp::{Client, Error, Event, IqRequest, IqResponse, Stanza};

/// Upper bound for every single wait.
const WAIT: Duration = Duration::from_secs(10);

/// Accepts any server certificate (handshake signatures are still checked).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Dials a fixed address and does STARTTLS with our own rustls config.
#[derive(Clone, Debug)]
struct TestStartTls {
    addr: String,
    tls: Arc<ClientConfig>,
}

impl ServerConnector for TestStartTls {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        t: Timeouts,
    ) -> Result<
        (
            PendingFeaturesRecv<Self::Stream>,
            sasl::common::ChannelBinding,
        ),
        Error,
    > {
        let dom = jid.domain().to_string();
        let hdr = || StreamHeader {
            to: Some(Cow::Owned(dom.clone())),
            from: None,
            id: None,
        };
        let tcp = BufStream::new(TcpStream::connect(&self.addr).await?);
        let (features, mut s) = initiate_stream(tcp, ns, hdr(), t)
            .await?
            .recv_features::<FallibleStreamElement>()
            .await?;
        if !features.can_starttls() {
            return Err(Error::Disconnected);
        }
        s.send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
            starttls::Request,
        )))
        .await?;
        match s.next().await.map(|r| r.and_then(|e| e.into_read_error())) {
            Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => {}
            _ => return Err(Error::Disconnected),
        }
        let name = ServerName::try_from(dom.clone()).map_err(std::io::Error::other)?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, s.into_inner().into_inner())
            .await?;
        // ChannelBinding::None: SCRAM-SHA-256, not a -PLUS mechanism.
        Ok((
            initiate_stream(BufStream::new(tls), ns, hdr(), t).await?,
            sasl::common::ChannelBinding::None,
        ))
    }
}

fn connector(s: &TestServer) -> TestStartTls {
    let p = Arc::new(ring::default_provider());
    let tls = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(p)))
        .with_no_client_auth();
    TestStartTls {
        addr: s.addr().to_string(),
        tls: Arc::new(tls),
    }
}

fn client(s: &TestServer, jid: &str, password: &str) -> Client {
    Client::new_with_connector(
        Jid::new(jid).unwrap(),
        password,
        connector(s),
        Timeouts::tight(),
    )
}

/// Waits for `Event::Online` and returns the bound JID.
async fn online(c: &mut Client, who: &str) -> Jid {
    loop {
        let ev = tokio::time::timeout(WAIT, c.next())
            .await
            .unwrap_or_else(|_| {
                panic!("{who}: not online within {WAIT:?} (RUST_LOG=tokio_xmpp=debug shows why)")
            })
            .unwrap_or_else(|| panic!("{who}: client stream ended before going online"));
        match ev {
            Event::Online { bound_jid, .. } => return bound_jid,
            Event::Disconnected(e) => panic!("{who}: disconnected before going online: {e}"),
            Event::Stanza(_) => continue,
        }
    }
}

/// Reads events until a message arrives with a body; presences and other
/// stanzas are skipped.
async fn next_message(c: &mut Client, who: &str) -> Message {
    loop {
        let ev = tokio::time::timeout(WAIT, c.next())
            .await
            .unwrap_or_else(|_| panic!("{who}: no message within {WAIT:?}"))
            .unwrap_or_else(|| panic!("{who}: client stream ended"));
        match ev {
            Event::Stanza(Stanza::Message(m)) if !m.bodies.is_empty() => return m,
            Event::Disconnected(e) => panic!("{who}: disconnected while waiting: {e}"),
            _ => continue,
        }
    }
}

async fn send_chat(c: &mut Client, to: &Jid, body: &str) {
    let m = Message::chat(Some(to.clone())).with_body(Lang::default(), body.to_owned());
    tokio::time::timeout(WAIT, c.send_stanza(m.into()))
        .await
        .expect("send timed out")
        .expect("send failed");
}

/// Sends `body` from `from` to `to_addr`, and checks that `to` receives a
/// chat message with exactly that body, from `from_jid`.
async fn deliver(
    from: &mut Client,
    from_jid: &Jid,
    to: &mut Client,
    to_addr: &Jid,
    body: &str,
    who: &str,
) {
    send_chat(from, to_addr, body).await;
    let m = next_message(to, who).await;
    let (_, got) = m.get_best_body(vec![]).expect("message has a body");
    assert_eq!(got, body, "{who}: wrong body in {m:?}");
    assert_eq!(m.type_, MessageType::Chat, "{who}: {m:?}");
    assert_eq!(
        m.from.as_ref(),
        Some(from_jid),
        "{who}: wrong from in {m:?}"
    );
}

#[tokio::test]
async fn chat_both_ways_full_and_bare_jid() {
    let s = TestServer::start().await;
    s.add_user("alice", "pass").await;
    s.add_user("bob", "pass").await;

    let mut alice = client(&s, "alice@localhost/tx-a", "pass");
    let mut bob = client(&s, "bob@localhost/tx-b", "pass");
    let alice_jid = online(&mut alice, "alice").await;
    let bob_jid = online(&mut bob, "bob").await;
    assert_eq!(alice_jid.to_string(), "alice@localhost/tx-a");
    assert_eq!(bob_jid.to_string(), "bob@localhost/tx-b");

    for c in [&mut alice, &mut bob] {
        tokio::time::timeout(WAIT, c.send_stanza(Presence::available().into()))
            .await
            .unwrap()
            .unwrap();
    }

    // Full JIDs first: each one's presence is processed before its first
    // message, so by the time the bare-JID messages go out both resources
    // are available.
    let alice_bare = Jid::from(BareJid::new("alice@localhost").unwrap());
    let bob_bare = Jid::from(BareJid::new("bob@localhost").unwrap());
    let n = std::process::id();
    deliver(
        &mut alice,
        &alice_jid,
        &mut bob,
        &bob_jid,
        &format!("a→b full {n} ✓ <&>"),
        "bob",
    )
    .await;
    deliver(
        &mut bob,
        &bob_jid,
        &mut alice,
        &alice_jid,
        &format!("b→a full {n}"),
        "alice",
    )
    .await;
    deliver(
        &mut alice,
        &alice_jid,
        &mut bob,
        &bob_bare,
        &format!("a→b bare {n}"),
        "bob",
    )
    .await;
    deliver(
        &mut bob,
        &bob_jid,
        &mut alice,
        &alice_bare,
        &format!("b→a bare {n}"),
        "alice",
    )
    .await;

    for c in [alice, bob] {
        tokio::time::timeout(WAIT, c.send_end())
            .await
            .expect("send_end timed out")
            .unwrap();
    }
}

#[tokio::test]
async fn wrong_password_is_not_authorized() {
    let s = TestServer::start().await;
    s.add_user("alice", "pass").await;
    let conn = connector(&s);
    let jid = Jid::new("alice@localhost").unwrap();

    // tokio-xmpp tries SCRAM-SHA-256 first; restricting the offered set also
    // checks the failure path of SCRAM-SHA-1 and PLAIN.
    for mech in ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"] {
        let result = tokio::time::timeout(WAIT, async {
            let (stream, _cb) = conn
                .connect(&jid, ns::JABBER_CLIENT, Timeouts::tight())
                .await?;
            let (features, stream) = stream.recv_features::<FallibleStreamElement>().await?;
            assert!(
                features.sasl_mechanisms.contains(mech),
                "{mech} not offered: {:?}",
                features.sasl_mechanisms
            );
            let creds = sasl::common::Credentials::default()
                .with_username("alice")
                .with_password("not the password")
                .with_channel_binding(sasl::common::ChannelBinding::None);
            let offered = [mech.to_owned()].into_iter().collect();
            tokio_xmpp::client_login(stream, offered, creds)
                .await
                .map(|_| ())
        })
        .await
        .unwrap_or_else(|_| panic!("{mech}: no SASL outcome within {WAIT:?}"));
        match result {
            Err(Error::Auth(AuthError::Fail(DefinedCondition::NotAuthorized))) => {}
            other => panic!("{mech}: expected not-authorized, got {other:?}"),
        }
    }

    // The right password still works afterwards.
    let mut c = client(&s, "alice@localhost/ok", "pass");
    online(&mut c, "alice").await;
    tokio::time::timeout(WAIT, c.send_end())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn ping_the_server() {
    let s = TestServer::start().await;
    s.add_user("alice", "pass").await;
    let mut c = client(&s, "alice@localhost/ping", "pass");
    online(&mut c, "alice").await;

    // The response tracker matches on (from, id): the server must answer
    // from 'localhost' with the same id.
    let token = tokio::time::timeout(
        WAIT,
        c.send_iq(
            Some(Jid::new("localhost").unwrap()),
            IqRequest::Get(Element::from(Ping)),
        ),
    )
    .await
    .expect("send_iq timed out");
    let resp = tokio::time::timeout(WAIT, token)
        .await
        .expect("no ping result within 10 s")
        .expect("iq failed to send");
    match resp {
        IqResponse::Result(payload) => {
            assert!(payload.is_none(), "ping result has a payload: {payload:?}")
        }
        IqResponse::Error(e) => panic!("ping answered with an error: {e:?}"),
    }
    tokio::time::timeout(WAIT, c.send_end())
        .await
        .unwrap()
        .unwrap();
}
