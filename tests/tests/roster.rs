//! RFC 6121 §2 black-box: roster get, set, push, remove, versioning, errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::TestServer;
use rookery_xml::{Element, ns};

fn items(q: &Element) -> Vec<String> {
    q.children()
        .filter(|c| c.name() == "item")
        .map(|c| c.to_xml_string())
        .collect()
}

#[tokio::test]
async fn get_set_push_remove() {
    let s = TestServer::start().await;
    s.add_user("juliet", "pw").await;
    let mut balcony = s.login("juliet", "pw", "balcony").await;
    let mut chamber = s.login("juliet", "pw", "chamber").await;
    let mut other = s.login("juliet", "pw", "uninterested").await;

    // §2.1.3/§2.1.4: an empty roster, with a version.
    let r = balcony
        .iq("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let q = r.child("query", ns::ROSTER).expect("query in the result");
    assert_eq!(q.attr("ver"), Some("0"));
    assert!(items(q).is_empty());
    chamber
        .iq("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>")
        .await;

    // §2.3: add an item; the result is empty and every interested resource gets the push.
    let r = balcony
        .iq("<iq type='set' id='a1'><query xmlns='jabber:iq:roster'><item jid='Nurse@Example.com' name='Nurse'><group>Servants</group></item></query></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    assert!(r.first_child().is_none(), "{r}");
    for c in [&mut balcony, &mut chamber] {
        let push = c.next_stanza().await;
        assert_eq!(push.attr("type"), Some("set"));
        assert!(
            push.attr("from").is_none(),
            "pushes come from the account itself: {push}"
        );
        let q = push.child("query", ns::ROSTER).unwrap();
        assert_eq!(q.attr("ver"), Some("1"));
        assert_eq!(
            items(q),
            vec![
                "<item xmlns='jabber:iq:roster' jid='nurse@example.com' subscription='none' name='Nurse'><group>Servants</group></item>"
            ]
        );
        let id = push.attr("id").unwrap().to_owned();
        c.send(&format!("<iq type='result' id='{id}'/>")).await;
    }

    // §2.4: update name and groups; subscription attributes from the client are ignored.
    balcony
        .iq("<iq type='set' id='a2'><query xmlns='jabber:iq:roster'><item jid='nurse@example.com' name='Nanny' subscription='both'><group>Family</group><group>Servants</group></item></query></iq>")
        .await;
    let push = chamber.next_stanza().await;
    assert_eq!(
        items(push.child("query", ns::ROSTER).unwrap()),
        vec![
            "<item xmlns='jabber:iq:roster' jid='nurse@example.com' subscription='none' name='Nanny'><group>Family</group><group>Servants</group></item>"
        ]
    );
    balcony.next_stanza().await;

    // The resource that never asked for the roster got no push (§2.1.6).
    let ping = other
        .iq("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(ping.attr("type"), Some("result"));

    let r = balcony
        .iq("<iq type='get' id='r3'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let q = r.child("query", ns::ROSTER).unwrap();
    assert_eq!(q.attr("ver"), Some("2"));
    assert_eq!(items(q).len(), 1);

    // §2.5: remove; the push says subscription='remove'.
    let r = balcony
        .iq("<iq type='set' id='d1'><query xmlns='jabber:iq:roster'><item jid='nurse@example.com' subscription='remove'/></query></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let push = chamber.next_stanza().await;
    assert_eq!(
        items(push.child("query", ns::ROSTER).unwrap()),
        vec!["<item xmlns='jabber:iq:roster' jid='nurse@example.com' subscription='remove'/>"]
    );
    // §2.5.3: removing an item that is not there.
    let e = balcony
        .iq("<iq type='set' id='d2'><query xmlns='jabber:iq:roster'><item jid='nurse@example.com' subscription='remove'/></query></iq>")
        .await;
    assert!(e.to_string().contains("item-not-found"), "{e}");
}

#[tokio::test]
async fn errors_of_rfc6121_2_3_3() {
    let s = TestServer::start().await;
    s.add_user("juliet", "pw").await;
    s.add_user("romeo", "pw").await;
    let mut c = s.login("juliet", "pw", "balcony").await;
    let cases = [
        (
            "<item jid='nurse@example.com'/><item jid='mother@example.com'/>",
            "bad-request",
        ),
        (
            "<item jid='nurse@example.com'><group>Servants</group><group>Servants</group></item>",
            "bad-request",
        ),
        (
            "<item jid='nurse@example.com'><group></group></item>",
            "not-acceptable",
        ),
        (
            &*format!(
                "<item jid='nurse@example.com' name='{}'/>",
                "n".repeat(2000)
            ),
            "not-acceptable",
        ),
        (
            &*format!(
                "<item jid='nurse@example.com'><group>{}</group></item>",
                "g".repeat(2000)
            ),
            "not-acceptable",
        ),
        ("<item jid='nurse@@example.com'/>", "jid-malformed"),
    ];
    for (i, (body, cond)) in cases.iter().enumerate() {
        let e = c
            .iq(&format!(
                "<iq type='set' id='e{i}'><query xmlns='jabber:iq:roster'>{body}</query></iq>"
            ))
            .await;
        assert_eq!(e.attr("type"), Some("error"), "{body}");
        assert!(
            e.to_string().contains(cond),
            "{body}: expected {cond} in {e}"
        );
    }
    // §2.1.5: another account's roster is forbidden.
    let e = c
        .iq("<iq type='set' id='f1' to='romeo@localhost'><query xmlns='jabber:iq:roster'><item jid='nurse@example.com'/></query></iq>")
        .await;
    assert!(e.to_string().contains("forbidden"), "{e}");
    let e = c
        .iq("<iq type='get' id='f2' to='romeo@localhost'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    assert!(e.to_string().contains("forbidden"), "{e}");
    // Addressed to one's own bare JID is fine (§2.6.2 example).
    let r = c
        .iq("<iq type='get' id='f3' to='juliet@localhost'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

#[tokio::test]
async fn roster_size_limit() {
    let s = TestServer::start_with(|c| c.session.roster_max_items = 5).await;
    s.add_user("juliet", "pw").await;
    let mut c = s.login("juliet", "pw", "balcony").await;
    for i in 0..5 {
        let r = c
            .iq(&format!("<iq type='set' id='s{i}'><query xmlns='jabber:iq:roster'><item jid='c{i}@example.com'/></query></iq>"))
            .await;
        assert_eq!(r.attr("type"), Some("result"));
    }
    let e = c
        .iq("<iq type='set' id='over'><query xmlns='jabber:iq:roster'><item jid='c5@example.com'/></query></iq>")
        .await;
    assert!(e.to_string().contains("policy-violation"), "{e}");
    // Updating an existing item is still allowed at the limit.
    let r = c
        .iq("<iq type='set' id='upd'><query xmlns='jabber:iq:roster'><item jid='c1@example.com' name='One'/></query></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

#[tokio::test]
async fn versioning_interim_pushes() {
    let s = TestServer::start().await;
    s.add_user("romeo", "pw").await;
    let mut c = s.login("romeo", "pw", "home").await;
    for jid in ["a@example.com", "b@example.com", "c@example.com"] {
        c.iq(&format!("<iq type='set' id='{jid}'><query xmlns='jabber:iq:roster'><item jid='{jid}'/></query></iq>"))
            .await;
    }
    let full = c
        .iq("<iq type='get' id='g0'><query xmlns='jabber:iq:roster' ver=''/></iq>")
        .await;
    let q = full.child("query", ns::ROSTER).unwrap();
    assert_eq!(q.attr("ver"), Some("3"));
    assert_eq!(items(q).len(), 3);
    c.iq("<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='b@example.com' subscription='remove'/></query></iq>")
        .await;
    c.next_stanza().await; // the push of the removal
    c.iq("<iq type='set' id='up'><query xmlns='jabber:iq:roster'><item jid='a@example.com' name='A'/></query></iq>")
        .await;
    c.next_stanza().await;

    // A second device with version 3 cached: empty result, then one interim push per change.
    let mut d = s.login("romeo", "pw", "phone").await;
    let r = d
        .iq("<iq type='get' id='g1'><query xmlns='jabber:iq:roster' ver='3'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    assert!(
        r.first_child().is_none(),
        "an empty IQ result, not an empty query: {r}"
    );
    let p1 = d.next_stanza().await;
    let p2 = d.next_stanza().await;
    let q1 = p1.child("query", ns::ROSTER).unwrap();
    let q2 = p2.child("query", ns::ROSTER).unwrap();
    assert_eq!(
        items(q1),
        vec!["<item xmlns='jabber:iq:roster' jid='b@example.com' subscription='remove'/>"]
    );
    assert_eq!(
        items(q2),
        vec!["<item xmlns='jabber:iq:roster' jid='a@example.com' subscription='none' name='A'/>"]
    );
    assert_eq!(q2.attr("ver"), Some("5"));
    // Up to date: empty result and nothing else.
    let r = d
        .iq("<iq type='get' id='g2'><query xmlns='jabber:iq:roster' ver='5'/></iq>")
        .await;
    assert!(r.first_child().is_none());
    // An unknown (future) version: the whole roster.
    let r = d
        .iq("<iq type='get' id='g3'><query xmlns='jabber:iq:roster' ver='99'/></iq>")
        .await;
    assert_eq!(items(r.child("query", ns::ROSTER).unwrap()).len(), 2);
    // The stream feature is advertised (§2.6.1).
    let mut e = login_until_bind(&s).await;
    let f = e.features.clone().unwrap();
    assert!(
        f.child("ver", "urn:xmpp:features:rosterver").is_some(),
        "{f}"
    );
    let _ = e.bind(Some("x")).await;
}

async fn login_until_bind(s: &TestServer) -> rookery_e2e::RawClient {
    let mut c = rookery_e2e::RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.starttls("localhost").await;
    c.auth_scram("SCRAM-SHA-256", "romeo", "pw").await.unwrap();
    c.open("localhost").await;
    c
}

/// Bad input from the issue: 10,000 roster items against the default limit
/// of 1,000. The first 1,000 are stored, every further one gets
/// `<policy-violation/>`, and the stream stays usable.
#[tokio::test]
async fn ten_thousand_items_past_the_default_limit() {
    let s = TestServer::start().await;
    s.add_user("hoarder", "pw").await;
    let mut c = s.login("hoarder", "pw", "r").await;
    let mut batch = String::new();
    for i in 0..10_000 {
        batch.push_str(&format!(
            "<iq type='set' id='i{i}'><query xmlns='jabber:iq:roster'><item jid='c{i}@example.com'/></query></iq>"
        ));
        if i % 500 == 499 {
            c.send(&batch).await;
            batch.clear();
        }
    }
    let (mut ok, mut refused) = (0, 0);
    while ok + refused < 10_000 {
        let r = c.next_stanza().await;
        match r.attr("type") {
            Some("result") => ok += 1,
            Some("error") => {
                assert!(r.to_string().contains("policy-violation"), "{r}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}: {r}"),
        }
    }
    assert_eq!((ok, refused), (1000, 9000));
    let r = c
        .iq("<iq type='get' id='all'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    assert_eq!(
        r.child("query", ns::ROSTER).unwrap().children().count(),
        1000
    );
}
