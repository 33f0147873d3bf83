//! The session service's side of federation (RFC 6120 §10.4, RFC 6121 with
//! contacts on other servers): what goes to the s2s role through
//! [`RemoteRouter`], and what it hands back through [`InboundRouter`].
//!
//! The s2s role is replaced by a channel here; the streams themselves are
//! tested in rookery-s2s and, between real servers, in tests/tests/federation.rs.

use std::sync::Arc;
use std::time::Duration;

use rookery_core::metrics::Metrics;
use rookery_core::{
    BindRequest, ClientLink, DeliverError, Element, InboundRouter, Jid, RemoteRouter,
    SessionService, Stanza, StreamError,
};
use rookery_sasl::StoredCredentials;
use rookery_session::modules::ModulesConfig;
use rookery_session::roster::Subscription;
use rookery_session::{LocalSessions, SessionConfig, Stores};
use rookery_store::SqliteStore;
use tokio::sync::mpsc;
use tokio::time::timeout;

const DOMAIN: &str = "a.example";

/// A client connection whose stanzas go to a channel.
#[derive(Debug)]
struct Link(mpsc::UnboundedSender<Arc<Element>>);

impl ClientLink for Link {
    fn deliver(&self, stanza: Arc<Element>) -> Result<(), DeliverError> {
        self.0.send(stanza).map_err(|_| DeliverError::Closed)
    }
    fn close(&self, _error: StreamError) {}
}

/// The s2s role: whatever is sent to another domain goes to a channel.
#[derive(Debug)]
struct Remote(mpsc::UnboundedSender<Stanza>);

impl RemoteRouter for Remote {
    fn send_remote(&self, stanza: Stanza) {
        let _ = self.0.send(stanza);
    }
}

struct Setup {
    sessions: Arc<LocalSessions>,
    stores: Stores,
    remote: mpsc::UnboundedReceiver<Stanza>,
}

fn jid(s: &str) -> Jid {
    Jid::parse(s).expect("valid JID")
}

fn xml(s: &str) -> Element {
    Element::parse(s).expect("valid XML")
}

fn stanza(s: &str) -> Stanza {
    Stanza::parse(xml(s)).expect("a stanza")
}

async fn setup() -> Setup {
    let store = SqliteStore::in_memory().expect("in-memory store");
    let stores = Stores {
        users: Arc::new(store.clone()),
        roster: Arc::new(store.clone()),
        offline: Arc::new(store.clone()),
        blocklist: Arc::new(store.clone()),
        vcards: Arc::new(store.clone()),
        private: Arc::new(store.clone()),
        last_activity: Arc::new(store.clone()),
        archive: Arc::new(store.clone()),
        pubsub: Arc::new(store.clone()),
        push: Arc::new(store),
    };
    let sessions = LocalSessions::new(
        DOMAIN,
        SessionConfig::default(),
        ModulesConfig::default(),
        4096,
        stores.clone(),
        Metrics::new(),
    );
    let (tx, remote) = mpsc::unbounded_channel();
    sessions.set_remote(Arc::new(Remote(tx)));
    Setup {
        sessions,
        stores,
        remote,
    }
}

impl Setup {
    /// Creates `local@a.example` and binds resource `res`; returns its full
    /// JID and what it receives.
    async fn login(&self, local: &str, res: &str) -> (Jid, mpsc::UnboundedReceiver<Arc<Element>>) {
        let bare = format!("{local}@{DOMAIN}");
        let _ = self
            .stores
            .users
            .create(&bare, &StoredCredentials::derive("secret", 4096))
            .await;
        let (tx, rx) = mpsc::unbounded_channel();
        let full = self
            .sessions
            .bind(BindRequest {
                user: jid(&bare),
                resource: Some(res.into()),
                link: Arc::new(Link(tx)),
                conn_id: rand_id(),
            })
            .await
            .expect("bound");
        (full, rx)
    }

    /// The next stanza sent to another domain.
    async fn sent_remote(&mut self) -> Stanza {
        timeout(Duration::from_secs(5), self.remote.recv())
            .await
            .expect("a stanza for the remote domain in time")
            .expect("channel open")
    }

    async fn subscription(&self, user: &str, contact: &str) -> Option<(Subscription, bool)> {
        self.stores
            .roster
            .item(&jid(user), &jid(contact))
            .await
            .expect("roster readable")
            .map(|i| (i.subscription, i.ask))
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Waits for the next stanza on a client link that satisfies `pred`.
async fn received(
    rx: &mut mpsc::UnboundedReceiver<Arc<Element>>,
    pred: impl Fn(&Element) -> bool,
) -> Arc<Element> {
    timeout(Duration::from_secs(5), async {
        loop {
            let el = rx.recv().await.expect("link open");
            if pred(&el) {
                return el;
            }
        }
    })
    .await
    .expect("the stanza in time")
}

#[tokio::test]
async fn a_subscription_to_a_remote_contact_goes_out_and_its_answer_comes_back() {
    let mut s = setup().await;
    let (alice, mut alice_rx) = s.login("alice", "home").await;
    s.sessions
        .route(&alice, stanza("<presence xmlns='jabber:client'/>"))
        .await;
    s.sessions
        .route(
            &alice,
            stanza(&format!(
                "<presence xmlns='jabber:client' type='subscribe' to='bob@b.example' from='{alice}'/>"
            )),
        )
        .await;
    // RFC 6121 §3.1.2: stamped with the user's bare JID, sent to the contact's server.
    let out = s.sent_remote().await;
    assert_eq!(out.element().attr("type"), Some("subscribe"));
    assert_eq!(out.from().map(Jid::as_str), Some("alice@a.example"));
    assert_eq!(out.to().map(Jid::as_str), Some("bob@b.example"));
    assert_eq!(
        s.subscription("alice@a.example", "bob@b.example").await,
        Some((Subscription::None, true))
    );

    // §3.1.5–§3.1.6: the contact approves, over federation.
    s.sessions
        .route_inbound(stanza(
            "<presence xmlns='jabber:client' type='subscribed' from='bob@b.example' to='alice@a.example'/>",
        ))
        .await;
    assert_eq!(
        s.subscription("alice@a.example", "bob@b.example").await,
        Some((Subscription::To, false))
    );
    // Then the contact's presence reaches the user.
    s.sessions
        .route_inbound(stanza(
            "<presence xmlns='jabber:client' from='bob@b.example/phone' to='alice@a.example'><show>away</show></presence>",
        ))
        .await;
    let p = received(&mut alice_rx, |e| {
        e.name() == "presence" && e.attr("from") == Some("bob@b.example/phone")
    })
    .await;
    assert_eq!(p.attr("type"), None);
}

#[tokio::test]
async fn a_remote_subscriber_gets_presence_and_probe_answers() {
    let mut s = setup().await;
    let (alice, mut alice_rx) = s.login("alice", "home").await;
    s.sessions
        .route(
            &alice,
            stanza("<presence xmlns='jabber:client'><status>here</status></presence>"),
        )
        .await;
    // §3.1.3: a request from a remote contact is shown to the user.
    s.sessions
        .route_inbound(stanza(
            "<presence xmlns='jabber:client' type='subscribe' from='carol@b.example' to='alice@a.example'/>",
        ))
        .await;
    received(&mut alice_rx, |e| e.attr("type") == Some("subscribe")).await;
    s.sessions
        .route(
            &alice,
            stanza(&format!(
                "<presence xmlns='jabber:client' type='subscribed' to='carol@b.example' from='{alice}'/>"
            )),
        )
        .await;
    // §3.1.5: the approval, then the user's current presence, go to the contact's server.
    let approval = s.sent_remote().await;
    assert_eq!(approval.element().attr("type"), Some("subscribed"));
    let current = s.sent_remote().await;
    assert_eq!(current.element().attr("type"), None);
    assert_eq!(current.from(), Some(&alice));
    assert_eq!(current.to().map(Jid::as_str), Some("carol@b.example"));
    assert_eq!(
        s.subscription("alice@a.example", "carol@b.example").await,
        Some((Subscription::From, false))
    );

    // §4.3.2: a probe from the subscriber's server is answered with the
    // current presence; one from a stranger is not.
    s.sessions
        .route_inbound(stanza(
            "<presence xmlns='jabber:client' type='probe' from='mallory@b.example' to='alice@a.example'/>",
        ))
        .await;
    s.sessions
        .route_inbound(stanza(
            "<presence xmlns='jabber:client' type='probe' from='carol@b.example' to='alice@a.example'/>",
        ))
        .await;
    let answer = s.sent_remote().await;
    assert_eq!(answer.to().map(Jid::as_str), Some("carol@b.example"));
    assert_eq!(answer.from(), Some(&alice));
    assert_eq!(
        answer
            .element()
            .child("status", rookery_core::ns::CLIENT)
            .map(|c| c.text()),
        Some("here".into())
    );

    // §4.4: a presence change is broadcast to the remote subscriber.
    s.sessions
        .route(
            &alice,
            stanza("<presence xmlns='jabber:client' type='unavailable'/>"),
        )
        .await;
    let gone = s.sent_remote().await;
    assert_eq!(gone.element().attr("type"), Some("unavailable"));
    assert_eq!(gone.to().map(Jid::as_str), Some("carol@b.example"));
}

#[tokio::test]
async fn messages_cross_both_ways_and_errors_go_back_to_the_remote_sender() {
    let mut s = setup().await;
    let (alice, mut alice_rx) = s.login("alice", "home").await;
    s.sessions
        .route(&alice, stanza("<presence xmlns='jabber:client'/>"))
        .await;
    s.sessions
        .route(
            &alice,
            stanza(&format!(
                "<message xmlns='jabber:client' type='chat' id='m1' to='bob@b.example' from='{alice}'><body>hi</body></message>"
            )),
        )
        .await;
    let out = s.sent_remote().await;
    assert_eq!(out.element().attr("id"), Some("m1"));
    assert_eq!(out.from(), Some(&alice));

    s.sessions
        .route_inbound(stanza(
            "<message xmlns='jabber:client' type='chat' id='m2' from='bob@b.example/phone' to='alice@a.example'><body>hello</body></message>",
        ))
        .await;
    let m = received(&mut alice_rx, |e| e.name() == "message").await;
    assert_eq!(m.attr("id"), Some("m2"));

    // RFC 6120 §10.5.3.2: no such account — the error goes back over federation.
    s.sessions
        .route_inbound(stanza(
            "<message xmlns='jabber:client' type='chat' id='m3' from='bob@b.example/phone' to='nobody@a.example'><body>?</body></message>",
        ))
        .await;
    let err = s.sent_remote().await;
    assert_eq!(err.element().attr("type"), Some("error"));
    assert_eq!(err.element().attr("id"), Some("m3"));
    assert_eq!(err.to().map(Jid::as_str), Some("bob@b.example/phone"));

    // The server answers a remote ping (XEP-0199 §4.2 over s2s).
    s.sessions
        .route_inbound(stanza(
            "<iq xmlns='jabber:client' type='get' id='p1' from='b.example' to='a.example'><ping xmlns='urn:xmpp:ping'/></iq>",
        ))
        .await;
    let pong = s.sent_remote().await;
    assert_eq!(pong.element().attr("type"), Some("result"));
    assert_eq!(pong.to().map(Jid::as_str), Some("b.example"));
}

#[tokio::test]
async fn remote_senders_cannot_use_the_modules_of_local_accounts() {
    let mut s = setup().await;
    let (_alice, _rx) = s.login("alice", "home").await;
    // A roster set from another server, addressed to the domain, must not
    // create a roster for the remote sender (nor reach alice's).
    s.sessions
        .route_inbound(stanza(
            "<iq xmlns='jabber:client' type='set' id='r1' from='evil@b.example/x' to='a.example'><query xmlns='jabber:iq:roster'><item jid='x@c.example'/></query></iq>",
        ))
        .await;
    let err = s.sent_remote().await;
    assert_eq!(err.element().attr("type"), Some("error"));
    assert!(
        err.element()
            .child("error", rookery_core::ns::CLIENT)
            .and_then(|e| e.child("service-unavailable", rookery_core::ns::STANZAS))
            .is_some(),
        "{}",
        err.element().to_xml_string()
    );
    assert_eq!(s.subscription("evil@b.example", "x@c.example").await, None);
    // Private XML of alice, addressed to her: refused, nothing stored.
    s.sessions
        .route_inbound(stanza(
            "<iq xmlns='jabber:client' type='get' id='r2' from='evil@b.example/x' to='alice@a.example'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>",
        ))
        .await;
    let err = s.sent_remote().await;
    assert_eq!(err.element().attr("type"), Some("error"));
    // Stanzas that claim a local sender are not taken from a remote server.
    s.sessions
        .route_inbound(stanza(
            "<message xmlns='jabber:client' type='chat' from='alice@a.example/home' to='alice@a.example'><body>spoof</body></message>",
        ))
        .await;
    assert!(s.remote.try_recv().is_err());
}
