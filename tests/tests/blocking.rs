//! XEP-0191 black-box: block list retrieval, block and unblock with pushes,
//! enforcement both ways, unavailable presence to the blocked contact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::TestServer;

fn xml(e: &rookery_xml::Element) -> String {
    e.to_xml_string()
}

#[tokio::test]
async fn block_unblock_and_enforcement() {
    let s = TestServer::start().await;
    for u in ["juliet", "romeo", "tybalt"] {
        s.add_user(u, "pw").await;
    }
    let mut juliet = s.online("juliet", "balcony").await;
    let mut chamber = s.online("juliet", "chamber").await;
    let mut tybalt = s.online("tybalt", "street").await;
    let mut romeo = s.online("romeo", "orchard").await;

    // Tybalt is subscribed to Juliet's presence.
    tybalt
        .send("<presence to='juliet@localhost' type='subscribe'/>")
        .await;
    juliet.until(|e| e.attr("type") == Some("subscribe")).await;
    juliet
        .send("<presence to='tybalt@localhost' type='subscribed'/>")
        .await;
    tybalt
        .until(|e| e.name() == "presence" && e.attr("from") == Some("juliet@localhost/balcony"))
        .await;

    // §3.1 discovery and §3.2 an empty list.
    let info = juliet.iq("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert!(info.to_string().contains("urn:xmpp:blocking"));
    let l = juliet
        .iq("<iq type='get' id='b1'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
        .await;
    assert_eq!(
        xml(l.first_child().unwrap()),
        "<blocklist xmlns='urn:xmpp:blocking'/>"
    );
    chamber
        .iq("<iq type='get' id='b1c'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
        .await;

    // §3.3: an empty block is a bad request.
    let e = juliet
        .iq("<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'/></iq>")
        .await;
    assert!(e.to_string().contains("bad-request"), "{e}");

    // Block Tybalt: result, a push to both interested resources, and Tybalt sees her go offline.
    let r = juliet
        .iq("<iq type='set' id='b3'><block xmlns='urn:xmpp:blocking'><item jid='tybalt@localhost'/></block></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    for c in [&mut juliet, &mut chamber] {
        let (push, _) = c
            .until(|e| e.name() == "iq" && e.attr("type") == Some("set"))
            .await;
        assert_eq!(
            xml(push.first_child().unwrap()),
            "<block xmlns='urn:xmpp:blocking'><item jid='tybalt@localhost'/></block>"
        );
    }
    let (gone, _) = tybalt
        .until(|e| e.attr("type") == Some("unavailable"))
        .await;
    assert_eq!(gone.attr("from"), Some("juliet@localhost/balcony"));

    // Inbound from the blocked JID: message bounced with service-unavailable,
    // iq get too, presence dropped silently; Juliet receives nothing.
    tybalt
        .send("<message to='juliet@localhost' type='chat' id='t1'><body>draw!</body></message>")
        .await;
    let e = tybalt.next_message().await;
    assert_eq!(e.attr("id"), Some("t1"));
    assert!(e.to_string().contains("service-unavailable"), "{e}");
    let e = tybalt.iq("<iq to='juliet@localhost/balcony' type='get' id='t2'><query xmlns='jabber:iq:version'/></iq>").await;
    assert!(e.to_string().contains("service-unavailable"), "{e}");
    tybalt
        .send("<presence to='juliet@localhost/balcony'><status>hi</status></presence>")
        .await;

    // Outbound to the blocked JID: not-acceptable with <blocked/> (§3.3 example 9).
    juliet
        .send("<message to='tybalt@localhost' id='j1'><body>Can you hear me now?</body></message>")
        .await;
    let (e, _) = juliet.until(|e| e.name() == "message").await;
    let err = e.child("error", "jabber:client").unwrap();
    assert_eq!(
        xml(err),
        "<error xmlns='jabber:client' type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><blocked xmlns='urn:xmpp:blocking:errors'/></error>"
    );

    // Romeo is not blocked and gets through; Juliet's next stanza is his, not Tybalt's.
    romeo
        .send("<message to='juliet@localhost/balcony' id='r1'><body>hello</body></message>")
        .await;
    let (m, skipped) = juliet.until(|e| e.name() == "message").await;
    assert_eq!(m.attr("id"), Some("r1"));
    assert!(
        skipped
            .iter()
            .all(|e| e.attr("from") != Some("tybalt@localhost/street")),
        "{skipped:?}"
    );

    // A presence change no longer reaches Tybalt; the list shows him.
    let l = juliet
        .iq("<iq type='get' id='b4'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
        .await;
    assert_eq!(
        xml(l.first_child().unwrap()),
        "<blocklist xmlns='urn:xmpp:blocking'><item jid='tybalt@localhost'/></blocklist>"
    );

    // §3.5: unblock all, pushed as an empty unblock.
    let r = juliet
        .iq("<iq type='set' id='b5'><unblock xmlns='urn:xmpp:blocking'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let (push, _) = chamber
        .until(|e| e.name() == "iq" && e.first_child().is_some_and(|c| c.name() == "unblock"))
        .await;
    assert_eq!(
        xml(push.first_child().unwrap()),
        "<unblock xmlns='urn:xmpp:blocking'/>"
    );
    tybalt
        .send("<message to='juliet@localhost/balcony' id='t3'><body>peace</body></message>")
        .await;
    let (m, _) = juliet
        .until(|e| e.name() == "message" && e.attr("type") != Some("error"))
        .await;
    assert_eq!(m.attr("id"), Some("t3"));
}

#[tokio::test]
async fn domain_block_covers_everyone_there_and_persists() {
    let s = TestServer::start().await;
    s.add_user("juliet", "pw").await;
    let mut juliet = s.online("juliet", "balcony").await;
    juliet
        .iq("<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='example.net'/></block></iq>")
        .await;
    let e = juliet
        .iq("<iq to='anyone@example.net' type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(e.to_string().contains("urn:xmpp:blocking:errors"), "{e}");
    drop(juliet);
    // The block applies across sessions (§3.3).
    let mut again = s.login("juliet", "pw", "later").await;
    let l = again
        .iq("<iq type='get' id='l'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
        .await;
    assert!(l.to_string().contains("example.net"));
    let e = again
        .iq("<iq to='x@example.net' type='get' id='y'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(e.to_string().contains("<blocked"), "{e}");
}
