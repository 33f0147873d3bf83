//! "Nothing lost": a recipient whose connection drops again and again in the
//! middle of a conversation. Every message the server accepted must be seen
//! by the client, or handed over from offline storage or a resumed stream,
//! or be in the recipient's archive; with stream management (XEP-0198) the
//! client itself must end up with every one of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use rookery_e2e::{RawClient, TestServer};
use rookery_xml::Element;

const SM: &str = "urn:xmpp:sm:3";
const MAM: &str = "urn:xmpp:mam:2";
const ROUNDS: usize = 12;
const PER_ROUND: usize = 8;

async fn authed(s: &TestServer, user: &str) -> RawClient {
    let mut c = RawClient::connect(s.addr()).await;
    c.open(s.domain()).await;
    c.starttls(s.domain()).await;
    c.auth_scram("SCRAM-SHA-256", user, "pw").await.unwrap();
    c.open(s.domain()).await;
    c
}

/// Reads until the answer to a ping; returns the message ids seen on the way.
async fn drain(c: &mut RawClient, tag: &str) -> Vec<String> {
    c.send(&format!(
        "<iq type='get' id='drain-{tag}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    let mut ids = Vec::new();
    loop {
        let el = c.next().await;
        if el.name() == "iq" && el.attr("id") == Some(format!("drain-{tag}").as_str()) {
            return ids;
        }
        if el.name() == "iq" && el.attr("type") == Some("get") {
            let id = el.attr("id").unwrap_or_default().to_owned();
            c.send(&format!("<iq type='result' id='{id}'/>")).await;
        }
        if el.name() == "message" && el.attr("type") == Some("chat") {
            ids.push(el.attr("id").unwrap().to_owned());
        }
    }
}

/// Reads `n` chat messages (whatever else comes in between).
async fn read_messages(c: &mut RawClient, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let el = c.next().await;
        if el.name() == "message" && el.attr("type") == Some("chat") {
            ids.push(el.attr("id").unwrap().to_owned());
        }
    }
    ids
}

/// Every archived message id of `c`'s account, all pages.
async fn archive_ids(c: &mut RawClient) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut after = String::new();
    for page in 0..100 {
        let set = if after.is_empty() {
            "<set xmlns='http://jabber.org/protocol/rsm'><max>50</max></set>".to_owned()
        } else {
            format!(
                "<set xmlns='http://jabber.org/protocol/rsm'><max>50</max><after>{after}</after></set>"
            )
        };
        let qid = format!("q{page}");
        c.send(&format!(
            "<iq type='set' id='{qid}'><query xmlns='{MAM}' queryid='{qid}'>{set}</query></iq>"
        ))
        .await;
        loop {
            let el = c.next_stanza().await;
            if el.name() == "iq" && el.attr("id") == Some(qid.as_str()) {
                let fin = el.child("fin", MAM).expect("fin");
                if fin.attr("complete") == Some("true") {
                    return ids;
                }
                after = fin
                    .child("set", "http://jabber.org/protocol/rsm")
                    .and_then(|s| s.child("last", "http://jabber.org/protocol/rsm"))
                    .map(Element::text)
                    .expect("last");
                break;
            }
            if let Some(m) = el
                .child("result", MAM)
                .and_then(|r| r.child("forwarded", "urn:xmpp:forward:0"))
                .and_then(|f| f.child("message", "jabber:client"))
                && let Some(id) = m.attr("id")
            {
                ids.insert(id.to_owned());
            }
        }
    }
    panic!("archive paging did not complete");
}

async fn server() -> (TestServer, RawClient) {
    let s = TestServer::start().await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    let alice = s.online("alice", "desk").await;
    (s, alice)
}

async fn send_round(alice: &mut RawClient, round: usize, sent: &mut BTreeSet<String>) {
    for i in 0..PER_ROUND {
        let id = format!("r{round:02}m{i}");
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='{id}'><body>{id}</body></message>"
            ))
            .await;
        sent.insert(id);
    }
    // Everything Alice sent has been routed once her ping comes back.
    let r = alice
        .iq(&format!(
            "<iq type='get' id='a{round}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

#[tokio::test]
async fn without_sm_every_accepted_message_is_seen_stored_or_archived() {
    let (s, mut alice) = server().await;
    let mut sent = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut bob = s.login("bob", "pw", "phone").await;
        bob.send("<presence/>").await;
        // What waited in offline storage comes first.
        seen.extend(drain(&mut bob, &format!("in{round}")).await);
        send_round(&mut alice, round, &mut sent).await;
        // Bob reads a few, then his connection is cut.
        seen.extend(read_messages(&mut bob, round % 4).await);
        drop(bob);
        // Some messages arrive while Bob is gone: offline storage.
        if round % 3 == 0 {
            send_round(&mut alice, 100 + round, &mut sent).await;
        }
    }
    let mut bob = s.login("bob", "pw", "phone").await;
    bob.send("<presence/>").await;
    seen.extend(drain(&mut bob, "final").await);
    let archived = archive_ids(&mut bob).await;
    // The server archived every message it accepted...
    let missing: Vec<_> = sent.difference(&archived).collect();
    assert!(missing.is_empty(), "not archived: {missing:?}");
    // ...and everything the client did not see live or from offline storage
    // is exactly what was written to a connection that then died.
    let recovered: BTreeSet<_> = seen.union(&archived).cloned().collect();
    assert!(sent.is_subset(&recovered));
    assert!(
        seen.len() < sent.len(),
        "the test must lose some live deliveries without SM"
    );
}

#[tokio::test]
async fn with_sm_the_client_gets_every_message() {
    let (s, mut alice) = server().await;
    let mut sent = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut bob = authed(&s, "bob").await;
    bob.bind(Some("phone")).await;
    bob.send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = loop {
        let el = bob.next().await;
        if el.is("enabled", SM) {
            break el;
        }
    };
    let previd = enabled.attr("id").unwrap().to_owned();
    bob.send("<presence/>").await;
    for round in 0..ROUNDS {
        send_round(&mut alice, round, &mut sent).await;
        seen.extend(read_messages(&mut bob, round % 4).await);
        // Cut without acknowledging anything, then resume: everything not
        // acknowledged is replayed (h=0 acknowledges nothing).
        drop(bob);
        if round % 3 == 0 {
            send_round(&mut alice, 100 + round, &mut sent).await;
        }
        bob = authed(&s, "bob").await;
        bob.send(&format!("<resume xmlns='{SM}' h='0' previd='{previd}'/>"))
            .await;
        let r = loop {
            let el = bob.next().await;
            if el.name() == "resumed" || el.name() == "failed" {
                break el;
            }
        };
        assert!(r.is("resumed", SM), "round {round}: {r}");
    }
    seen.extend(drain(&mut bob, "final").await);
    let missing: Vec<_> = sent.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "with SM the client must get everything; missing {missing:?}"
    );
}
