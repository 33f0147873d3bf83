//! XEP-0160 / RFC 6121 §8.5.2.2 black-box: offline storage with XEP-0203
//! delay stamps, delivery at the next available presence, quota, and the
//! message types that are not stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::TestServer;

async fn sync(c: &mut rookery_e2e::RawClient, id: &str) {
    let r = c
        .iq(&format!(
            "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

#[tokio::test]
async fn stored_and_delivered_in_order_with_delay() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    let mut a = s.login("alice", "pw", "a").await;
    for i in 0..3 {
        a.send(&format!("<message to='bob@localhost' type='chat' id='o{i}'><body>while you were out {i}</body></message>"))
            .await;
    }
    // Not stored: a headline, a chat state alone, a no-store hint.
    a.send("<message to='bob@localhost' type='headline' id='h'><body>news</body></message>")
        .await;
    a.send("<message to='bob@localhost' type='chat' id='cs'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    a.send("<message to='bob@localhost' id='ns'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>").await;
    // groupchat to an offline user: service-unavailable (RFC 6121 §8.5.2.2.1).
    a.send("<message to='bob@localhost' type='groupchat' id='gc'><body>room</body></message>")
        .await;
    let e = a.next_message().await;
    assert_eq!(e.attr("id"), Some("gc"));
    assert!(e.to_string().contains("service-unavailable"), "{e}");
    sync(&mut a, "s1").await;

    let mut b = s.login("bob", "pw", "home").await;
    // A negative priority does not take offline messages.
    b.send("<presence><priority>-1</priority></presence>").await;
    sync(&mut b, "s2").await;
    b.send("<presence><priority>0</priority></presence>").await;
    for i in 0..3 {
        let m = b.next_message().await;
        assert_eq!(m.attr("id"), Some(format!("o{i}").as_str()));
        assert_eq!(m.attr("from"), Some("alice@localhost/a"));
        assert_eq!(m.attr("to"), Some("bob@localhost"));
        assert_eq!(
            m.child("body", "jabber:client").unwrap().text(),
            format!("while you were out {i}")
        );
        let d = m.child("delay", "urn:xmpp:delay").expect("XEP-0203 delay");
        assert_eq!(d.attr("from"), Some("localhost"));
        let stamp = d.attr("stamp").unwrap();
        assert!(
            stamp.len() >= 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
        assert_eq!(d.text(), "Offline Storage");
    }
    // Nothing else was kept, and nothing is delivered twice.
    sync(&mut b, "s3").await;
    drop(b);
    let mut b = s.login("bob", "pw", "again").await;
    b.send("<presence/>").await;
    b.next_presence().await;
    a.send("<message to='bob@localhost/again' id='live'><body>now</body></message>")
        .await;
    let m = b.next_message().await;
    assert_eq!(m.attr("id"), Some("live"), "only the live message: {m}");
}

#[tokio::test]
async fn quota_bounces_the_rest_and_unknown_users_are_refused() {
    let s = TestServer::start_with(|c| c.session.offline_max_messages = 2).await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    let mut a = s.login("alice", "pw", "a").await;
    for i in 0..3 {
        a.send(&format!(
            "<message to='bob@localhost' id='q{i}'><body>{i}</body></message>"
        ))
        .await;
    }
    let e = a.next_message().await;
    assert_eq!(e.attr("id"), Some("q2"));
    assert!(e.to_string().contains("service-unavailable"), "{e}");
    a.send("<message to='nobody@localhost' id='u'><body>?</body></message>")
        .await;
    let e = a.next_message().await;
    assert_eq!(e.attr("id"), Some("u"));
    assert!(e.to_string().contains("service-unavailable"), "{e}");
}
