//! XEP-0280 black-box: enable/disable, received and sent copies with the
//! exact wrapping, eligibility (private, groupchat).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::{RawClient, TestServer};

async fn online(s: &TestServer, user: &str, res: &str) -> RawClient {
    let mut c = s.login(user, "pw", res).await;
    c.send("<presence/>").await;
    c.next_presence().await;
    c
}

#[tokio::test]
async fn received_and_sent_copies() {
    let s = TestServer::start().await;
    s.add_user("juliet", "pw").await;
    s.add_user("romeo", "pw").await;
    let mut juliet = online(&s, "juliet", "balcony").await;
    let mut garden = online(&s, "romeo", "garden").await;
    let mut home = online(&s, "romeo", "home").await;
    let mut legacy = online(&s, "romeo", "legacy").await; // never enables carbons
    for c in [&mut garden, &mut home] {
        let r = c
            .iq("<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            .await;
        assert_eq!(r.attr("type"), Some("result"));
    }
    let info = garden.iq("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert!(info.to_string().contains("urn:xmpp:carbons:2"));

    // §7 example 9/10: Juliet writes to Romeo's garden resource; home gets a copy.
    juliet.send("<message to='romeo@localhost/garden' type='chat' id='j1'><body>What man art thou?</body><thread>t1</thread></message>").await;
    let m = garden.next_message().await;
    assert_eq!(m.attr("id"), Some("j1"));
    // XEP-0313 §3.5: the copy carries the stanza-id of Romeo's archive.
    let sid = m
        .child("stanza-id", "urn:xmpp:sid:0")
        .and_then(|s| s.attr("id"))
        .expect("stanza-id")
        .to_owned();
    let copy = home.next_message().await;
    assert_eq!(
        copy.to_xml_string(),
        format!(
            "<message xmlns='jabber:client' from='romeo@localhost' to='romeo@localhost/home' type='chat'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' to='romeo@localhost/garden' type='chat' id='j1' from='juliet@localhost/balcony'><body>What man art thou?</body><thread>t1</thread><stanza-id xmlns='urn:xmpp:sid:0' by='romeo@localhost' id='{sid}'/></message></forwarded></received></message>"
        )
    );

    // §8 example 12/13: Romeo answers from home; garden gets a 'sent' copy, not home.
    home.send("<message to='juliet@localhost/balcony' type='chat' id='r1'><body>Neither, fair saint</body></message>").await;
    assert_eq!(juliet.next_message().await.attr("id"), Some("r1"));
    let sent = garden.next_message().await;
    assert_eq!(
        sent.to_xml_string(),
        "<message xmlns='jabber:client' from='romeo@localhost' to='romeo@localhost/garden' type='chat'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' to='juliet@localhost/balcony' type='chat' id='r1' from='romeo@localhost/home'><body>Neither, fair saint</body></message></forwarded></sent></message>"
    );

    // <private/> (§9) and groupchat are not copied; after disable, no copies.
    juliet.send("<message to='romeo@localhost/garden' type='chat' id='p1'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>").await;
    assert_eq!(garden.next_message().await.attr("id"), Some("p1"));
    let r = home
        .iq("<iq type='set' id='c2'><disable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    juliet
        .send(
            "<message to='romeo@localhost/garden' type='chat' id='j2'><body>again</body></message>",
        )
        .await;
    assert_eq!(garden.next_message().await.attr("id"), Some("j2"));
    // Home (disabled) and legacy (never enabled) got nothing: the next message
    // each of them sees is one sent to it directly.
    juliet
        .send("<message to='romeo@localhost/home' type='chat' id='h'><body>home</body></message>")
        .await;
    assert_eq!(home.next_message().await.attr("id"), Some("h"));
    juliet
        .send(
            "<message to='romeo@localhost/legacy' type='chat' id='l'><body>legacy</body></message>",
        )
        .await;
    assert_eq!(legacy.next_message().await.attr("id"), Some("l"));
    // Garden, still enabled, got received copies of both.
    let c1 = garden.next_message().await;
    assert!(c1.child("received", "urn:xmpp:carbons:2").is_some(), "{c1}");
    let c2 = garden.next_message().await;
    assert!(c2.child("received", "urn:xmpp:carbons:2").is_some(), "{c2}");
}
